"""gateway.config: unit-aware sizes and durations (docs/protocol-notes.md, peer bug 20:
"256m" must never become 256 bytes, nonsense is rejected instead of guessed), their
inverses (the defaults --help shows), and the immutable, validated Config."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config import Config, format_duration, format_size, parse_duration, parse_size
from gateway.errors import ConfigError

K, M, G = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("0", 0),
        ("64K", 64 * K),
        ("64k", 64 * K),
        ("64KB", 64 * K),
        ("64KiB", 64 * K),
        ("256M", 256 * M),
        ("256m", 256 * M),
        ("1G", G),
        ("1.5G", 3 * G // 2),
        ("2T", 2 * 1024 * G),
        ("10B", 10),
        (" 64 K ", 64 * K),
        (512, 512),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["256mb?", "-1", "", "   ", "abc", "12XB", "K", "1e3", "0x10", "64Ki", "1_000", "5 MB extra",
     "1,5M", "\uff11\uff12", "512ms", -1, True],
)  # fmt: skip
def test_parse_size_rejects(bad):
    with pytest.raises(ConfigError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("30 s", 30.0),
        ("2m", 120.0),
        ("2M", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("2m500ms", 120.5),
        ("1d", 86400.0),
        (" 10s ", 10.0),
        (5, 5.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "bad",
    ["soon", "", "  ", "abc", "-1", "-5s", "1e3", "ms", "5mss", "10 minutes", "1h 30m", "1w",
     "1h30", "5m0", "s30", "inf", "nan", "\uff11\uff12", -1, -0.5, False],
)  # fmt: skip
def test_parse_duration_rejects(bad):
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)


def test_error_messages_show_valid_examples():
    with pytest.raises(ConfigError, match=r"'12XB'.*K, M, G or T"):
        parse_size("12XB")
    with pytest.raises(ConfigError, match=r"'soon'.*500ms, 2m, 1h30m"):
        parse_duration("soon")


# -- Config ------------------------------------------------------------------------------------


def test_defaults():
    c = Config(app="mod:app")
    assert c.binds == ("127.0.0.1:9000",)
    assert (c.interface, c.worker, c.lifespan, c.loop) == ("auto", "auto", "auto", "auto")
    assert c.socket_mode == 0o660
    assert c.max_params_bytes == 256 * K
    assert c.graceful_timeout_s == 30.0
    assert c.max_body_bytes is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (512, "512"), (1536, "1536"), (64 * K, "64K"), (256 * K, "256K"), (M, "1M"),
     (3 * G // 2, "1536M"), (G, "1G"), (2 * 1024 * G, "2T")],
)  # fmt: skip
def test_format_size_is_read_back_by_parse_size(value, text):
    assert format_size(value) == text
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (30.0, "30s"), (75.0, "75s"), (0.5, "500ms"), (0.001, "1ms"), (1.5, "1.5s"),
     (5400.0, "5400s"), (0.0005, "0.0005s")],
)  # fmt: skip
def test_format_duration_is_read_back_by_parse_duration(value, text):
    assert format_duration(value) == text
    assert parse_duration(text) == pytest.approx(value)


def test_default_of_each_field():
    assert Config.default("binds") == ("127.0.0.1:9000",)
    assert Config.default("max_params_bytes") == 256 * K
    assert Config.default("max_body_bytes") is None
    assert Config.default("extra") == {}
    for name in Config.field_names():
        assert Config.default(name) == getattr(Config(), name), name
    with pytest.raises(KeyError):
        Config.default("no_such_field")


@pytest.mark.parametrize(
    ("field", "value"),
    [("interface", "asgi4"), ("worker", "threaded"), ("lifespan", "yes"), ("loop", "trio")],
)
def test_invalid_choices_rejected(field, value):
    with pytest.raises(ConfigError, match=f"{field} must be one of"):
        Config(**{field: value})


def test_other_invalid_values_rejected():
    with pytest.raises(ConfigError, match="at least one bind"):
        Config(binds=())
    with pytest.raises(ConfigError, match="at least 1"):
        Config(threads=0)
    with pytest.raises(ConfigError, match="at least 1"):
        Config(bridge_threads=0)
    with pytest.raises(ConfigError, match="world-writable"):
        Config(socket_mode=0o662)
    with pytest.raises(TypeError):
        Config(no_such_option=1)  # type: ignore[call-arg]


def test_config_is_immutable_and_replace_revalidates():
    c = Config(app="mod:app")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.app = "other:app"  # type: ignore[misc]
    d = c.replace(root_path="/api", threads=4)
    assert (d.root_path, d.threads, d.app) == ("/api", 4, "mod:app")
    assert c.root_path == ""
    with pytest.raises(ConfigError):
        c.replace(worker="bogus")
    assert {"app", "binds", "socket_mode", "graceful_timeout_s", "max_body_bytes"} <= Config.field_names()
