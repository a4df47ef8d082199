"""The C name-value pairs decoder (gateway/protocol/_pairs.c) agrees with the pure-Python
reference on every input: the same pairs (bytes and latin-1 str), or the same
RemoteProtocolError. It must be built where the tests run (setup-env installs the
project, which compiles it): a missing build would silently make every request slower.

The speedups switch (gateway/speedups.py): ``FCGI_GATEWAY_NO_SPEEDUPS=1`` makes the codec
pure Python without importing the C module, and says so; native code exists only as
registered scanners inside gateway/protocol. With the switch on for the run (CI's
pure-Python pass) the tests that need the C decoder skip.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.protocol
from gateway import speedups
from gateway.protocol import RemoteProtocolError, records
from gateway.protocol.records import decode_pairs, encode_pairs, py_decode_pairs
from tests.capture import captured_requests

# (Not records.__file__: a module compiled with mypyc and imported by another one gets a
# wrong __file__ when the group's library is inside the package, see setup.py.)
C_SOURCE = Path(gateway.protocol.__file__).with_name("_pairs.c")


def compiled_part() -> str:
    """What describe() adds for a build with FCGI_GATEWAY_MYPYC=1 (setup.py)."""
    built, reason = speedups.compiled_state()
    return f"; {built} modules compiled with mypyc" if built and reason is None else ""


REPO_ROOT = Path(__file__).resolve().parents[2]
needs_c = pytest.mark.skipif(not speedups.ENABLED, reason=f"speedups {speedups.DISABLED_REASON}")


def outcome(fn, data: bytes, max_count: int | None, text: bool) -> tuple[str, object]:
    try:
        return "ok", fn(data, max_count, text)
    except RemoteProtocolError as exc:
        return "error", (str(exc), exc.status_hint)


@needs_c
def test_the_c_decoder_is_built():
    assert records._c_decode is not None, (
        f"gateway/protocol/_pairs.c: {speedups.describe()}; run `pip install -e .` (or "
        "`python setup.py build_ext --inplace`) with a C compiler"
    )
    assert records.split_records is records._native.split


def test_the_c_source_does_no_io():
    includes = re.findall(r"#include\s*[<\"]([^>\"]+)", C_SOURCE.read_text())
    assert includes == ["_pairs_items.h"]
    shared = C_SOURCE.with_name("_pairs_items.h").read_text()
    assert re.findall(r"#include\s*[<\"]([^>\"]+)", shared) == ["Python.h"]


@pytest.mark.parametrize("text", [False, True])
def test_captured_nginx_params(text):
    for params in captured_requests().values():
        body = encode_pairs(params)
        expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params] if text else params
        assert decode_pairs(body, None, text) == expected
        assert py_decode_pairs(body, None, text) == expected


@pytest.mark.parametrize("text", [False, True])
def test_long_lengths_and_non_ascii(text):
    params = [(b"N" * 200, b"\xff\x00\xe9" * 70_000), (b"", b""), (b"X", b"")]
    body = encode_pairs(params)
    assert outcome(decode_pairs, body, None, text) == outcome(py_decode_pairs, body, None, text)
    assert len(decode_pairs(body, None, text)) == 3


@pytest.mark.parametrize(
    "body",
    [
        b"\x05",  # value length missing
        b"\x80\x00",  # 4-byte name length cut short
        b"\x01\x80\x00\x00",  # 4-byte value length cut short
        b"\x03\x01ab",  # runs past the end
        b"\x01\x01ab\x05",  # second pair truncated
        b"\xff\xff\xff\xff\x00",  # a 2 GiB name in a 5-byte body
        b"\x01\xff\xff\xff\xffa",  # a 2 GiB value
    ],
)
def test_malformed_bodies_give_the_same_error(body):
    for text in (False, True):
        got = outcome(decode_pairs, body, None, text)
        assert got[0] == "error"
        assert got == outcome(py_decode_pairs, body, None, text)


def test_pair_count_limit():
    body = encode_pairs([(b"a", b"1")] * 11)
    assert outcome(decode_pairs, body, 10, False) == ("error", ("more than 10 name-value pairs", 431))
    assert len(decode_pairs(body, 11, False)) == 11


def test_bytearray_input():
    body = encode_pairs([(b"A", b"b")])
    assert decode_pairs(bytearray(body)) == [(b"A", b"b")]


@needs_c
@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64), st.booleans(), st.one_of(st.none(), st.integers(0, 8)))
def test_random_bytes_agree(data, text, max_count):
    assert outcome(decode_pairs, data, max_count, text) == outcome(py_decode_pairs, data, max_count, text)


@needs_c
@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=12),
    st.booleans(),
    st.data(),
)
def test_encoded_pairs_and_their_truncations_agree(pairs, text, data):
    body = encode_pairs(pairs)
    cut = data.draw(st.integers(0, len(body)))
    for sample in (body, body[:cut]):
        assert outcome(decode_pairs, sample, None, text) == outcome(py_decode_pairs, sample, None, text)


@needs_c
@pytest.mark.parametrize("text", [False, True])
def test_items_reused_by_position_are_still_the_right_ones(text):
    """The C decoder hands back last time's object for an equal item at the same position
    (nginx repeats names and most values): a changed item must never come back stale."""
    first = [(b"REMOTE_PORT", b"50001"), (b"HTTP_HOST", b"a.example"), (b"X", b"\xe9" * 300)]
    second = [(b"REMOTE_PORT", b"50002"), (b"HTTP_HOST", b"a.example"), (b"X", b"\xe8" * 300)]
    third = [(b"HTTP_HOST", b"a.example"), (b"REMOTE_PORT", b"50002")]
    for params in (first, second, third, first):
        expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params] if text else params
        assert decode_pairs(encode_pairs(params), None, text) == expected
    a = decode_pairs(encode_pairs(first), None, text)
    b = decode_pairs(encode_pairs(first), None, text)
    assert a[1][0] is b[1][0]  # the same name object: its hash is computed once
    assert a[1] is b[1]  # and the same pair: neither item changed
    c = decode_pairs(encode_pairs(second), None, text)
    assert c[1] is b[1] and c[0] is not b[0]  # REMOTE_PORT changed, HTTP_HOST did not
    assert c[0] == (("REMOTE_PORT", "50002") if text else (b"REMOTE_PORT", b"50002"))
    if text:  # names are interned: the literals that look them up match them by identity
        assert c[0][0] is sys.intern("REMOTE_PORT")


@pytest.mark.parametrize("text", [False, True])
def test_the_codec_works_without_the_c_decoder(monkeypatch, text):
    """Where the C module could not be built, decode_pairs falls back to Python."""
    from gateway.protocol import FastCGIConnection, RequestReceived
    from gateway.protocol.records import encode_begin_request, encode_record

    monkeypatch.setattr(records, "_c_decode", None)
    params = [(b"REQUEST_METHOD", b"GET"), (b"HTTP_HOST", b"\xe9.example")]
    codec = FastCGIConnection(text_params=text)
    events = codec.feed(
        encode_begin_request(1) + encode_record(4, 1, encode_pairs(params)) + encode_record(4, 1)
    )
    (event,) = [ev for ev in events if type(ev) is RequestReceived]
    expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in params] if text else params
    assert event.params == expected
    with pytest.raises(RemoteProtocolError):
        FastCGIConnection().feed(encode_begin_request(1) + encode_record(4, 1, b"\x05") + encode_record(4, 1))


# -- the speedups switch -----------------------------------------------------------------

PROBE = """
import json, sys
from gateway import speedups
from gateway.protocol import FastCGIConnection, RequestReceived
from gateway.protocol.records import _c_decode, encode_begin_request, encode_pairs, encode_record

