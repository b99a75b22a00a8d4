"""Configuration: a TOML file (every key documented with its default in conf/dicomnode.toml), validated when
loaded, with command-line overrides. Errors name the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from dicomnode.dispatch.destination import Destination, validate_ae_title
from dicomnode.errors import ConfigError, ValidationError
from dicomnode.routing.rules import Rule


def _check_ae_title(value: str) -> str:
    return validate_ae_title(value, "AE title")


def _is_address(text: str) -> bool:
    try:
        Destination.parse(text)
    except ValidationError:
        return False
    return True


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Strict):
    ae_title: str = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    data_dir: Path = Path("dicomnode-data")
    allowed_calling_aes: list[str] = []
    max_associations: int = Field(default=64, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    _aet = field_validator("ae_title")(_check_ae_title)


class DatabaseSettings(_Strict):
    url: str = ""  # empty: sqlite:///<data_dir>/dicomnode.sqlite3


class CompletionSettings(_Strict):
    series_quiet_seconds: float = Field(default=10.0, gt=0)
    association_end: bool = True
    association_end_grace_seconds: float = Field(default=2.0, ge=0)
    poll_seconds: float = Field(default=0.5, gt=0)


class WorkerSettings(_Strict):
    processes: int = Field(default=1, ge=0)
    job_timeout_seconds: float = Field(default=900.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    retry_base_seconds: float = Field(default=5.0, ge=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    device: str = "auto"


class DispatchSettings(_Strict):
    calling_ae: str = ""  # empty: node.ae_title
    max_attempts: int = Field(default=12, ge=1)
    backoff_base_seconds: float = Field(default=2.0, ge=0)
    backoff_cap_seconds: float = Field(default=300.0, gt=0)
    batch_size: int = Field(default=100, ge=1)
    poll_seconds: float = Field(default=0.5, gt=0)


class DestinationSettings(_Strict):
    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    results: bool = True  # receives the results (SR, SEG, summary) of every job
    forward: bool = False  # receives every received instance, unchanged

    _aet = field_validator("ae_title")(_check_ae_title)


class PipelineSettings(_Strict):
    enabled: list[str] = ["*"]
    disabled: list[str] = []
    extra: list[str] = []  # "module:attribute" of pipelines to load besides the entry points
    weights_dir: Path | None = None
    params: dict[str, dict[str, Any]] = {}

    @field_validator("extra")
    @classmethod
    def _module_refs(cls, value: list[str]) -> list[str]:
        for ref in value:
            if ":" not in ref:
                raise ValueError(f"{ref!r} must be 'module:attribute'")
        return value


class PriorSettings(_Strict):
    pacs: str = ""  # AET@HOST:PORT to query for earlier studies (C-FIND, then C-GET); empty: node's own only
    max_studies: int = Field(default=3, ge=0)
    max_age_days: int = Field(default=3650, ge=1)

    @field_validator("pacs")
    @classmethod
    def _address(cls, value: str) -> str:
        if value and not _is_address(value):
            raise ValueError(f"{value!r} must be AET@HOST:PORT")
        return value


class Settings(_Strict):
    node: NodeSettings = NodeSettings()
    database: DatabaseSettings = DatabaseSettings()
    completion: CompletionSettings = CompletionSettings()
    worker: WorkerSettings = WorkerSettings()
    dispatch: DispatchSettings = DispatchSettings()
    destinations: list[DestinationSettings] = []
    pipelines: PipelineSettings = PipelineSettings()
    priors: PriorSettings = PriorSettings()
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _names_resolve(self) -> Settings:
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destinations: names must be unique, got {names}")
        for index, rule in enumerate(self.rules):
            for target in rule.forward_to:
                if target not in names and not _is_address(target):
                    raise ValueError(
                        f"rules[{index}].forward_to: {target!r} is neither a destination name nor AET@HOST:PORT"
                    )
        return self

    # ---- derived values
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.node.data_dir / 'dicomnode.sqlite3').resolve()}"

    @property
    def store_dir(self) -> Path:
        return self.node.data_dir / "store"

    @property
    def outputs_dir(self) -> Path:
        return self.node.data_dir / "outputs"

    @property
    def dispatch_calling_ae(self) -> str:
        return self.dispatch.calling_ae or self.node.ae_title

    def destination(self, name_or_address: str) -> DestinationSettings:
        for dest in self.destinations:
            if dest.name == name_or_address:
                return dest
        return parse_address(name_or_address, results=False)


def parse_address(text: str, *, results: bool = True, forward: bool = False) -> DestinationSettings:
    """``AET@HOST:PORT`` as a destination named after the AE title."""
    try:
        dest = Destination.parse(text)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc
    return DestinationSettings(
        name=dest.name, ae_title=dest.ae_title, host=dest.host, port=dest.port, results=results, forward=forward
    )


def _format_error(exc: PydanticValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{source}: {key}: {err['msg']}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (TOML; optional), apply ``overrides`` (nested dict, e.g. from CLI flags), validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: configuration file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            section = data.setdefault(key, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{source}: {key}: must be a table")
            section.update(value)
        elif isinstance(value, list) and isinstance(data.get(key), list):
            data[key] = [*data[key], *value]
        else:
            data[key] = value
    try:
        return Settings.model_validate(data)
    except PydanticValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from exc
