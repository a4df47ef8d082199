"""The native scanner module the fuzz tests drive (test_pairs_fuzz.py, test_split_fuzz.py).

``FUZZ_PAIRS_NATIVE=/path/to/_pairs*.so`` fuzzes that build instead of the one the gateway
loads (scripts/sanitize: an ASan+UBSan build); ``FUZZ_PAIRS_EXAMPLES`` sets the examples
per property (a short run in the regular suite, a longer one in scripts/sanitize), and
``FUZZ_SPLIT_EXAMPLES`` those of test_split_fuzz.py (the same unless set). Without
a native module (speedups switched off, or not built) ``native`` is None and the fuzz
tests skip, unless ``FUZZ_PAIRS_NATIVE`` is set.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

from gateway.protocol import records

NATIVE_PATH = os.environ.get("FUZZ_PAIRS_NATIVE", "")
EXAMPLES = int(os.environ.get("FUZZ_PAIRS_EXAMPLES", "150"))
#: Examples per property of test_split_fuzz.py (its codec properties cost more per example).
SPLIT_EXAMPLES = int(os.environ.get("FUZZ_SPLIT_EXAMPLES", str(EXAMPLES)))


def load_from(path: str) -> ModuleType:
    """A new module object from the shared object at ``path`` (the init function is
    PyInit__pairs, hence the name); multi-phase init lets one process hold several."""
    spec = importlib.util.spec_from_file_location("_pairs", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native: ModuleType | None = load_from(NATIVE_PATH) if NATIVE_PATH else records._native

needs_native = pytest.mark.skipif(
    native is None, reason="no native scanner (speedups switched off or not built)"
)

_health = [HealthCheck.too_slow, HealthCheck.data_too_large]
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=_health)
fuzz_split = settings(max_examples=SPLIT_EXAMPLES, deadline=None, suppress_health_check=_health)
