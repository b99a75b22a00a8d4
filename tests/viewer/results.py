"""Our results as a radiologist's viewer gets them: a pipeline run on its phantom by `dicomnode run`.

The CT (or other source series) and the SR, SEG and summary image the run writes are loaded into the bench's
Orthanc, all in the source study, exactly as the node delivers them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom import Dataset

from dicomnode.cli import main as dicomnode_main
from tools.viewer_bench.bench import dicom_files

SC_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
}


@dataclass(frozen=True)
class PipelineCase:
    """A pipeline and its phantom: ``write_inputs(workdir)`` writes the source series into ``workdir/source``
    (and priors wherever it likes) and returns the extra `dicomnode run` arguments (``--prior DIR``)."""

    pipeline: str
    write_inputs: Callable[[Path], list[str]]
    config: str = ""  # TOML for `dicomnode run --config`, e.g. to register a test-only pipeline

    def __str__(self) -> str:
        return self.pipeline


@dataclass
class PipelineOutputs:
    pipeline: str
    source: list[Dataset]  # the analysed images, in the order of their InstanceNumber
    sr: Dataset
    segs: list[Dataset] = field(default_factory=list)
    summary: Dataset | None = None

    @property
    def study_instance_uid(self) -> str:
        return str(self.source[0].StudyInstanceUID)

    def source_image(self, sop_instance_uid: str) -> Dataset:
        return next(ds for ds in self.source if ds.SOPInstanceUID == sop_instance_uid)


def run_pipeline(case: PipelineCase, workdir: Path) -> tuple[PipelineOutputs, list[Path]]:
    """Write the phantom, run ``dicomnode run`` on it, and return the outputs and every file to load."""
    source_dir, out_dir, config = workdir / "source", workdir / "out", workdir / "config.toml"
    extra = case.write_inputs(workdir)
    options = []
    if case.config:
        config.write_text(case.config)
        options = ["--config", str(config)]
    code = dicomnode_main(["run", *options, case.pipeline, str(source_dir), *extra, "--output", str(out_dir)])
    if code != 0:
        raise AssertionError(f"dicomnode run {case.pipeline} exited with {code}")
    written = [out_dir / item["path"] for item in json.loads((out_dir / "result.json").read_text())["files"]]
    datasets = [pydicom.dcmread(path) for path in written]
    srs = [ds for ds in datasets if ds.Modality == "SR"]
    if len(srs) != 1:
        raise AssertionError(f"{case.pipeline} wrote {len(srs)} SRs, expected one")
    source: list[Dataset] = sorted(
        (pydicom.dcmread(p) for p in dicom_files([source_dir])), key=lambda ds: int(ds.InstanceNumber)
    )
    outputs = PipelineOutputs(
        pipeline=case.pipeline,
        source=source,
        sr=srs[0],
        segs=[ds for ds in datasets if ds.Modality == "SEG"],
        summary=next((ds for ds in datasets if ds.SOPClassUID in SC_SOP_CLASSES), None),
    )
    return outputs, [workdir / "source", *(p for p in workdir.iterdir() if p.name not in ("source", "out")), *written]
