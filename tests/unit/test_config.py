from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicomnode.cli import build_parser, settings_from_args
from dicomnode.config import Settings, load_settings
from dicomnode.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf" / "dicomnode.toml"


def _documented_keys(text: str) -> set[str]:
    """Keys of conf/dicomnode.toml, commented out or not, as section.key."""
    keys, section = set(), ""
    for line in text.splitlines():
        line = line.lstrip("# ").rstrip()
        header = re.match(r"^\[\[?([a-z_.]+)\]\]?(\s+#.*)?$", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^([a-z0-9_]+) = ", line)
        if key:
            keys.add(f"{section}.{key.group(1)}")
    return keys


def _model_keys(model: type, prefix: str) -> set[str]:
    from pydantic import BaseModel

    keys = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0] if prefix else annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _model_keys(annotation, f"{prefix}{name}.")
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            keys |= _model_keys(inner, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_setting_is_documented_in_conf() -> None:
    documented = _documented_keys(CONF.read_text())
    expected = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        sub = annotation if isinstance(annotation, type) else inner
        expected |= _model_keys(sub, f"{name}.")
    missing = sorted(k for k in expected if k not in documented and not k.startswith("pipelines.params"))
    assert not missing, f"settings missing from conf/dicomnode.toml: {missing}"


def test_example_config_loads_with_defaults() -> None:
    settings = load_settings(CONF)
    assert settings == Settings()
    assert settings.node.port == 11112 and settings.completion.series_quiet_seconds == 10.0
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("dicomnode.sqlite3")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[node]\nport = 70000\n", "node.port"),
        ("[node]\nae_title = 'A\\\\B'\n", "node.ae_title"),
        ("[node]\nportt = 1\n", "node.portt"),
        ("[completion]\nseries_quiet_seconds = -1\n", "completion.series_quiet_seconds"),
        ("[[destinations]]\nname='P'\nae_title='P'\nhost='h'\nport=0\n", "destinations.0.port"),
        ("[priors]\npacs = 'nonsense'\n", "priors.pacs"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert key in str(err.value)
    assert str(path) in str(err.value)


def test_rule_forwarding_to_an_unknown_destination_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[rules]]\nname = 'r'\nforward_to = ['NOWHERE']\n")
    with pytest.raises(ConfigError, match="forward_to"):
        load_settings(path)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[node]\nport = 4000\nae_title = 'FROMFILE'\n[completion]\nseries_quiet_seconds = 30\n")
    args = build_parser().parse_args(
        [
            "serve",
            "--config",
            str(path),
            "--port",
            "5000",
            "--data-dir",
            str(tmp_path / "d"),
            "--database-url",
            "postgresql://u@db:5432/n",
            "--forward",
            "FWD@10.0.0.1:104",
            "--destination",
            "PACS@pacs:11112",
            "--series-quiet-seconds",
            "3",
        ]
    )
    settings = settings_from_args(args)
    assert settings.node.port == 5000
    assert settings.node.ae_title == "FROMFILE"
    assert settings.node.data_dir == tmp_path / "d"
    assert settings.database_url == "postgresql://u@db:5432/n"
    assert settings.completion.series_quiet_seconds == 3
    by_name = {d.name: d for d in settings.destinations}
    assert by_name["FWD"].forward and not by_name["FWD"].results and by_name["FWD"].port == 104
    assert by_name["PACS"].results and not by_name["PACS"].forward and by_name["PACS"].host == "pacs"


def test_bad_address_flag_is_a_clear_error() -> None:
    args = build_parser().parse_args(["serve", "--forward", "no-port@host"])
    with pytest.raises(ConfigError, match="AET@HOST:PORT"):
        settings_from_args(args)


# ------------------------------------------------------------------------------------------- issue 7 (12, 17)
def test_forward_and_results_to_the_same_pacs_is_one_destination_with_both_roles() -> None:
    args = build_parser().parse_args(
        ["serve", "--forward", "PACS@pacs.example.org:104", "--destination", "PACS@pacs.example.org:104"]
    )
    (dest,) = settings_from_args(args).destinations
    assert (dest.name, dest.results, dest.forward) == ("PACS", True, True)
    with pytest.raises(ConfigError, match="names must be unique"):
        settings_from_args(
            build_parser().parse_args(["serve", "--forward", "PACS@a:104", "--destination", "PACS@b:104"])
        )


def test_duplicate_rule_names_are_refused_when_loaded(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[rules]]\nname = "ct"\npipelines = ["*"]\n[[rules]]\nname = "ct"\npipelines = ["*"]\n')
    with pytest.raises(ConfigError, match=r"rules: names must be unique, repeated: \['ct'\]"):
        load_settings(config)


def test_config_check_prints_the_effective_config_or_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomnode.cli import main

    good = tmp_path / "good.toml"
    good.write_text('[database]\nurl = "postgresql://node:hunter2@db:5432/dicomnode"\n')
    assert main(["config", "check", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "(valid)" in out and "postgresql://node:***@db:5432/dicomnode" in out and "hunter2" not in out
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[rules]]\nname = "lung"\npipelines = ["lung_longitudinall"]\n')
    assert main(["config", "check", "--config", str(unknown)]) == 2
    err = capsys.readouterr().err
    assert "rules[0] (lung).pipelines: unknown pipelines ['lung_longitudinall']" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nport = 99999\n")
    assert main(["config", "check", "--config", str(bad)]) == 2
    assert "node.port" in capsys.readouterr().err


def test_every_command_reads_the_same_node_and_never_creates_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomnode.cli import main
    from dicomnode.db.engine import Database

    node_dir = tmp_path / "site"
    Database(f"sqlite:///{node_dir / 'data' / 'dicomnode.sqlite3'}").upgrade()  # what `serve` created there
    config = node_dir / "dicomnode.toml"
    config.write_text(f'[node]\ndata_dir = "{node_dir / "data"}"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("DICOMNODE_CONFIG", raising=False)
    assert main(["jobs", "list"]) == 2  # no config here: it says so instead of showing an empty new database
    assert "no node database at" in capsys.readouterr().err
    assert not (elsewhere / "dicomnode-data").exists()
    monkeypatch.setenv("DICOMNODE_CONFIG", str(config))
    assert main(["jobs", "list"]) == 0
    assert "pipeline" in capsys.readouterr().out
    monkeypatch.delenv("DICOMNODE_CONFIG")
    monkeypatch.chdir(node_dir)  # ./dicomnode.toml is found too
    assert main(["jobs", "list"]) == 0
