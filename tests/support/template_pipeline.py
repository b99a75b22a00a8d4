"""The minimal pipeline of docs/writing-a-pipeline.md, kept here so that the tests run it end to end.

It measures the volume of everything denser than bone (a threshold parameter) in a CT series, returns one
label map, one finding with its volume, and says "not assessable" when the series is too short to hold a
volume. Copy it into ``pipelines/<your_name>/pipeline.py`` to start a new analysis.
"""

from __future__ import annotations

import numpy as np

from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    LabelMap,
    Measurement,
    NotAssessable,
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

BONE = Code("272673000", "SCT", "Bone structure of body")
TISSUE = Code("85756007", "SCT", "Tissue")
VOLUME = Code("118565006", "SCT", "Volume")
ML = Code("mL", "UCUM", "milliliter")


class DenseVolumePipeline(PipelineBase):
    name = "template_dense"
    version = "1.0.0"
    description = "Volume of tissue denser than a threshold in a CT series (the pipeline template)"
    selector = Selector(modalities=("CT",), image_type_excludes=("LOCALIZER",))
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        series = inputs.primary
        if len(series.datasets) < 3:
            return PipelineResult.not_assessable(
                NotAssessable.OUTSIDE_FIELD_OF_VIEW, f"{len(series.datasets)} slices cannot hold a volume"
            )
        volume = series.volume()  # pixels are read here, not before
        threshold = float(ctx.params.get("threshold_hu", 300))
        mask = (volume.array > threshold).astype(np.uint8)
        label_map = LabelMap.on_volume(mask, [Segment(1, "dense tissue", TISSUE, BONE)], volume, name="dense")
        finding = FindingGroup(
            tracking_id="dense tissue",
            tracking_uid=stable_uid(series.series_instance_uid, self.name, "dense"),
            finding=BONE,
            measurements=[Measurement(VOLUME, float(mask.sum() * volume.voxel_volume_ml), ML)],
            segment=SegmentRef("dense", 1),
        )
        return PipelineResult(
            produced_by=ProducedBy.CLASSICAL,
            groups=[finding],
            label_maps=[label_map],
            text=f"tissue above {threshold:g} HU",
            details={"threshold_hu": threshold},
        )
