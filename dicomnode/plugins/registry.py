"""Pipeline registry: discovery by entry point (``dicomnode.pipelines``) or ``module:attribute`` reference,
validation of the contract when loaded, enable/disable from the config, availability with its reason.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from dicomnode.errors import PluginError, ValidationError
from dicomnode.plugins.api import OutputKind, Pipeline, PriorSpec, Selector
from dicomnode.routing.bodypart import canonical_body_part
from dicomnode.routing.selectors import criteria_from_selector

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dicomnode.pipelines"
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([.-]?[a-z0-9]+)?$")


@dataclass
class PipelineEntry:
    """One discovered pipeline: the object (when it loaded), where it came from, and its status."""

    name: str
    origin: str
    pipeline: Pipeline | None
    enabled: bool
    available: bool
    reason: str

    @property
    def version(self) -> str:
        return self.pipeline.version if self.pipeline else "?"


def validate_pipeline(obj: Any, origin: str) -> Pipeline:
    """Check that ``obj`` honours the contract; the error names the attribute and the rule."""
    problems: list[str] = []
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name must match {_NAME.pattern}, got {name!r}")
    version = getattr(obj, "version", None)
    if not isinstance(version, str) or not _VERSION.match(version):
        problems.append(f"version must look like 1.2.3, got {version!r}")
    if not isinstance(getattr(obj, "description", None), str):
        problems.append("description must be a string")
    selector = getattr(obj, "selector", None)
    if not isinstance(selector, Selector):
        problems.append("selector must be a dicomnode.plugins.api.Selector")
    else:
        try:
            criteria_from_selector(selector)  # unknown body parts, SOP class keywords, bad regexes
        except ValidationError as exc:
            problems.append(f"selector: {exc}")
        unknown = [part for part in selector.body_parts if canonical_body_part(part) is None]
        if unknown:
            problems.append(f"selector: unknown body parts {unknown} (see dicomnode.routing.bodypart.BODY_PARTS)")
    produces = getattr(obj, "produces", None)
    if not isinstance(produces, frozenset) or not produces or not all(isinstance(p, OutputKind) for p in produces):
        problems.append("produces must be a non-empty frozenset of OutputKind")
    requires = getattr(obj, "requires", None)
    if not isinstance(requires, tuple) or not all(isinstance(r, str) for r in requires):
        problems.append("requires must be a tuple of pipeline names")
    priors = getattr(obj, "priors", None)
    if priors is not None and not isinstance(priors, PriorSpec):
        problems.append("priors must be None or a PriorSpec")
    for method in ("run", "is_available"):
        if not callable(getattr(obj, method, None)):
            problems.append(f"{method}() is missing")
    if problems:
        raise PluginError(f"pipeline from {origin} is invalid: " + "; ".join(problems))
    return obj


def _instantiate(loaded: Any, origin: str) -> Pipeline:
    obj = loaded() if isinstance(loaded, type) or (callable(loaded) and not hasattr(loaded, "run")) else loaded
    return validate_pipeline(obj, origin)


def load_reference(ref: str) -> Pipeline:
    """Load ``module:attribute`` (a class, a factory or an instance)."""
    module_name, _, attr = ref.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load pipeline {ref!r}: {exc}") from exc
    return _instantiate(loaded, ref)


class Registry:
    """The pipelines this node knows, by name."""

    def __init__(self, entries: Iterable[PipelineEntry] = ()) -> None:
        self.entries: dict[str, PipelineEntry] = {e.name: e for e in entries}

    @classmethod
    def discover(
        cls,
        *,
        enabled: Iterable[str] = ("*",),
        disabled: Iterable[str] = (),
        extra: Iterable[str] = (),
        use_entry_points: bool = True,
    ) -> Registry:
        """Load every entry point and ``extra`` reference; a pipeline that fails to load is listed, not fatal."""
        enabled_set, disabled_set = set(enabled), set(disabled)
        sources: list[tuple[str, Any]] = []
        if use_entry_points:
            sources += [(f"entry point {ep.name} = {ep.value}", ep) for ep in entry_points(group=ENTRY_POINT_GROUP)]
        sources += [(ref, ref) for ref in extra]
        registry = cls()
        for origin, source in sources:
            fallback_name = source.name if hasattr(source, "name") else str(source).rpartition(":")[2]
            try:
                pipeline = _instantiate(source.load(), origin) if hasattr(source, "load") else load_reference(source)
            except Exception as exc:  # a broken plugin must not stop the node: list it with its reason
                log.warning("pipeline_load_failed origin=%s error=%s", origin, exc)
                registry.entries[fallback_name] = PipelineEntry(fallback_name, origin, None, False, False, str(exc))
                continue
            is_enabled = ("*" in enabled_set or pipeline.name in enabled_set) and pipeline.name not in disabled_set
            try:
                ok, reason = pipeline.is_available()
            except Exception as exc:  # availability checks touch files and devices; report, do not crash
                ok, reason = False, f"is_available() failed: {exc}"
            registry.entries[pipeline.name] = PipelineEntry(pipeline.name, origin, pipeline, is_enabled, ok, reason)
        registry._check_requirements()
        return registry

    def _check_requirements(self) -> None:
        for entry in self.entries.values():
            if entry.pipeline is None:
                continue
            missing = [r for r in entry.pipeline.requires if r not in self.entries or not self.entries[r].pipeline]
            if missing:
                entry.available = False
                entry.reason = f"requires pipelines that are not installed: {', '.join(missing)}"

    def add(self, pipeline: Pipeline, origin: str = "added") -> None:
        pipeline = validate_pipeline(pipeline, origin)
        ok, reason = pipeline.is_available()
        self.entries[pipeline.name] = PipelineEntry(pipeline.name, origin, pipeline, True, ok, reason)

    def active(self) -> dict[str, Pipeline]:
        """Pipelines that are loaded, enabled and available."""
        return {name: e.pipeline for name, e in self.entries.items() if e.pipeline and e.enabled and e.available}

    def get(self, name: str) -> Pipeline:
        entry = self.entries.get(name)
        if entry is None or entry.pipeline is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise PluginError(f"unknown pipeline {name!r} (installed: {known})")
        return entry.pipeline
