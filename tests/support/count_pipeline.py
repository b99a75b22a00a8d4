"""A test-only pipeline as cheap as a pipeline can be (headers only, one SR measurement): tests of the queue
and of scale-out measure the node, not an analysis."""

from __future__ import annotations

from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    Measurement,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    RunContext,
    Selector,
    stable_uid,
)

TISSUE = Code("85756007", "SCT", "Tissue")
COUNT = Code("246205007", "SCT", "Quantity")
IMAGES = Code("{images}", "UCUM", "images")


class CountPipeline(PipelineBase):
    name = "test_count"
    version = "0.1.0"
    description = "Test-only: counts the images of a CT series"
    selector = Selector(modalities=("CT",), min_instances=2)
    produces = frozenset({OutputKind.SR})

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        series = inputs.primary
        count = len(series.datasets)
        group = FindingGroup(
            "images",
            stable_uid(series.series_instance_uid, "count"),
            TISSUE,
            measurements=[Measurement(COUNT, float(count), IMAGES)],
        )
        return PipelineResult(ProducedBy.CLASSICAL, groups=[group], details={"images": count})
