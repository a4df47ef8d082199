"""The globals checker's per-request probe: whether anything it watches may have changed
since its last check, read without a lock (gateway/isolation/globals.py owns the places
and the snapshot; this module only compares).

A ``Snapshot`` is what the last check saw, flattened for the comparison:

- ``sized``/``sizes``: ``sys.modules`` and every watched namespace, with their lengths;
- ``owners``/``names``/``bound``: for each state name of a namespace, the dict it lives
  in, the name and the object it was bound to (compared by identity);
- ``containers``/``copies``: each data container, and a copy of it as of the last check
  (identity first, then ``==``: an object replaced by an equal one is not a change);
- ``big``/``samples`` and ``sample``: the containers too big to compare item by item, and
  their last sample (their length and the entries at their ends).

A snapshot is never mutated: the checker makes a new one whenever it re-indexes and
swaps it into its ``Probe`` with one attribute store, so a thread probing at that moment
reads either the old one or the new one, never a mix. ``unchanged()`` is False when
anything differs, and when the reading raises (a dict resized by another thread, an
``__eq__`` of the app's that raises): the checker then compares under its lock, place by
place. The empty snapshot (``Snapshot.never()``) is never unchanged: until the warm-up
is over, every request reaches the checker.

This module is compiled with mypyc with the request path (``gateway.speedups.COMPILED``):
the sync worker calls ``Probe.unchanged()`` directly after each request and calls the
isolation layer only when it returns False. It imports nothing from the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

#: what a deleted name reads as (Final: compiled, a module global is a dict lookup per use)
_MISSING: Final[Any] = object()


def _no_sample(obj: Any) -> list[Any]:
    return []


class Snapshot:
    """What the last check saw (see the module docstring); read only once made."""

    def __init__(
        self,
        sized: list[Any],
        sizes: list[int],
        owners: list[dict[Any, Any]],
        names: list[Any],
        bound: list[Any],
        containers: list[Any],
        copies: list[Any],
        big: list[Any],
        samples: list[list[Any]],
        sample: Callable[[Any], list[Any]],
    ) -> None:
        self.sized = sized
        self.sizes = sizes
        self.owners = owners
        self.names = names
        self.bound = bound
        self.containers = containers
        self.copies = copies
        self.big = big
        self.samples = samples
        self.sample = sample
        #: False only for the empty snapshot of a checker that has not looked yet
        self.taken = True

    @staticmethod
    def never() -> Snapshot:
        """The snapshot of a checker that has not taken one: never unchanged."""
        empty = Snapshot([], [], [], [], [], [], [], [], [], _no_sample)
        empty.taken = False
        return empty

    def unchanged(self) -> bool:
        if not self.taken:
            return False
        # The lists of each pair were made together, of one length; mypyc compiles a zip()
        # without keywords into one loop (strict=True would make it a generic call).
        try:
            for obj, size in zip(self.sized, self.sizes):  # noqa: B905
                if len(obj) != size:
                    return False
            for owner, name, value in zip(self.owners, self.names, self.bound):  # noqa: B905
                if owner.get(name, _MISSING) is not value:
                    return False
            for container, copy in zip(self.containers, self.copies):  # noqa: B905
                if container != copy:
                    return False
            if self.big:
                sample = self.sample
                for obj, last in zip(self.big, self.samples):  # noqa: B905
                    if sample(obj) != last:
                        return False
        except Exception:  # a dict resized while read, an __eq__ of the app's that raises
            return False
        return True


class Probe:
    """The checker's current snapshot; ``unchanged()`` compares the watched state with it."""

    def __init__(self) -> None:
        self.now = Snapshot.never()

    def unchanged(self) -> bool:
        return self.now.unchanged()
