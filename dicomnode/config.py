"""Configuration: a TOML file (every key documented with its default in conf/dicomnode.toml), validated when
loaded, with command-line overrides. Errors name the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from dicomnode.addresses import Destination, validate_ae_title
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


class TlsSettings(_Strict):
    """[node.tls]: a second DICOM port over TLS. With ``ca``, clients must present a certificate it signed."""

    port: int = Field(ge=0, le=65535)
    cert: Path
    key: Path
    ca: Path | None = None


class NodeSettings(_Strict):
    ae_title: str = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    data_dir: Path = Path("dicomnode-data")
    allowed_calling_aes: list[str] = []
    max_associations: int = Field(default=64, ge=1)
    # The admission gate: a connection must send its whole A-ASSOCIATE-RQ this soon, and only so many
    # connections without one are held per address and in all (the oldest is closed for a newer one).
    association_request_timeout: float = Field(default=5.0, gt=0)
    max_pending_per_address: int = Field(default=8, ge=1)
    max_pending: int = Field(default=64, ge=1)
    # What the C-STORE handlers may hold in memory at once (data sets stream to disk; headers count):
    # a data set over it is answered 0xA700 (Out of Resources) and the sender retries.
    receive_memory_budget_mb: int = Field(default=1024, ge=1)
    check_called_ae: bool = False  # true: associations must call this node's ae_title (else any is accepted)
    association_retention_days: float = Field(default=30.0, gt=0)  # ended associations' rows kept this long
    tls: TlsSettings | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object a line, the action and ids as fields
    # A second copy of a SOP instance already stored: keep the first (count and log it), or replace it and
    # re-open its series (re-analysed, re-forwarded) as Orthanc's and dcm4chee's "overwrite" policies do.
    duplicates: Literal["keep_first", "replace"] = "keep_first"

    _aet = field_validator("ae_title")(_check_ae_title)


class DatabaseSettings(_Strict):
    url: str = ""  # empty: sqlite:///<data_dir>/dicomnode.sqlite3


class CompletionSettings(_Strict):
    series_quiet_seconds: float = Field(default=10.0, gt=0)
    association_end: bool = True
    # A sender that closes its association has sent the series: complete it at once (target: results
    # start within 1 s of the association's end) ...
    association_end_grace_seconds: float = Field(default=0.5, ge=0)
    # ... unless several associations carried it (modalities that open one association per image): the
    # next one may open a moment later, and completing early would run the pipeline on part of the series.
    several_associations_grace_seconds: float = Field(default=2.0, ge=0)
    poll_seconds: float = Field(default=0.2, gt=0)


class WorkerSettings(_Strict):
    processes: int = Field(default=1, ge=0)
    job_timeout_seconds: float = Field(default=900.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    retry_base_seconds: float = Field(default=5.0, ge=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    device: str = "auto"
    # Niceness added to each worker process: analyses yield the CPU to receiving and delivering.
    nice: int = Field(default=10, ge=0, le=19)


class DispatchSettings(_Strict):
    calling_ae: str = ""  # empty: node.ae_title
    max_attempts: int = Field(default=12, ge=1)
    backoff_base_seconds: float = Field(default=2.0, ge=0)
    backoff_cap_seconds: float = Field(default=300.0, gt=0)
    batch_size: int = Field(default=100, ge=1)
    poll_seconds: float = Field(default=0.5, gt=0)
    # Timeouts of one association (each destination may override them): TCP connect, association
    # negotiation (a peer that accepts TCP and never answers), and each C-STORE answer.
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    acse_timeout_seconds: float = Field(default=30.0, gt=0)
    dimse_timeout_seconds: float = Field(default=120.0, gt=0)
    # A claimed batch is leased this long and the lease renewed every third of it while the batch is sent: a
    # dispatcher that dies leaves its batch to another after at most this long; a long send is never taken over.
    lease_seconds: float = Field(default=60.0, gt=0)
    # Circuit breaker per destination: after this many failed associations in a row it opens (nothing is
    # sent there), and after the cool-down one probe delivery decides whether it closes again.
    circuit_failures: int = Field(default=5, ge=1)
    circuit_cooldown_seconds: float = Field(default=60.0, gt=0)
    # A destination whose TLS handshake fails on a certificate, trust or protocol (a configuration error, not the
    # network's) opens its circuit at once, for this long; its deliveries keep their attempts and wait.
    configuration_error_cooldown_seconds: float = Field(default=900.0, gt=0)


class RetentionSettings(_Strict):
    instances_max_age_days: float = Field(default=0.0, ge=0)  # 0: keep received instances
    results_max_age_days: float = Field(default=0.0, ge=0)  # 0: keep results
    min_free_gb: float = Field(default=0.0, ge=0)  # free-space low watermark; 0: off
    min_free_percent: float = Field(default=0.0, ge=0, lt=100)
    interval_seconds: float = Field(default=3600.0, ge=0)  # how often serve runs it; 0: never


class DestinationSettings(_Strict):
    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    results: bool = True  # receives the results (SR, SEG, summary) of every job
    forward: bool = False  # receives every received instance, unchanged
    # Per-destination overrides of dispatch.*_timeout_seconds (None: the dispatch value).
    connect_timeout_seconds: float | None = Field(default=None, gt=0)
    acse_timeout_seconds: float | None = Field(default=None, gt=0)
    dimse_timeout_seconds: float | None = Field(default=None, gt=0)
    # Associations opened at once to this destination when many deliveries wait (a PACS that accepts
    # several; the results of one job always travel together over one association).
    max_associations: int = Field(default=1, ge=1, le=32)
    # DICOM TLS (PS3.15 B.1): the destination's certificate is verified against tls_ca_file (else the
    # system's CAs) and its name or IP address (tls_server_name, else host); with tls_cert_file and
    # tls_key_file the node presents its own certificate (mutual TLS).
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_server_name: str | None = None

    _aet = field_validator("ae_title")(_check_ae_title)

    @model_validator(mode="after")
    def _tls_files(self) -> DestinationSettings:
        files = {
            "tls_ca_file": self.tls_ca_file,
            "tls_cert_file": self.tls_cert_file,
            "tls_key_file": self.tls_key_file,
        }
        given = [key for key, value in files.items() if value is not None]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} given but tls is false")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together (the node's certificate and its key)")
        missing = [f"{key} ({value})" for key, value in files.items() if value is not None and not value.is_file()]
        if missing:
            raise ValueError(f"no such file: {', '.join(missing)}")
        return self


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


class HttpToken(_Strict):
    """An API token: its role and the SHA-256 (hex) of its value, so the file holds no usable secret."""

    name: str
    role: Literal["read", "admin"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class HttpSettings(_Strict):
    """The HTTP API, metrics and dashboard (``dicomnode serve``). Loopback only unless ``host`` says otherwise."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # More tokens as "ROLE:TOKEN,ROLE:TOKEN" in $DICOMNODE_HTTP_TOKENS (roles: read, admin).
    tokens: list[HttpToken] = []
    metrics_public: bool = True  # /metrics without a token (it carries counts, never patient data)
    # The study in the viewer, e.g. "http://localhost:3000/viewer?StudyInstanceUIDs={study_instance_uid}".
    viewer_url: str = ""


