"""A module that imports a dependency that is not installed: loading it must report the
missing dependency, not "module broken_dependency_app not found"."""

import fcgw_test_dependency_that_is_not_installed  # noqa: F401

app = None
