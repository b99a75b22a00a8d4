"""Routing rules as data: pydantic models validated when the configuration is loaded.

A rule says which series it matches (``match``), which pipelines run on them and where they are forwarded.
Regexes are compiled, body parts normalised and SOP class keywords resolved at load time, so a bad rule fails
with the key in the message instead of at three in the morning.

    [[rules]]
    name = "chest-ct"
    match = { modality = ["CT"], body_part = ["CHEST"], image_type_excludes = ["LOCALIZER"] }
    pipelines = ["lung_longitudinal"]
    forward_to = ["research_pacs", "ARCHIVE@10.0.0.5:104"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from dicomnode.addresses import Destination
from dicomnode.errors import ConfigError
from dicomnode.routing.bodypart import BODY_PARTS, canonical_body_part
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.selectors import Criteria, MatchResult, compile_pattern, evaluate, resolve_sop_class

__all__ = [
    "ALL_PIPELINES",
    "Rule",
    "RuleMatch",
    "criteria_from_rule_match",
    "load_rules",
    "match_rule",
    "parse_forward_address",
]

ALL_PIPELINES = "*"

_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # 16 printable characters, no backslash


def parse_forward_address(target: str) -> Destination | None:
    """``AET@HOST:PORT`` as a :class:`Destination`; None when ``target`` is a destination name instead."""
    if "@" not in target:
        return None
    return Destination.parse(target)


def _listify(value: Any) -> Any:
    # TOML authors write `modality = "CT"` as often as `modality = ["CT"]`.
    return [value] if isinstance(value, str) else value


def _clean(values: list[str], *, upper: bool) -> list[str]:
    cleaned = [v.strip().upper() if upper else v.strip() for v in values]
    if any(not v for v in cleaned):
        raise ValueError("empty value in list")
    return cleaned


class RuleMatch(BaseModel):
    """Which series a rule matches; every field optional, empty means any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: list[str] = Field(default_factory=list)
    body_part: list[str] = Field(default_factory=list)
    sop_class_uid: list[str] = Field(default_factory=list)
    image_type_includes: list[str] = Field(default_factory=list)
    image_type_excludes: list[str] = Field(default_factory=list)
    series_description: str | None = None
    study_description: str | None = None
    calling_ae: list[str] = Field(default_factory=list)
    called_ae: list[str] = Field(default_factory=list)
    min_instances: int = Field(default=1, ge=1)
    max_instances: int | None = Field(default=None, ge=1)

    @field_validator(
        "modality",
        "body_part",
        "sop_class_uid",
        "image_type_includes",
        "image_type_excludes",
        "calling_ae",
        "called_ae",
        mode="before",
    )
    @classmethod
    def _accept_single_string(cls, value: Any) -> Any:
        return _listify(value)

    @field_validator("modality", "image_type_includes", "image_type_excludes")
    @classmethod
    def _upper(cls, values: list[str]) -> list[str]:
        return _clean(values, upper=True)

    @field_validator("calling_ae", "called_ae")
    @classmethod
    def _ae_titles(cls, values: list[str]) -> list[str]:
        return _clean(values, upper=False)

    @field_validator("body_part")
    @classmethod
    def _body_parts(cls, values: list[str]) -> list[str]:
        names: list[str] = []
        for value in values:
            name = canonical_body_part(value)
            if name is None:
                raise ValueError(f"unknown body part {value!r}; known names: {', '.join(sorted(BODY_PARTS))}")
            names.append(name)
        return names

    @field_validator("sop_class_uid")
    @classmethod
    def _sop_classes(cls, values: list[str]) -> list[str]:
        return [resolve_sop_class(v) for v in _clean(values, upper=False)]

    @field_validator("series_description", "study_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)
        return value

    @model_validator(mode="after")
    def _instance_range(self) -> RuleMatch:
        if self.max_instances is not None and self.max_instances < self.min_instances:
            raise ValueError(f"max_instances ({self.max_instances}) < min_instances ({self.min_instances})")
        return self


class Rule(BaseModel):
    """One routing rule: what it matches, which pipelines run, where the series is forwarded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    level: Literal["series", "study"] = "series"
    match: RuleMatch = Field(default_factory=RuleMatch)
    pipelines: list[str] = Field(default_factory=list)
    forward_to: list[str] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("pipelines", "forward_to", mode="before")
    @classmethod
    def _accept_single_string(cls, value: Any) -> Any:
        return _listify(value)

    @field_validator("pipelines")
    @classmethod
    def _pipeline_names(cls, values: list[str]) -> list[str]:
        return _clean(values, upper=False)

    @field_validator("forward_to")
    @classmethod
    def _forward_targets(cls, values: list[str]) -> list[str]:
        cleaned = _clean(values, upper=False)
        for target in cleaned:
            parse_forward_address(target)
        return cleaned

    @model_validator(mode="after")
    def _does_something(self) -> Rule:
        if not self.pipelines and not self.forward_to:
            raise ValueError(f"rule {self.name!r} must name at least one of pipelines or forward_to")
        return self


def criteria_from_rule_match(match: RuleMatch) -> Criteria:
    return Criteria(
        modalities=tuple(match.modality),
        body_parts=tuple(match.body_part),
        sop_class_uids=tuple(match.sop_class_uid),
        image_type_includes=tuple(match.image_type_includes),
        image_type_excludes=tuple(match.image_type_excludes),
        series_description=match.series_description,
        study_description=match.study_description,
        calling_aes=tuple(match.calling_ae),
        called_aes=tuple(match.called_ae),
        min_instances=match.min_instances,
        max_instances=match.max_instances,
    )


def match_rule(rule: Rule, facts: SeriesFacts) -> MatchResult:
    """Whether ``rule`` matches the series, with a reason for each criterion."""
    if not rule.enabled:
        return MatchResult(matched=False, reasons=["rule disabled"], failures=["rule disabled"])
    return evaluate(criteria_from_rule_match(rule.match), facts)


def _describe_errors(exc: PydanticValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"])
        where = f"{prefix}.{location}" if location else prefix
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def load_rules(raw_rules: Sequence[Mapping[str, Any]], *, key: str = "rules") -> list[Rule]:
    """Validate the ``[[rules]]`` tables of a configuration; raises ConfigError naming ``rules[i].field``."""
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        where = f"{key}[{index}]"
        try:
            rule = Rule.model_validate(raw)
        except PydanticValidationError as exc:
            raise ConfigError(_describe_errors(exc, where)) from exc
        if rule.name in seen:
            raise ConfigError(f"{where}.name: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        rules.append(rule)
    return rules
