"""A module whose import raises a plain exception (e.g. a missing setting)."""

raise RuntimeError("settings file /nonexistent/app.toml is missing")