codec = FastCGIConnection(text_params=True)
data = encode_begin_request(1) + encode_record(4, 1, encode_pairs([(b"A", b"\\xe9")])) + encode_record(4, 1)
(event,) = [ev for ev in codec.feed(data) if type(ev) is RequestReceived]
print(json.dumps({
    "c_decode": _c_decode is not None,
    "imported": "gateway.protocol._pairs" in sys.modules,
    "describe": speedups.describe(),
    "params": event.params,
}))
"""


def probe(value: str | None) -> dict:
    """A fresh interpreter's view of the switch (it is read once, at import)."""
    env = {k: v for k, v in os.environ.items() if k != speedups.ENV_VAR}
    if value is not None:
        env[speedups.ENV_VAR] = value
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("value", ["1", "yes", "true", "on", "anything"])
def test_the_switch_makes_the_codec_pure_python_without_importing_the_c_module(value):
    got = probe(value)
    assert got == {
        "c_decode": False,
        "imported": False,
        "describe": "off (disabled by FCGI_GATEWAY_NO_SPEEDUPS)",
        "params": [["A", "\xe9"]],
    }


@pytest.mark.skipif(speedups.ENABLED, reason="speedups are on in this run")
def test_switched_off_for_this_run_the_c_module_is_never_imported():
    assert "gateway.protocol._pairs" not in sys.modules
    assert records._c_decode is None
    assert speedups.describe() == "off (disabled by FCGI_GATEWAY_NO_SPEEDUPS)"


