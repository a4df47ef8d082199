"""The per-request state table: what each record type does in each request state.

Strategy
--------
A FastCGI connection carries requests keyed by request id. Each id moves through

    (absent) --BEGIN--> PARAMS --empty PARAMS--> STDIN --empty STDIN--> DONE
                                                    \\--(FILTER)--> DATA --empty DATA--> DONE

and, orthogonally, the response side: the worker may send STDOUT/STDERR/END_REQUEST once
the request is known (STDIN, DATA, DONE) or after an abort (ABORTED). END_REQUEST removes a
request whose input is complete; a request ended early (the app answered before reading the
whole body, a body over the limit, an unknown role) becomes ENDED, and its remaining input
records are ignored until a BEGIN_REQUEST reuses the id. That is the race-free id reuse
nginx relies on with keep-conn (docs/protocol-notes.md, peer bug 2) and the "ignore the rest of the
records" rule after UNKNOWN_ROLE (peer bug 9).

Everything not in RECEIVE is a RemoteProtocolError; sending in a state not in CAN_SEND is a
LocalProtocolError.
"""

from __future__ import annotations

from enum import IntEnum

from .constants import RecordType


class RequestState(IntEnum):
    PARAMS = 1
    STDIN = 2
    DATA = 3
    DONE = 4
    ABORTED = 5
    ENDED = 6


class Action(IntEnum):
    BEGIN = 1
    PARAMS = 2
    STDIN = 3
    DATA = 4
    ABORT = 5
    IGNORE = 6


_S = RequestState
_R = RecordType
_A = Action

#: (request state or None when the id is not in use, record type) -> action
RECEIVE: dict[tuple[RequestState | None, int], Action] = {
    (None, _R.BEGIN_REQUEST): _A.BEGIN,
    (None, _R.ABORT_REQUEST): _A.IGNORE,  # abort racing with our END_REQUEST
    (_S.PARAMS, _R.PARAMS): _A.PARAMS,
    (_S.PARAMS, _R.ABORT_REQUEST): _A.ABORT,
    (_S.STDIN, _R.STDIN): _A.STDIN,
    (_S.STDIN, _R.ABORT_REQUEST): _A.ABORT,
    (_S.DATA, _R.DATA): _A.DATA,
    (_S.DATA, _R.ABORT_REQUEST): _A.ABORT,
    (_S.DONE, _R.ABORT_REQUEST): _A.ABORT,
    (_S.ABORTED, _R.PARAMS): _A.IGNORE,
    (_S.ABORTED, _R.STDIN): _A.IGNORE,
    (_S.ABORTED, _R.DATA): _A.IGNORE,
    (_S.ABORTED, _R.ABORT_REQUEST): _A.IGNORE,
    (_S.ENDED, _R.BEGIN_REQUEST): _A.BEGIN,
    (_S.ENDED, _R.PARAMS): _A.IGNORE,
    (_S.ENDED, _R.STDIN): _A.IGNORE,
    (_S.ENDED, _R.DATA): _A.IGNORE,
    (_S.ENDED, _R.ABORT_REQUEST): _A.IGNORE,
}

#: RECEIVE keyed by one int, ``record type << 3 | state`` (0 for an id not in use): the
#: codec's per-record lookup (one dict get, no tuple key). Derived from RECEIVE, never edited.
RECEIVE_FLAT: dict[int, Action] = {
    int(rtype) << 3 | (int(state) if state is not None else 0): action
    for (state, rtype), action in RECEIVE.items()
}

#: States in which the application may send STDOUT, STDERR and END_REQUEST.
CAN_SEND = frozenset({_S.STDIN, _S.DATA, _S.DONE, _S.ABORTED})

#: State after END_REQUEST is sent (None: the id is free again).
AFTER_END: dict[RequestState, RequestState | None] = {
    _S.STDIN: _S.ENDED,
    _S.DATA: _S.ENDED,
    _S.ABORTED: _S.ENDED,
    _S.DONE: None,
}

#: Record types that only an application sends; receiving one is a protocol error.
APPLICATION_ONLY_TYPES = frozenset(
    {_R.END_REQUEST, _R.STDOUT, _R.STDERR, _R.GET_VALUES_RESULT, _R.UNKNOWN_TYPE}
)