class Settings(_Strict):
    node: NodeSettings = NodeSettings()
    database: DatabaseSettings = DatabaseSettings()
    completion: CompletionSettings = CompletionSettings()
    worker: WorkerSettings = WorkerSettings()
    dispatch: DispatchSettings = DispatchSettings()
    destinations: list[DestinationSettings] = []
    pipelines: PipelineSettings = PipelineSettings()
    priors: PriorSettings = PriorSettings()
    retention: RetentionSettings = RetentionSettings()
    http: HttpSettings = HttpSettings()
    rules: list[Rule] = []

    @model_validator(mode="before")
    @classmethod
    def _merge_destinations(cls, data: Any) -> Any:
        """One AE at one address is one destination: two entries with the same name and address (the usual
        `--forward PACS@h:p --destination PACS@h:p`) merge, their roles combined."""
        if not isinstance(data, dict) or not isinstance(data.get("destinations"), list):
            return data
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for entry in data["destinations"]:
            if not isinstance(entry, dict):
                return data
            key = (entry.get("name"), entry.get("ae_title"), entry.get("host"), entry.get("port"))
            if key in merged:
                first = merged[key]
                defaults = {"results": True, "forward": False}
                for role, default in defaults.items():
                    first[role] = bool(first.get(role, default)) or bool(entry.get(role, default))
            else:
                merged[key] = dict(entry)
        return {**data, "destinations": list(merged.values())}

    @model_validator(mode="after")
    def _names_resolve(self) -> Settings:
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destinations: names must be unique (one name, one address), got {names}")
        rule_names = [r.name for r in self.rules]
        repeated = sorted({n for n in rule_names if rule_names.count(n) > 1})
        if repeated:
            raise ValueError(f"rules: names must be unique, repeated: {repeated}")
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

    def stored_path(self, path: Path) -> str:
        """How a file under the data dir is recorded: relative to the data dir, so a restart from another
        directory, or a worker on another host with the store mounted elsewhere, finds it (see resolve)."""
        absolute = path.resolve()
        root = self.node.data_dir.resolve()
        return str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(absolute)

    def resolve(self, stored: str) -> Path:
        """The file a recorded path names, on this host."""
        path = Path(stored)
        return path if path.is_absolute() else self.node.data_dir / path

    def masked(self) -> dict[str, Any]:
        """The effective configuration as data, with secrets (the database password) masked."""
        data = self.model_dump(mode="json")
        data["database"]["url"] = mask_url(self.database.url)
        return data

    @property
    def dispatch_calling_ae(self) -> str:
        return self.dispatch.calling_ae or self.node.ae_title

    def destination(self, name_or_address: str) -> DestinationSettings:
        for dest in self.destinations:
            if dest.name == name_or_address:
                return dest
        return parse_address(name_or_address, results=False)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs, status pages and files the node writes)."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # an unparsable URL is reported elsewhere; never echo it whole
        return "<unparsable database url>"
    return parsed.render_as_string(hide_password=True) if parsed.password else url


CONFIG_ENV = "DICOMNODE_CONFIG"
DEFAULT_CONFIG = Path("dicomnode.toml")


def find_config(explicit: Path | None) -> Path | None:
    """The configuration every command reads: ``--config``, else $DICOMNODE_CONFIG, else ./dicomnode.toml
    when it exists, else none (the embedded defaults)."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


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
