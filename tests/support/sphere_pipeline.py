"""A test-only pipeline registered through the same registry (config `pipelines.extra`): it segments the dense
spheres of a synthetic CT and measures each one, so the node's whole path (route, run, encode SR + SEG + summary,
deliver) is covered before the real pipelines exist."""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    LabelMap,
    Measurement,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    RunContext,
    Segment,
    SegmentRef,
    Selector,
    stable_uid,
)

TISSUE = Code("85756007", "SCT", "Tissue")
MASS = Code("4147007", "SCT", "Mass")
VOLUME = Code("118565006", "SCT", "Volume")
MEAN_HU = Code("112031", "DCM", "Attenuation Coefficient")
ML = Code("mL", "UCUM", "milliliter")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")


class SpherePipeline(PipelineBase):
    name = "test_spheres"
    version = "0.1.0"
    description = "Test-only: dense spheres in a synthetic CT, with their volumes"
    selector = Selector(modalities=("CT",), min_instances=3)
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        # A test hook: a slow pipeline lets the crash-recovery test kill the node while the job runs.
        time.sleep(float(ctx.params.get("sleep_seconds", 0)))
        volume = inputs.primary.volume()
        threshold = float(ctx.params.get("threshold_hu", 200))
        labels, count = ndimage.label(volume.array > threshold)
        segments, groups = [], []
        study = inputs.primary.study_instance_uid
        for index in range(1, min(count, 200) + 1):
            mask = labels == index
            uid = stable_uid(study, "sphere", str(index))
            segments.append(Segment(index, f"Sphere {index}", TISSUE, MASS, f"Sphere {index}", uid))
            groups.append(
                FindingGroup(
                    tracking_id=f"Sphere {index}",
                    tracking_uid=uid,
                    finding=MASS,
                    measurements=[
                        Measurement(VOLUME, float(mask.sum() * volume.voxel_volume_ml), ML),
                        Measurement(MEAN_HU, float(volume.array[mask].mean()), HU),
                    ],
                    segment=SegmentRef("spheres", index),
                )
            )
        label_map = LabelMap.on_volume(labels.astype(np.uint8), segments, volume, "spheres")
        return PipelineResult(
            produced_by=ProducedBy.CLASSICAL,
            groups=groups,
            label_maps=[label_map] if segments else [],
            text=f"{len(segments)} spheres above {threshold:g} HU",
            details={"count": len(segments), "threshold_hu": threshold},
        )
