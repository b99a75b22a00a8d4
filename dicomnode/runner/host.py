"""Hosting pipelines in a process: the registry built from the config, each pipeline's environment and
run context (parameters, verified weights, device), its ``setup`` called once and reused across jobs, and
``run`` guarded so that a pipeline bug becomes a recorded error, never a dead worker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomnode.config import Settings
from dicomnode.errors import DicomNodeError, PipelineError
from dicomnode.plugins.api import (
    Compute,
    Environment,
    Outcome,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    RunContext,
    WeightsStatus,
)
from dicomnode.plugins.registry import Registry
from dicomnode.plugins.weights import weights_status

log = logging.getLogger(__name__)

__all__ = ["PipelineHost", "build_registry", "choose_device", "gpu_available"]


@functools.cache
def gpu_available() -> bool:
    """Whether torch sees a CUDA device here (imports torch only when a pipeline may use a GPU)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_device(configured: str, compute: Compute) -> str:
    """The torch device for a pipeline: "cpu" for CPU-only ones; else the configured device, where "auto"
    means the first GPU when there is one."""
    if compute is Compute.CPU or configured == "cpu":
        return "cpu"
    if configured == "auto":
        return "cuda:0" if gpu_available() else "cpu"
    return configured


def _params(settings: Settings, pipeline: Pipeline, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**settings.pipelines.params.get(pipeline.name, {}), **(extra or {})}


def _weights(settings: Settings, pipeline: Pipeline, params: Mapping[str, Any]) -> dict[str, WeightsStatus]:
    return {
        spec.name: weights_status(spec, params, settings.pipelines.weights_dir)
        for spec in pipeline.requirements.weights
    }


def environment_for(settings: Settings, pipeline: Pipeline) -> Environment:
    params = _params(settings, pipeline)
    compute = pipeline.requirements.compute
    return Environment(
        params=params,
        weights=_weights(settings, pipeline, params),
        gpu_available=compute is not Compute.CPU and gpu_available(),
        device=choose_device(settings.worker.device, compute),
    )


def build_registry(settings: Settings) -> Registry:
    """Every installed pipeline, validated, with its availability on this host under ``settings``."""
    cfg = settings.pipelines
    return Registry.discover(
        enabled=cfg.enabled,
        disabled=cfg.disabled,
        extra=cfg.extra,
        environment=lambda p: environment_for(settings, p),
    )


class PipelineHost:
    """Runs the registry's pipelines in this process; one per worker (and one per ``dicomnode run``)."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._states: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def context(
        self,
        pipeline: Pipeline,
        *,
        work_dir: Path | None,
        job_id: int | None = None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> RunContext:
        """The run context of ``pipeline``, with the state its ``setup`` returned (called once per
        parameters, weights and device: a changed configuration sets it up again)."""
        params = _params(self.settings, pipeline, extra_params)
        weights = _weights(self.settings, pipeline, params)
        device = choose_device(self.settings.worker.device, pipeline.requirements.compute)
        ctx = RunContext(params=params, weights=weights, device=device, work_dir=work_dir, job_id=job_id)
        ctx.state = self._state(pipeline, ctx)
        return ctx

    def _state(self, pipeline: Pipeline, ctx: RunContext) -> Any:
        fingerprint = json.dumps(
            [dict(ctx.params), {k: (s.ok, s.sha256, str(s.path)) for k, s in ctx.weights.items()}, ctx.device],
            sort_keys=True,
            default=str,
        )
        key = (pipeline.name, hashlib.sha256(fingerprint.encode()).hexdigest())
        with self._lock:
            if key not in self._states:
                try:
                    self._states[key] = pipeline.setup(ctx)
                except DicomNodeError:
                    raise
                except Exception as exc:  # a failing model load is the pipeline's error, recorded on the job
                    raise PipelineError(f"{pipeline.name}.setup failed: {type(exc).__name__}: {exc}") from exc
                log.info("pipeline_setup pipeline=%s device=%s", pipeline.name, ctx.device)
            return self._states[key]

    def run(self, pipeline: Pipeline, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        """``pipeline.run`` with its errors recorded as PipelineError and its result checked: the right
        type, and every image it declares to provide present when it assessed the input."""
        try:
            result = pipeline.run(inputs, ctx)
        except DicomNodeError:
            raise
        except Exception as exc:  # a pipeline bug must become a recorded job error, never kill the worker
            raise PipelineError(f"{pipeline.name} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, PipelineResult):
            raise PipelineError(f"{pipeline.name}.run returned {type(result).__name__}, not PipelineResult")
        if result.outcome is Outcome.ASSESSED:
            missing = [p.name for p in pipeline.provides if result.derived(p.name) is None]
            if missing:
                raise PipelineError(f"{pipeline.name} declares it provides {missing} but its result has none")
        return result
