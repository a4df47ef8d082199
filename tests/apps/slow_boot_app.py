"""``proc_apps.app`` behind an import that takes ``SLOW_BOOT_S`` seconds (default 2): the
readiness tests see the master's ping answer 503 until a worker has loaded the app."""

from __future__ import annotations

import os
import time

from proc_apps import app

time.sleep(float(os.environ.get("SLOW_BOOT_S", "2")))

__all__ = ["app"]
