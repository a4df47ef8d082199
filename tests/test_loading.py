"""gateway.loading: "module:attribute" import errors that say what really went wrong, the
--factory and --app-dir handling, and interface detection (ASGI 3, ASGI 2, WSGI) for plain
callables, for the objects real frameworks hand out (Flask, Starlette, Django), and for
wrapped apps: ``wsgiref.validate.validator(app)`` and decorators, with and without
``functools.wraps`` (a plain callable whose signature tells nothing is WSGI, and the log
says so), detected and then served end to end.

The test apps live in tests/apps (on sys.path through tests/conftest.py). Django's
handlers need configured settings, so they are inspected in a subprocess.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import textwrap
from wsgiref.validate import validator

import pytest

from gateway.client import FastCGIClient
from gateway.errors import AppLoadError
from gateway.loading import as_asgi3, detect_interface, import_from_string, load_app, resolve_interface

# -- importing ---------------------------------------------------------------------------------


def test_import_from_string_finds_nested_attributes():
    import loading_apps

    assert import_from_string("loading_apps:asgi_app") is loading_apps.asgi_app
    assert import_from_string("loading_apps:ASGI2App.__init__") is loading_apps.ASGI2App.__init__
    assert import_from_string("os.path:join") is __import__("os").path.join


@pytest.mark.parametrize("spec", ["loading_apps", "loading_apps:", ":app", ""])
def test_spec_must_be_module_colon_attribute(spec):
    with pytest.raises(AppLoadError, match="must be given as 'module:attribute'"):
        import_from_string(spec)


def test_missing_module_is_reported_as_not_found():
    with pytest.raises(AppLoadError) as info:
        import_from_string("fcgw_no_such_module:app")
    msg = str(info.value)
    assert "could not import module 'fcgw_no_such_module'" in msg
    assert "--chdir or --app-dir" in msg


def test_missing_submodule_of_an_existing_package_is_reported_as_not_found():
    with pytest.raises(AppLoadError, match=r"no module named 'gateway\.no_such_submodule'"):
        import_from_string("gateway.no_such_submodule:app")
    with pytest.raises(AppLoadError, match="no module named 'fcgw_missing_pkg'"):
        import_from_string("fcgw_missing_pkg.sub:app")


def test_missing_dependency_inside_the_module_names_the_dependency():
    with pytest.raises(AppLoadError) as info:
        import_from_string("broken_dependency_app:app")
    msg = str(info.value)
    assert "error while importing 'broken_dependency_app'" in msg
    assert "fcgw_test_dependency_that_is_not_installed" in msg
    assert "could not import module" not in msg
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # traceback kept


def test_import_error_inside_the_module_names_the_real_error():
    with pytest.raises(AppLoadError) as info:
        import_from_string("broken_importerror_app:app")
    msg = str(info.value)
    assert "ImportError" in msg and "this_name_does_not_exist" in msg
    assert "could not import module" not in msg
    assert isinstance(info.value.__cause__, ImportError)


def test_exception_at_import_time_is_an_app_load_error():
    with pytest.raises(AppLoadError, match=r"RuntimeError: settings file /nonexistent/app.toml is missing"):
        import_from_string("broken_runtime_app:app")


def test_missing_attribute_names_attribute_and_module():
    with pytest.raises(AppLoadError, match="attribute 'nope' not found in module 'loading_apps'"):
        import_from_string("loading_apps:nope")
    with pytest.raises(AppLoadError, match=r"attribute 'ASGI2App\.nope' not found"):
        import_from_string("loading_apps:ASGI2App.nope")


# -- load_app ----------------------------------------------------------------------------------


def test_factory_is_called():
    import loading_apps

    assert load_app("loading_apps:create_app", factory=True) is loading_apps.asgi_app
    # without --factory the factory itself is the "app" (and would be detected as WSGI/ASGI
    # by signature); with it, its result is used
    assert load_app("loading_apps:create_app") is loading_apps.create_app


def test_failing_factory_and_non_callables_are_app_load_errors():
    with pytest.raises(AppLoadError, match="factory 'loading_apps:create_app_failing' raised ValueError"):
        load_app("loading_apps:create_app_failing", factory=True)
    with pytest.raises(AppLoadError, match="--factory given but 'loading_apps:not_callable' is not callable"):
        load_app("loading_apps:not_callable", factory=True)
    with pytest.raises(AppLoadError, match="'loading_apps:not_callable' is not callable"):
        load_app("loading_apps:not_callable")


def test_app_dir_is_put_on_sys_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "fcgw_app_dir_module.py").write_text("def app(environ, start_response):\n    return []\n")
    with pytest.raises(AppLoadError, match="could not import module"):
        load_app("fcgw_app_dir_module:app", app_dir=None)
    app = load_app("fcgw_app_dir_module:app", app_dir=str(tmp_path))
    assert sys.path[0] == str(tmp_path)
    assert detect_interface(app) == "wsgi"


# -- interface detection -----------------------------------------------------------------------


def test_detect_plain_callables():
    import loading_apps

    assert detect_interface(loading_apps.asgi_app) == "asgi3"
    assert detect_interface(loading_apps.wsgi_app) == "wsgi"
    assert detect_interface(loading_apps.asgi3_instance) == "asgi3"  # class with async __call__
    assert detect_interface(loading_apps.ASGI2App) == "asgi2"
    assert detect_interface(loading_apps.WSGIClass) == "wsgi"  # PEP 3333 application class
    assert detect_interface(functools.partial(lambda config, environ, start_response: [], {})) == "wsgi"

    class BoundMethods:
        def wsgi(self, environ, start_response):
            return []

        async def asgi(self, scope, receive, send):
            pass

    assert detect_interface(BoundMethods().wsgi) == "wsgi"
    assert detect_interface(BoundMethods().asgi) == "asgi3"


def _no_wraps(app):
    """A decorator written without functools.wraps: its wrapper's signature is all there is."""

    def wrapper(*args, **kwargs):
        return app(*args, **kwargs)

    return wrapper


