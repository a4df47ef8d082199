"""FastCGI 1.0 wire constants: record types, roles, protocol statuses, flags, sizes."""

from enum import IntEnum

FCGI_VERSION_1 = 1
HEADER_LENGTH = 8
#: Largest contentLength a record can carry (16-bit field).
MAX_CONTENT_LENGTH = 65535
#: Flag bit of FCGI_BEGIN_REQUEST: keep the connection open after END_REQUEST.
FCGI_KEEP_CONN = 1
#: Request id reserved for management records (GET_VALUES, UNKNOWN_TYPE).
NULL_REQUEST_ID = 0


class RecordType(IntEnum):
    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


class Role(IntEnum):
    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(IntEnum):
    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


#: Variable names a web server may ask for with FCGI_GET_VALUES.
FCGI_MAX_CONNS = b"FCGI_MAX_CONNS"
FCGI_MAX_REQS = b"FCGI_MAX_REQS"
FCGI_MPXS_CONNS = b"FCGI_MPXS_CONNS"
