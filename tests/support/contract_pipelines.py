"""Test pipelines for each capability of contract v2, registered through ``pipelines.extra`` like any plugin.

Each computes something with a known answer on the phantoms of the tests, so the tests check the node's
whole path (loading, running, encoding, recording), not just that it runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.plugins.api import (
    Code,
    Compute,
    Consumes,
    DerivedImage,
    Environment,
    FindingGroup,
    LabelMap,
    Measurement,
    ModelInfo,
    NotAssessable,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    Provides,
    QualitativeFinding,
    Region3D,
    Requirements,
    RunContext,
    Segment,
    SegmentRef,
    Selector,
    Trigger,
    WeightsSpec,
    local_code,
    stable_uid,
)

TISSUE = Code("85756007", "SCT", "Tissue")
BONE = Code("272673000", "SCT", "Bone structure of body")
FRACTURE = Code("125605004", "SCT", "Fracture of bone")
CAVITY = Code("52988006", "SCT", "Lesion")
AREA = Code("42798000", "SCT", "Area")
VOLUME = Code("118565006", "SCT", "Volume")
MM2 = Code("mm2", "UCUM", "square millimeter")
ML = Code("mL", "UCUM", "milliliter")
PX = Code("{pixels}", "UCUM", "pixels")
PHASE = local_code("test-phase", "Cardiac phase (test)")
LARGEST = local_code("test-largest", "Largest area")
SMALLER = local_code("test-smaller", "Smaller area")


def _count(ctx: RunContext, key: str) -> None:
    """Append one line to the file the test names (counts runs and setups across processes)."""
    path = ctx.params.get(key)
    if path:
        with Path(str(path)).open("a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")


class CinePipeline(PipelineBase):
    """Per-frame area of the bright disc at the middle slice position of a cine, and a cine SEG of it."""

    name = "test_cine"
    version = "1.0.0"
    description = "Test-only: per-frame bright-disc area of a cine"
    selector = Selector(modalities=("MR",), min_time_points=5)
    produces = frozenset({OutputKind.SR, OutputKind.SEG})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        cine = inputs.cine()
        threshold = float(ctx.params.get("threshold", 500))
        masks = (cine.array > threshold).astype(np.uint8)
        mid = cine.n_positions // 2
        row_mm, col_mm = cine.pixel_spacing_mm or (1.0, 1.0)
        unit = MM2 if cine.pixel_spacing_mm else PX
        areas = masks[mid].reshape(cine.n_times, -1).sum(axis=1) * row_mm * col_mm
        largest = int(np.argmax(areas))
        groups = []
        for t in range(cine.n_times):
            source = cine.sources[mid][t]
            groups.append(
                FindingGroup(
                    tracking_id=f"frame {t + 1}",
                    tracking_uid=stable_uid(cine.sources[0][0].sop_instance_uid, "frame", str(t)),
                    finding=CAVITY,
                    measurements=[Measurement(AREA, float(areas[t]), unit, source=source)],
                    qualitative=[QualitativeFinding(PHASE, LARGEST if t == largest else SMALLER)],
                    segment=SegmentRef("disc", 1) if t == largest else None,
                )
            )
        label_map = LabelMap.on_cine(masks, [Segment(1, "bright disc", TISSUE, CAVITY)], cine, "disc")
        return PipelineResult(
            ProducedBy.CLASSICAL,
            groups=groups,
            label_maps=[label_map],
            text=f"largest at time point {largest + 1} of {cine.n_times} (order: {cine.time_order})",
            details={"areas": areas.tolist(), "shape": list(cine.array.shape), "time_order": cine.time_order},
        )


class CineStudyPipeline(CinePipeline):
    """The same on a whole study: a cine stored as one series per slice position."""

    name = "test_cine_study"
    selector = Selector(modalities=("MR",), trigger=Trigger.STUDY)


class OverlapPipeline(PipelineBase):
    """Two overlapping label maps (bone, fracture region), a 3D box and centre with a learned confidence."""

    name = "test_overlap"
    version = "1.0.0"
    description = "Test-only: bones and an overlapping fracture region with a SCOORD3D box"
    selector = Selector(modalities=("CT",), min_instances=3)
    produces = frozenset({OutputKind.SR, OutputKind.SEG})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        volume = inputs.primary.volume()
        bone = (volume.array > 300).astype(np.uint8)
        z, y, x = np.nonzero(bone)
        region = np.zeros_like(bone)
        cz, cy, cx = int(np.median(z)), int(np.median(y)), int(np.median(x))
        region[max(cz - 1, 0) : cz + 2, cy - 3 : cy + 4, cx - 3 : cx + 4] = 1
        low = volume.index_to_patient((max(cz - 1, 0), cy - 3, cx - 3))
        high = volume.index_to_patient((cz + 1, cy + 3, cx + 3))
        centre = volume.index_to_patient((cz, cy, cx))
        model = ModelInfo("test-detector", "0.1", "ab" * 32)
        group = FindingGroup(
            tracking_id="fracture 1",
            tracking_uid=stable_uid(inputs.primary.series_instance_uid, "fracture", "1"),
            finding=FRACTURE,
            measurements=[
                Measurement(VOLUME, float(region.sum() * volume.voxel_volume_ml), ML, produced_by=ProducedBy.CLASSICAL)
            ],
            segment=SegmentRef("fractures", 1),
            regions_3d=[
                Region3D.box(low, high, volume.frame_of_reference_uid),
                Region3D.point(centre, volume.frame_of_reference_uid),
            ],
            confidence=0.875,
            produced_by=ProducedBy.LEARNED,
            model=model.name,
        )
        return PipelineResult(
            ProducedBy.CLASSICAL,
            groups=[group],
            label_maps=[
                LabelMap.on_volume(bone, [Segment(1, "bone", TISSUE, BONE)], volume, "bones"),
                LabelMap.on_volume(region, [Segment(1, "fracture region", TISSUE, FRACTURE)], volume, "fractures"),
            ],
            models=[model],
            details={"centre_mm": centre.tolist(), "box_mm": [low.tolist(), high.tolist()]},
        )


class MaskUpstream(PipelineBase):
    """Provides a mask of the middle slice; counts its runs (``count_file``)."""

    name = "test_upstream"
    version = "1.0.0"
    description = "Test-only: a derived mask for a downstream pipeline"
    selector = Selector(modalities=("CT",), min_instances=3)
    produces = frozenset({OutputKind.SR})
    provides = (Provides("mask", "middle slice above 300 HU"),)

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        _count(ctx, "count_file")
        series = inputs.primary
        if ctx.params.get("refuse"):
            return PipelineResult.not_assessable(NotAssessable.WRONG_ANATOMY, "told to refuse by the test")
        volume = series.volume()
        mid = volume.array.shape[0] // 2
        mask = (volume.array[mid] > 300).astype(np.float32)
        derived = DerivedImage(
            "mask",
            mask,
            (volume.spacing[1], volume.spacing[2]),
            volume.sources[mid].sop_instance_uid,
            (0, 0, mask.shape[0], mask.shape[1]),
        )
        return PipelineResult(ProducedBy.CLASSICAL, derived_images=[derived], details={"slice": mid})


class MaskDownstream(PipelineBase):
    """Measures the upstream's mask area; never loads pixels itself."""

    name = "test_downstream"
    version = "1.0.0"
    description = "Test-only: measures what test_upstream provides"
    selector = Selector(modalities=("CT",), min_instances=3)
    produces = frozenset({OutputKind.SR})
    consumes = (Consumes("test_upstream", "mask"),)

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        _count(ctx, "count_file")
        mask = inputs.derived("test_upstream", "mask")
        spacing = mask.pixel_spacing_mm or (1.0, 1.0)
        area = float(mask.pixels.sum() * spacing[0] * spacing[1])
        group = FindingGroup(
            "mask",
            stable_uid(mask.source_sop_instance_uid, "mask"),
            TISSUE,
            measurements=[Measurement(AREA, area, MM2)],
        )
        return PipelineResult(ProducedBy.CLASSICAL, groups=[group], details={"area_mm2": area})