def test_plain_callables_with_a_generic_signature_are_wsgi():
    import loading_apps

    assert detect_interface(validator(loading_apps.wsgi_app)) == "wsgi"  # lint_app(*args, **kw)
    assert detect_interface(loading_apps.generic) == "wsgi"
    assert detect_interface(_no_wraps(loading_apps.wsgi_app)) == "wsgi"
    assert detect_interface(functools.partial(loading_apps.generic)) == "wsgi"
    assert detect_interface(print) == "wsgi"  # a C callable without a signature
    # an async callable stays ASGI 3 whatever its signature says
    assert detect_interface(functools.wraps(loading_apps.asgi_app)(_async_generic)) == "asgi3"


async def _async_generic(*args, **kwargs):
    return None


def test_functools_wraps_decorators_are_detected_through_the_wrapped_app():
    import loading_apps

    assert detect_interface(loading_apps.wrapped_wsgi) == "wsgi"
    assert detect_interface(loading_apps.wrapped_asgi) == "asgi3"  # a sync wrapper of an async app
    assert detect_interface(validator(loading_apps.wrapped_wsgi)) == "wsgi"
    assert detect_interface(loading_apps._wrapped(loading_apps.ASGI2App)) == "asgi2"


def test_the_guess_is_logged_naming_interface(caplog):
    import loading_apps

    with caplog.at_level(logging.INFO, logger="gateway.error"):
        assert resolve_interface(validator(loading_apps.wsgi_app), "auto") == "wsgi"
    assert "detected WSGI: validator.<locals>.lint_app is a plain callable" in caplog.text
    assert "pass --interface to override" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.error"):
        assert resolve_interface(loading_apps.wrapped_wsgi, "auto") == "wsgi"  # told, not guessed
        assert resolve_interface(loading_apps.generic, "asgi") == "asgi"  # --interface: no guess
    assert "detected" not in caplog.text


def test_undetectable_callable_gives_a_clear_error():
    def four(a, b, c, d):
        pass

    with pytest.raises(AppLoadError, match="takes 4 positional arguments; pass --interface asgi or wsgi"):
        detect_interface(four)
    assert resolve_interface(four, "wsgi") == "wsgi"
    assert resolve_interface(four, "asgi") == "asgi"
    with pytest.raises(AppLoadError, match=r"cannot tell.*an application factory\? pass --factory"):
        resolve_interface(lambda: None, "auto")


def _get(gw, path: str):
    with FastCGIClient(gw.address, timeout=10) as client:
        return client.request("GET", path)


def test_validator_wrapped_app_is_served_as_wsgi_without_interface(gateway_factory):
    gw = gateway_factory("wsgi_app:validated")
    r = _get(gw, "/pid")
    assert r.status == 200 and int(r.body) != gw.pid  # a worker answered, through the validator
    gw.wait_for_log(r"detected WSGI: validator\.<locals>\.lint_app is a plain callable")
    gw.wait_for_log(r"wsgi_app:validated loaded \(wsgi, sync worker\)")
    assert "AssertionError" not in gw.log_text()  # the validator found nothing to object to


@pytest.mark.parametrize(
    ("app", "body", "interface"),
    [
        ("loading_apps:wrapped_wsgi", b"wsgi /e2e script_name=", "wsgi, sync worker"),
        ("loading_apps:wrapped_asgi", b"asgi /e2e root_path=", "asgi, async worker"),
    ],
)
def test_functools_wraps_decorated_apps_are_served(gateway_factory, app, body, interface):
    gw = gateway_factory(app)
    r = _get(gw, "/e2e")
    assert (r.status, r.body) == (200, body)
    gw.wait_for_log(rf"{app} loaded \({interface}\)")
    assert "detected WSGI" not in gw.log_text()


def test_detect_flask_and_starlette():
    import flask
    import starlette_app

    assert detect_interface(flask.Flask("detect")) == "wsgi"
    assert resolve_interface(flask.Flask("detect"), "auto") == "wsgi"
    assert detect_interface(starlette_app.app) == "asgi3"


def test_detect_django_wsgi_and_asgi_handlers():
    code = textwrap.dedent(
        """
        import django
        from django.conf import settings
        settings.configure()
        django.setup()
        from django.core.asgi import get_asgi_application
        from django.core.handlers.asgi import ASGIHandler
        from django.core.handlers.wsgi import WSGIHandler
        from django.core.wsgi import get_wsgi_application
        from gateway.loading import detect_interface
        print(detect_interface(WSGIHandler()), detect_interface(get_wsgi_application()))
        print(detect_interface(ASGIHandler()), detect_interface(get_asgi_application()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wsgi", "wsgi", "asgi3", "asgi3"]


async def _call_asgi2() -> list[dict]:
    import loading_apps

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await as_asgi3(loading_apps.ASGI2App)({"type": "http", "path": "/two"}, receive, send)
    return sent


def test_asgi2_class_is_wrapped_as_asgi3():
    import asyncio

    import loading_apps

    assert as_asgi3(loading_apps.asgi_app) is loading_apps.asgi_app
    assert as_asgi3(loading_apps.wrapped_asgi) is loading_apps.wrapped_asgi  # returns the coroutine
    sent = asyncio.run(_call_asgi2())
    assert sent[-1] == {"type": "http.response.body", "body": b"asgi2 /two"}
