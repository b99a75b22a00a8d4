"""Pipeline registry: discovery by entry point (``dicomnode.pipelines``) or ``module:attribute`` reference,
validation of the contract when loaded, typed chains (names and cycles checked), enable/disable from the
config, and availability on this host with its reason (weights, GPU, upstream pipelines).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from dicomnode.errors import PluginError, ValidationError
from dicomnode.plugins.api import (
    Compute,
    Consumes,
    Environment,
    OutputKind,
    Pipeline,
    PriorSpec,
    Provides,
    Requirements,
    Selector,
    required_pipelines,
)
from dicomnode.routing.bodypart import canonical_body_part
from dicomnode.routing.selectors import criteria_from_selector

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dicomnode.pipelines"
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([.-]?[a-z0-9]+)?$")

EnvironmentFor = Callable[[Pipeline], Environment]


@dataclass
class PipelineEntry:
    """One discovered pipeline: the object (when it loaded), where it came from, and its status here."""

    name: str
    origin: str
    pipeline: Pipeline | None
    enabled: bool
    available: bool
    reason: str

    @property
    def version(self) -> str:
        return self.pipeline.version if self.pipeline else "?"

    @property
    def status(self) -> str:
        """In one word: "not loaded", "disabled", "available" or "unavailable" (``reason`` says why)."""
        if not self.enabled:  # checked first: a disabled entry point is listed without being imported
            return "disabled"
        if self.pipeline is None:
            return "not loaded"
        return "available" if self.available else "unavailable"


def _tuple_of(obj: Any, attribute: str, kind: type) -> str | None:
    value = getattr(obj, attribute, None)
    if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
        return f"{attribute} must be a tuple of {kind.__name__}"
    return None


def _selector_problems(selector: Any) -> list[str]:
    if not isinstance(selector, Selector):
        return ["selector must be a dicomnode.plugins.api.Selector"]
    problems = []
    try:
        criteria_from_selector(selector)  # unknown SOP class keywords, bad regexes
    except ValidationError as exc:
        problems.append(f"selector: {exc}")
    unknown = [part for part in selector.body_parts if canonical_body_part(part) is None]
    if unknown:
        problems.append(f"selector: unknown body parts {unknown} (see dicomnode.routing.bodypart.BODY_PARTS)")
    return problems


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
    problems += _selector_problems(getattr(obj, "selector", None))
    produces = getattr(obj, "produces", None)
    if not isinstance(produces, frozenset) or not produces or not all(isinstance(p, OutputKind) for p in produces):
        problems.append("produces must be a non-empty frozenset of OutputKind")
    priors = getattr(obj, "priors", None)
    if priors is not None and not isinstance(priors, PriorSpec):
        problems.append("priors must be None or a PriorSpec")
    if not isinstance(getattr(obj, "requirements", None), Requirements):
        problems.append("requirements must be a dicomnode.plugins.api.Requirements")
    for attribute, kind in (("provides", Provides), ("consumes", Consumes)):
        problem = _tuple_of(obj, attribute, kind)
        if problem:
            problems.append(problem)
    if hasattr(obj, "requires"):
        problems.append("requires is contract version 1: declare consumes = (Consumes(pipeline, name), ...)")
    for method in ("run", "is_available", "setup"):
        if not callable(getattr(obj, method, None)):
            problems.append(f"{method}() is missing (subclass dicomnode.plugins.api.PipelineBase)")
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


def _default_environment(pipeline: Pipeline) -> Environment:
    return Environment()


def host_availability(pipeline: Pipeline, env: Environment) -> tuple[bool, str]:
    """What the node checks before asking the pipeline: required weights, GPU, then ``is_available``."""
    requirements = pipeline.requirements
    if requirements.compute is Compute.GPU_REQUIRED and not env.gpu_available:
        return False, "needs a GPU; this host has none"
    if requirements.weights_required:
        missing = [f"{name}: {s.reason}" for name, s in sorted(env.weights.items()) if not s.ok]
        if missing:
            return False, "weights required: " + "; ".join(missing)
    try:
        ok, reason = pipeline.is_available(env)
    except Exception as exc:  # availability checks touch files and devices; report, do not crash
        return False, f"is_available() failed: {type(exc).__name__}: {exc}"
    return bool(ok), str(reason)


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
        environment: EnvironmentFor = _default_environment,
    ) -> Registry:
        """Load every entry point and ``extra`` reference; a pipeline that fails to load is listed, not fatal.

        ``environment`` gives each pipeline's view of this host (parameters, weights, GPU).
        """
        enabled_set, disabled_set = set(enabled), set(disabled)
        sources: list[tuple[str, Any]] = []
        if use_entry_points:
            sources += [(f"entry point {ep.name} = {ep.value}", ep) for ep in entry_points(group=ENTRY_POINT_GROUP)]
        sources += [(ref, ref) for ref in extra]
        registry = cls()
        for origin, source in sources:
            fallback_name = source.name if hasattr(source, "name") else str(source).rpartition(":")[2]
            if hasattr(source, "load") and _switched_off(source.name, enabled_set, disabled_set):
                # entry points are named after their pipeline: a disabled one is not even imported, so that a
                # process that runs one pipeline does not pay for loading all the others
                registry.entries[source.name] = PipelineEntry(
                    source.name, origin, None, False, False, "disabled in the configuration (not loaded)"
                )
                continue
            try:
                pipeline = _instantiate(source.load(), origin) if hasattr(source, "load") else load_reference(source)
            except Exception as exc:  # a broken plugin must not stop the node: list it with its reason
                log.warning("pipeline_load_failed origin=%s error=%s", origin, exc)
                registry.entries[fallback_name] = PipelineEntry(fallback_name, origin, None, False, False, str(exc))
                continue
            is_enabled = ("*" in enabled_set or pipeline.name in enabled_set) and pipeline.name not in disabled_set
            ok, reason = host_availability(pipeline, environment(pipeline))
            registry.entries[pipeline.name] = PipelineEntry(pipeline.name, origin, pipeline, is_enabled, ok, reason)
        registry.check_chains()
        return registry

    def check_chains(self) -> None:
        """Every Consumes names an installed pipeline that Provides it, with no cycle; else the consumer is
        unavailable with the reason. A consumer of an unavailable or disabled upstream is unavailable too."""
        for entry in self.entries.values():
            if entry.pipeline is None:
                continue
            problems = self._link_problems(entry.pipeline)
            cycle = self._cycle(entry.name)
            if cycle:
                problems.append("chain cycle: " + " -> ".join(cycle))
            if problems:
                entry.available, entry.reason = False, "; ".join(problems)
        changed = True
        while changed:  # unavailability propagates downstream
            changed = False
            for entry in self.entries.values():
                if entry.pipeline is None or not entry.available:
                    continue
                for upstream in required_pipelines(entry.pipeline):
                    up = self.entries[upstream]
                    if not (up.available and up.enabled):
                        entry.available = False
                        entry.reason = f"upstream {upstream} is {'disabled' if not up.enabled else 'unavailable'}"
                        changed = True
                        break

    def _link_problems(self, pipeline: Pipeline) -> list[str]:
        problems = []
        for link in pipeline.consumes:
            upstream = self.entries.get(link.pipeline)
            if upstream is None or upstream.pipeline is None:
                problems.append(f"consumes {link.name!r} from {link.pipeline}, which is not installed")
            elif link.name not in {p.name for p in upstream.pipeline.provides}:
                offered = [p.name for p in upstream.pipeline.provides] or "nothing"
                problems.append(f"consumes {link.name!r} from {link.pipeline}, which provides {offered}")
        return problems

    def _cycle(self, start: str) -> list[str]:
        """The chain from ``start`` back to itself, if its upstream links loop."""
        path: list[str] = []

        def visit(name: str) -> list[str]:
            if name in path:
                return [*path[path.index(name) :], name]
            entry = self.entries.get(name)
            if entry is None or entry.pipeline is None:
                return []
            path.append(name)
            for upstream in required_pipelines(entry.pipeline):
                found = visit(upstream)
                if found:
                    return found
            path.pop()
            return []

        found = visit(start)
        return found if found and found[0] == start else []

    def add(
        self, pipeline: Pipeline, origin: str = "added", environment: EnvironmentFor = _default_environment
    ) -> None:
        pipeline = validate_pipeline(pipeline, origin)
        ok, reason = host_availability(pipeline, environment(pipeline))
        self.entries[pipeline.name] = PipelineEntry(pipeline.name, origin, pipeline, True, ok, reason)
        self.check_chains()

    def active(self) -> dict[str, Pipeline]:
        """Pipelines that are loaded, enabled and available."""
        return {name: e.pipeline for name, e in self.entries.items() if e.pipeline and e.enabled and e.available}

    def get(self, name: str) -> Pipeline:
        entry = self.entries.get(name)
        if entry is None or entry.pipeline is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise PluginError(f"unknown pipeline {name!r} (installed: {known})")
        return entry.pipeline

    def upstream_order(self, name: str) -> list[str]:
        """The pipelines ``name`` depends on, transitively, each once, dependencies first (``name`` excluded)."""
        order: list[str] = []

        def visit(current: str) -> None:
            for upstream in required_pipelines(self.get(current)):
                if upstream not in order:
                    visit(upstream)
                    order.append(upstream)

        visit(name)
        return order


def _switched_off(name: str, enabled: set[str], disabled: set[str]) -> bool:
    return name in disabled or ("*" not in enabled and name not in enabled)
