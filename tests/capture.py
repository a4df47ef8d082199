"""Loads the params nginx 1.22.1 really sent (captured in tests/fixtures/), one request a
line, as the ordered multi-lists of bytes the codec produces."""

from __future__ import annotations

import json
from pathlib import Path

CAPTURE = Path(__file__).parent / "fixtures" / "nginx-1.22.1-fastcgi-capture.log"


def captured_requests() -> dict[str, list[tuple[bytes, bytes]]]:
    """SCRIPT_NAME of each captured request -> its params (first capture of each path)."""
    out: dict[str, list[tuple[bytes, bytes]]] = {}
    for line in CAPTURE.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] == "PARAMS":
            params = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in json.loads(parts[3])]
            script = dict(params)[b"SCRIPT_NAME"].decode()
            out.setdefault(script, params)
    return out