@needs_c
@pytest.mark.parametrize("value", [None, "", "0", "no", "false", "Off"])
def test_speedups_stay_on_unless_switched_off(value):
    got = probe(value)
    assert got == {
        "c_decode": True,
        "imported": True,
        "describe": f"on (gateway.protocol._pairs{compiled_part()})",
        "params": [["A", "\xe9"]],
    }


def test_why_a_speedup_is_missing_is_reported(monkeypatch):
    """Not built (the module does not exist) and failing to load (it exists, its import
    raises) are told apart; a name that is not registered is refused."""
    monkeypatch.setattr(speedups, "ENABLED", True)
    monkeypatch.setattr(speedups, "_outcomes", {})
    monkeypatch.setattr(speedups, "compiled_state", lambda: (0, None))  # (a mypyc build)
    missing = "gateway.protocol._never_built"
    monkeypatch.setattr(speedups, "NATIVE", {missing: "gateway.protocol.records.nothing"})
    assert speedups.load_native(missing) is None
    assert speedups.report() == [speedups.Speedup(missing, speedups.NATIVE[missing], False, "not built")]
    assert speedups.describe() == f"off ({missing} not built)"

    monkeypatch.setattr(speedups, "_outcomes", {})
    broken = speedups.NATIVE | {"gateway.protocol._pairs": "gateway.protocol.records.py_decode_pairs"}
    monkeypatch.setattr(speedups, "NATIVE", broken)

    def fail(name: str) -> None:
        raise ImportError(f"{name}: undefined symbol: PyFoo")

    monkeypatch.setattr(speedups.importlib, "import_module", fail)
    assert speedups.describe() == (
        f"off ({missing} failed to load: {missing}: undefined symbol: PyFoo; "
        "gateway.protocol._pairs failed to load: gateway.protocol._pairs: undefined symbol: PyFoo)"
    )
    with pytest.raises(KeyError):
        speedups.load_native("gateway.wsgi._fastpath")


@needs_c
def test_partly_on_names_what_is_loaded_and_what_is_not(monkeypatch):
    monkeypatch.setattr(speedups, "NATIVE", {**speedups.NATIVE, "gateway.protocol._never_built": "x"})
    monkeypatch.setattr(speedups, "_outcomes", dict(speedups._outcomes))
    expected = (
        f"partly on (gateway.protocol._pairs{compiled_part()}; gateway.protocol._never_built not built)"
    )
    assert speedups.describe() == expected


def test_the_switch_values():
    for value in (None, "", "0", " 0 ", "false", "False", "no", "off", "n", "f"):
        assert not speedups.switched_off(value), value
    for value in ("1", "true", "yes", "on", "2", "y", "disable"):
        assert speedups.switched_off(value), value


def test_native_code_is_only_the_registered_scanners_in_the_protocol_package():
    """The design rule, checked on the tree: every C source of the package is in
    gateway/protocol, setup.py builds exactly the modules the switch knows, and each of
    them is loaded through the switch (load_native) by the module it speeds up."""
    package = REPO_ROOT / "gateway"
    native_sources = [p for ext in ("c", "h", "cc", "cpp", "pyx", "rs") for p in package.rglob(f"*.{ext}")]
    assert {p.parent for p in native_sources} <= {package / "protocol"}, native_sources
    built = set()
    for node in ast.walk(ast.parse((REPO_ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Extension":
            built.add(node.args[0].value)
    assert built == set(speedups.NATIVE)
    sources = "\n".join(p.read_text() for p in (package / "protocol").glob("*.py"))
    for name in speedups.NATIVE:
        assert f'load_native("{name}")' in sources, name
