from __future__ import annotations

import pytest

from dicomnode.errors import PluginError
from dicomnode.plugins.api import OutputKind, Pipeline, Selector
from dicomnode.plugins.registry import Registry, load_reference, validate_pipeline
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
    for attribute in ("name", "version", "selector", "produces", "requires", "run()", "is_available()"):
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


def test_disabled_and_missing_requirements_are_not_active() -> None:
    class Chained(SpherePipeline):
        name = "chained"
        requires = ("not_installed",)

    registry = Registry.discover(
        use_entry_points=False, extra=["tests.support.sphere_pipeline:SpherePipeline"], disabled=["test_spheres"]
    )
    registry.add(Chained())
    registry._check_requirements()
    assert registry.entries["test_spheres"].enabled is False
    assert "not_installed" in registry.entries["chained"].reason
    assert registry.active() == {}


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
