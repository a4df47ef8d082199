"""A module whose import raises ImportError (a name missing from an installed module)."""

from json import this_name_does_not_exist  # noqa: F401

app = None
