"""Config schema: defaults, TOML, env overrides, errors that name the key, example file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node import config
from edge_node.config import Config, HttpConfig
from edge_node.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "edge-node.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge-node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def assert_config_error(exc: pytest.ExceptionInfo[ConfigError], key: str) -> None:
    assert exc.value.key == key
    assert key in str(exc.value)
    assert exc.value.reason


# --- defaults and loading -------------------------------------------------------------


def test_defaults_load_without_file_or_env() -> None:
    cfg = config.load(None, environ={})
    assert cfg == Config()
    assert cfg.http.port == 8080
    assert cfg.video.width == 1280 and cfg.video.height == 720
    assert cfg.source.kind == "slate"
    assert cfg.webrtc.host_addresses == []
    assert cfg.bench.probe is False


def test_toml_file_overrides_only_given_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[node]\nid = "box-7"\n\n[http]\nport = 9090\n\n'
        "[video]\nfps = 25\nkeyframe_interval_s = 1.5\n\n"
        '[webrtc]\nhost_addresses = ["10.0.0.2", "127.0.0.1"]\n\n[bench]\nprobe = true\n',
    )
    cfg = config.load(path, environ={})
    assert cfg.node.id == "box-7"
    assert cfg.http.port == 9090
    assert cfg.video.fps == 25
    assert cfg.video.keyframe_interval_s == 1.5
    assert cfg.webrtc.host_addresses == ["10.0.0.2", "127.0.0.1"]
    assert cfg.bench.probe is True
    # Untouched keys keep their defaults.
    assert cfg.http.host == HttpConfig().host
    assert cfg.video.width == 1280
    assert cfg.node.log_level == "info"


def test_missing_file_names_the_config_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path / "nope.toml", environ={})
    assert_config_error(exc, "--config")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[http\nport = 1\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path, environ={})
    assert_config_error(exc, "--config")


def test_base_config_is_the_starting_point(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 9000\n")
    cfg = config.load(path, environ={}, base=config.demo_config())
    assert cfg.node.id == "demo"
    assert cfg.bench.probe is True
    assert cfg.http.port == 9000


# --- environment overrides --------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw", "section", "key", "expected"),
    [
        ("EDGE_NODE_NODE__ID", "env-box", "node", "id", "env-box"),
        ("EDGE_NODE_HTTP__PORT", "9191", "http", "port", 9191),
        ("EDGE_NODE_VIDEO__KEYFRAME_INTERVAL_S", "0.5", "video", "keyframe_interval_s", 0.5),
        ("EDGE_NODE_BENCH__PROBE", "true", "bench", "probe", True),
        ("EDGE_NODE_BENCH__PROBE", "1", "bench", "probe", True),
        ("EDGE_NODE_BENCH__PROBE", "off", "bench", "probe", False),
        (
            "EDGE_NODE_WEBRTC__HOST_ADDRESSES",
            "10.0.0.1, 127.0.0.1",
            "webrtc",
            "host_addresses",
            ["10.0.0.1", "127.0.0.1"],
        ),
        (
            "EDGE_NODE_WEBRTC__HOST_ADDRESSES",
            '["192.168.1.5"]',
            "webrtc",
            "host_addresses",
            ["192.168.1.5"],
        ),
        ("EDGE_NODE_WEBRTC__HOST_ADDRESSES", "", "webrtc", "host_addresses", []),
    ],
)
def test_env_override_each_type(var: str, raw: str, section: str, key: str, expected: Any) -> None:
    cfg = config.load(None, environ={var: raw})
    value = getattr(getattr(cfg, section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_env_beats_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 9000\n")
    cfg = config.load(path, environ={"EDGE_NODE_HTTP__PORT": "9001", "OTHER": "x"})
    assert cfg.http.port == 9001


def test_env_bool_false_overrides_true_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[bench]\nprobe = true\n")
    assert config.load(path, environ={"EDGE_NODE_BENCH__PROBE": "no"}).bench.probe is False


def test_unrelated_env_vars_are_ignored() -> None:
    environ = {"PATH": "/bin", "EDGE_NODE_SOMETHING": "x", "EDGE_NODEX__Y": "1"}
    assert config.load(None, environ=environ) == Config()


# --- errors name the dotted key ------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[nosuch]\nx = 1\n", "nosuch"),
        ("[http]\nportt = 80\n", "http.portt"),
        ('[http]\nport = "80"\n', "http.port"),
        ("[http]\nport = true\n", "http.port"),
        ("[http]\nport = 8080.0\n", "http.port"),
        ('[bench]\nprobe = "yes"\n', "bench.probe"),
        ("[node]\nid = 7\n", "node.id"),
        ('[video]\nkeyframe_interval_s = "2"\n', "video.keyframe_interval_s"),
        ('[webrtc]\nhost_addresses = "127.0.0.1"\n', "webrtc.host_addresses"),
        ("[webrtc]\nhost_addresses = [1]\n", "webrtc.host_addresses[0]"),
        ("http = 5\n", "http"),
        ("[http]\nport = 70000\n", "http.port"),
        ("[http]\nport = -1\n", "http.port"),
        ("[video]\nfps = 0\n", "video.fps"),
        ("[video]\nwidth = 641\n", "video.width"),
        ("[video]\nheight = 361\n", "video.height"),
        ("[video]\nkeyframe_interval_s = 0.05\n", "video.keyframe_interval_s"),
        ('[video]\nx264_preset = "placebo"\n', "video.x264_preset"),
        ('[node]\nlog_level = "trace"\n', "node.log_level"),
        ('[source]\nkind = "file"\n', "source.path"),
        ('[source]\nkind = "camera"\n', "source.kind"),
    ],
)
def test_bad_toml_raises_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp_path, toml), environ={})
    assert_config_error(exc, key)


def test_source_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    path = write(tmp_path, f'[source]\nkind = "file"\npath = "{missing.as_posix()}"\n')
    with pytest.raises(ConfigError) as exc:
        config.load(path, environ={})
    assert_config_error(exc, "source.path")


def test_source_file_that_exists_is_accepted(tmp_path: Path) -> None:
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"\x00")
    path = write(tmp_path, f'[source]\nkind = "file"\npath = "{media.as_posix()}"\n')
    cfg = config.load(path, environ={})
    assert cfg.source.kind == "file"
    assert cfg.source.path == media.as_posix()


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"EDGE_NODE_NOSUCH__X": "1"}, "nosuch.x"),
        ({"EDGE_NODE_HTTP__PORTT": "1"}, "http.portt"),
        ({"EDGE_NODE_HTTP__PORT": "eighty"}, "http.port"),
        ({"EDGE_NODE_HTTP__PORT": "70000"}, "http.port"),
        ({"EDGE_NODE_HTTP__PORT": "80.5"}, "http.port"),
        ({"EDGE_NODE_VIDEO__FPS": "0"}, "video.fps"),
        ({"EDGE_NODE_VIDEO__WIDTH": "1279"}, "video.width"),
        ({"EDGE_NODE_VIDEO__KEYFRAME_INTERVAL_S": "soon"}, "video.keyframe_interval_s"),
        ({"EDGE_NODE_BENCH__PROBE": "maybe"}, "bench.probe"),
        ({"EDGE_NODE_WEBRTC__HOST_ADDRESSES": "[1, 2"}, "webrtc.host_addresses"),
        ({"EDGE_NODE_WEBRTC__HOST_ADDRESSES": "[1]"}, "webrtc.host_addresses[0]"),
        ({"EDGE_NODE_SOURCE__KIND": "file"}, "source.path"),
    ],
)
def test_bad_env_raises_naming_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(None, environ=environ)
    assert_config_error(exc, key)


@pytest.mark.parametrize(
    "mapping",
    [
        {"video": {"keyframe_interval_s": math.nan}},
        {"worker": {"stall_timeout_s": math.nan}},
    ],
)
def test_nan_is_rejected_for_bounded_floats(mapping: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        config.from_mapping(mapping)


def test_integer_in_toml_for_a_float_key_becomes_a_float(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[video]\nkeyframe_interval_s = 1\n"), environ={})
    assert type(cfg.video.keyframe_interval_s) is float


@given(port=st.integers(min_value=-(2**40), max_value=2**40))
def test_any_port_in_range_accepted_else_rejected(port: int) -> None:
    if 0 <= port <= 65535:  # 0: any free port
        assert config.from_mapping({"http": {"port": port}}).http.port == port
    else:
        with pytest.raises(ConfigError) as exc:
            config.from_mapping({"http": {"port": port}})
        assert_config_error(exc, "http.port")


# --- the schema documents itself --------------------------------------------------------


def test_example_file_is_generated_from_the_schema() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == config.example_toml()


def test_example_file_loads_to_the_defaults() -> None:
    assert config.load(EXAMPLE, environ={}) == Config()


def test_example_mentions_every_key() -> None:
    text = config.example_toml()
    for section in dataclasses.fields(Config):
        assert f"[{section.name}]" in text
        for f in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            assert f"\n{f.name} = " in text


def test_every_field_has_a_doc() -> None:
    sections = dataclasses.fields(Config)
    assert len(sections) >= 7
    for section in sections:
        fields = dataclasses.fields(section.default_factory())  # type: ignore[misc]
        assert fields, section.name
        for f in fields:
            doc = f.metadata.get("doc")
            assert isinstance(doc, str) and doc.strip(), f"{section.name}.{f.name} has no doc"


# --- wire form -------------------------------------------------------------------------


def test_wire_round_trip_defaults() -> None:
    cfg = Config()
    assert config.from_wire(config.to_wire(cfg)) == cfg


def test_wire_round_trip_non_defaults() -> None:
    cfg = config.from_mapping(
        {
            "node": {"id": "n9", "log_format": "text"},
            "http": {"port": 1234},
            "video": {"width": 640, "height": 360, "fps": 15, "keyframe_interval_s": 0.5},
            "webrtc": {"host_addresses": ["127.0.0.1"]},
            "worker": {"frame_queue": 5},
            "bench": {"probe": True},
        }
    )
    wire = config.to_wire(cfg)
    assert wire["http"]["port"] == 1234
    back = config.from_wire(wire)
    assert back == cfg
    assert back != Config()


def test_from_wire_validates() -> None:
    wire = config.to_wire(Config())
    wire["http"]["port"] = -1
    with pytest.raises(ConfigError) as exc:
        config.from_wire(wire)
    assert_config_error(exc, "http.port")
