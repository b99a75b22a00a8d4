from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dicomnode.config import Settings
from dicomnode.errors import PluginError
from dicomnode.plugins.api import (
    Compute,
    Consumes,
    OutputKind,
    Pipeline,
    Provides,
    Requirements,
    Selector,
    WeightsSpec,
)
from dicomnode.plugins.registry import Registry, load_reference, validate_pipeline
from dicomnode.runner.host import build_registry
from tests.support.sphere_pipeline import SpherePipeline


class _Broken:
    name = "Bad Name"
    version = "one"
    description = "x"
    selector = "CT"
    produces = frozenset({"SR"})
    requires = ["x"]
    priors = None


def test_validation_names_every_broken_attribute() -> None:
    with pytest.raises(PluginError) as err:
        validate_pipeline(_Broken(), "test")
    message = str(err.value)
    for attribute in ("name", "version", "selector", "produces", "requires", "requirements", "run()", "setup()"):
        assert attribute in message


def test_reference_loads_a_class_and_validates_it() -> None:
    pipeline = load_reference("tests.support.sphere_pipeline:SpherePipeline")
    assert isinstance(pipeline, Pipeline) and pipeline.name == "test_spheres"
    with pytest.raises(PluginError, match="cannot load"):
        load_reference("tests.support.nothing_here:Nope")


def test_discovery_lists_broken_plugins_without_failing() -> None:
    registry = Registry.discover(
        use_entry_points=False,
        extra=["tests.support.sphere_pipeline:SpherePipeline", "tests.unit.test_registry:_Broken"],
    )
    assert registry.entries["test_spheres"].available
    broken = registry.entries["_Broken"]
    assert broken.pipeline is None and not broken.available and "invalid" in broken.reason
    assert set(registry.active()) == {"test_spheres"}


def _registry(*pipelines: Pipeline, disabled: tuple[str, ...] = ()) -> Registry:
    registry = Registry()
    for pipeline in pipelines:
        registry.add(pipeline, "test")
    for name in disabled:
        registry.entries[name].enabled = False
    registry.check_chains()
    return registry


class _Upstream(SpherePipeline):
    name = "upstream"
    provides = (Provides("mask", "a mask"),)


class _Downstream(SpherePipeline):
    name = "downstream"
    consumes = (Consumes("upstream", "mask"),)


def test_a_chain_to_an_installed_provider_is_available_and_ordered() -> None:
    registry = _registry(_Upstream(), _Downstream())
    assert registry.entries["downstream"].available, registry.entries["downstream"].reason
    assert registry.upstream_order("downstream") == ["upstream"]


def test_a_chain_to_a_missing_or_wrong_provider_is_unavailable_with_the_reason() -> None:
    class Orphan(SpherePipeline):
        name = "orphan"
        consumes = (Consumes("not_installed", "mask"),)

    class WrongName(SpherePipeline):
        name = "wrong_name"
        consumes = (Consumes("upstream", "left_hand"),)

    registry = _registry(_Upstream(), Orphan(), WrongName())
    assert "not_installed, which is not installed" in registry.entries["orphan"].reason
    assert "which provides ['mask']" in registry.entries["wrong_name"].reason
    assert set(registry.active()) == {"upstream"}


def test_a_chain_cycle_is_detected_at_load() -> None:
    class A(SpherePipeline):
        name = "a_step"
        provides = (Provides("x"),)
        consumes = (Consumes("b_step", "y"),)

    class B(SpherePipeline):
        name = "b_step"
        provides = (Provides("y"),)
        consumes = (Consumes("a_step", "x"),)

    registry = _registry(A(), B())
    for name in ("a_step", "b_step"):
        assert not registry.entries[name].available
        assert "chain cycle" in registry.entries[name].reason


def test_a_disabled_upstream_makes_its_consumers_unavailable() -> None:
    registry = _registry(_Upstream(), _Downstream(), disabled=("upstream",))
    assert registry.entries["upstream"].enabled is False
    assert registry.entries["downstream"].reason == "upstream upstream is disabled"
    assert registry.active() == {}


def test_required_weights_missing_make_the_pipeline_unavailable_with_the_reason(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "pipelines": {
                "extra": ["tests.unit.test_registry:_LearnedOnly"],
                "weights_dir": str(tmp_path),
                "params": {"learned_only": {"net_sha256": "0" * 64}},
            }
        }
    )
    registry = build_registry(settings)
    entry = registry.entries["learned_only"]
    assert not entry.available
    assert "weights required" in entry.reason and "net.pt not found" in entry.reason
    (tmp_path / "net.pt").write_bytes(b"weights")
    entry = build_registry(settings).entries["learned_only"]
    assert not entry.available and "has sha256" in entry.reason and "expected 000" in entry.reason
    ok = Settings.model_validate(
        {
            "pipelines": {
                "extra": ["tests.unit.test_registry:_LearnedOnly"],
                "weights_dir": str(tmp_path),
                "params": {"learned_only": {"net_sha256": hashlib.sha256(b"weights").hexdigest()}},
            }
        }
    )
    assert build_registry(ok).entries["learned_only"].available


def test_a_gpu_only_pipeline_is_unavailable_on_a_host_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomnode.runner.host as host

    monkeypatch.setattr(host, "gpu_available", lambda: False)
    settings = Settings.model_validate({"pipelines": {"extra": ["tests.unit.test_registry:_GpuOnly"]}})
    entry = build_registry(settings).entries["gpu_only"]
    assert not entry.available and entry.reason == "needs a GPU; this host has none"


class _LearnedOnly(SpherePipeline):
    name = "learned_only"
    requirements = Requirements(weights=(WeightsSpec("net", "net.pt"),), weights_required=True)


class _GpuOnly(SpherePipeline):
    name = "gpu_only"
    requirements = Requirements(compute=Compute.GPU_REQUIRED)


def test_entry_points_register_the_shipped_pipelines() -> None:
    registry = Registry.discover()
    for name in ("hand_xray", "lung_longitudinal"):
        entry = registry.entries.get(name)
        assert entry is not None, f"{name} not registered through the dicomnode.pipelines entry point"
        assert entry.pipeline is not None, entry.reason
        assert OutputKind.SR in entry.pipeline.produces
        assert isinstance(entry.pipeline.selector, Selector)


def test_a_selector_asking_for_an_unknown_body_part_is_rejected_at_load() -> None:
    class Typo(SpherePipeline):
        name = "typo"
        selector = Selector(modalities=("CT",), body_parts=("CHESTT",))

    with pytest.raises(PluginError, match="selector"):
        validate_pipeline(Typo(), "test")


def test_disabled_entry_points_are_listed_but_never_imported() -> None:
    """A worker that runs one pipeline does not import the others (their models, torch, SimpleITK...)."""
    import subprocess
    import sys

    probe = (
        "import sys; from dicomnode.plugins.registry import Registry; "
        "r = Registry.discover(enabled=['hand_xray'], disabled=['lung_longitudinal']); "
        "print(sorted(m for m in ('pipelines.ct_fracture.pipeline', 'pipelines.cardiac_lv.pipeline', "
        "'pipelines.lung_longitudinal.pipeline', 'pipelines.hand_xray.pipeline') if m in sys.modules)); "
        "print(r.entries['ct_fracture'].enabled, r.entries['ct_fracture'].reason); "
        "print(r.entries['hand_xray'].enabled, r.entries['hand_xray'].available)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "['pipelines.hand_xray.pipeline']"
    assert out[1] == "False disabled in the configuration (not loaded)"
    assert out[2] == "True True"