class SetupCounter(PipelineBase):
    """Counts its ``setup`` calls (``setup_file``) and says which state each run saw."""

    name = "test_setup"
    version = "1.0.0"
    description = "Test-only: a model loaded once per worker"
    selector = Selector(modalities=("CT",), min_instances=3)
    produces = frozenset({OutputKind.SR})
    requirements = Requirements(compute=Compute.GPU_OPTIONAL, weights=(WeightsSpec("net", "net.bin"),))

    def setup(self, ctx: RunContext) -> Any:
        _count(ctx, "setup_file")
        return {"device": ctx.device, "pid": os.getpid(), "weights_ok": ctx.weights["net"].ok}

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        return PipelineResult(ProducedBy.CLASSICAL, details={"state": ctx.state})


class RefusingPipeline(PipelineBase):
    """Not assessable unless the series has more than ``min_slices`` slices."""

    name = "test_refusing"
    version = "1.0.0"
    description = "Test-only: says it cannot assess short series"
    selector = Selector(modalities=("CT",))
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})

    def is_available(self, env: Environment) -> tuple[bool, str]:
        return True, "classical"

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        count = len(inputs.primary.datasets)
        if count <= int(ctx.params.get("min_slices", 1000)):
            return PipelineResult.not_assessable(
                NotAssessable.OUTSIDE_FIELD_OF_VIEW, f"only {count} slices: the organ is not fully covered"
            )
        raise AssertionError("the tests never give enough slices")


class LargestSeriesStudyPipeline(PipelineBase):
    """Study-level: looks at every series' headers, loads the pixels of the largest series only."""

    name = "test_largest_series"
    version = "1.0.0"
    description = "Test-only: a study-level pipeline that reads one series among several"
    selector = Selector(modalities=("CT",), trigger=Trigger.STUDY)
    produces = frozenset({OutputKind.SR})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        largest = max(inputs.series, key=lambda s: len(s.datasets))
        volume = largest.volume()
        return PipelineResult(
            ProducedBy.CLASSICAL,
            details={"series": largest.series_instance_uid, "slices": int(volume.array.shape[0])},
        )


class LeakyPipeline(PipelineBase):
    """Fails the way libraries do: quoting the offending values (here the patient's) in the message."""

    name = "test_leaky"
    version = "1.0.0"
    description = "Test-only: an error message that quotes patient values"
    selector = Selector(modalities=("CT",))
    produces = frozenset({OutputKind.SR})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        ds = inputs.primary.first
        raise ValueError(
            f"Unable to convert {ds.PatientBirthDate!r} to 'DA' for {ds.PatientName} ({ds.PatientID}), "
            f"sex {ds.PatientSex!r}, accession {ds.AccessionNumber}"
        )
