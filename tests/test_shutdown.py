"""The stop signals' table (gateway/shutdown.py): what SIGTERM, SIGQUIT and SIGINT do with
and without ``--shutdown-delay``, before and during the delay, and once draining."""

from __future__ import annotations

import signal

import pytest

from gateway.config import Config
from gateway.shutdown import DELAY, DRAIN, QUICK, stop_action, stop_bound_s

TERM, QUIT, INT = signal.SIGTERM, signal.SIGQUIT, signal.SIGINT


@pytest.mark.parametrize(
    ("sig", "stopping", "delaying", "delay_s", "expected"),
    [
        (TERM, False, False, 0.0, DRAIN),  # no delay: today's graceful stop
        (QUIT, False, False, 0.0, DRAIN),
        (INT, False, False, 0.0, QUICK),
        (TERM, False, False, 5.0, DELAY),  # the delay first
        (TERM, False, True, 5.0, DRAIN),  # a second TERM ends it
        (QUIT, False, False, 5.0, DRAIN),  # QUIT skips it
        (QUIT, False, True, 5.0, DRAIN),
        (INT, False, True, 5.0, QUICK),
        (TERM, True, False, 5.0, None),  # already draining: nothing new
        (QUIT, True, False, 0.0, None),
        (INT, True, False, 0.0, QUICK),  # but INT still hurries the drain
    ],
)
def test_stop_action(sig, stopping, delaying, delay_s, expected) -> None:
    assert stop_action(sig, stopping=stopping, delaying=delaying, delay_s=delay_s) == expected


def test_stop_bound_is_delay_plus_graceful_timeout() -> None:
    assert stop_bound_s(Config(app="a:b")) == 30.0
    assert stop_bound_s(Config(app="a:b", shutdown_delay_s=5, graceful_timeout_s=20)) == 25.0
