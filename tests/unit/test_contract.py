"""Contract v2 end to end through `dicomnode run`: cines in three storage layouts with per-frame values and a
cine SEG, overlapping label maps with 3D regions and a confidence, chains whose upstream runs once, the
not-assessable outcome, setup once per worker, and the layering of the contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicomnode.cli import main
from dicomnode.config import Settings
from dicomnode.plugins.registry import Registry
from dicomnode.runner.host import PipelineHost
from dicomnode.testing.cine import CineLayout, write_cine
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from tests.support.contract_pipelines import SetupCounter
from tests.support.phantoms import cine_phantom, write_sphere_study
from tests.support.tools import dciodvfy_errors

EXTRA = [
    f"tests.support.contract_pipelines:{name}"
    for name in (
        "CinePipeline",
        "CineStudyPipeline",
        "OverlapPipeline",
        "MaskUpstream",
        "MaskDownstream",
        "SetupCounter",
        "RefusingPipeline",
        "LargestSeriesStudyPipeline",
    )
]
PIXEL_MM = (1.25, 1.25)


def _config(tmp_path: Path, params: dict[str, dict[str, object]] | None = None) -> Path:
    lines = ["[pipelines]", f"extra = {json.dumps(EXTRA)}"]
    for pipeline, values in (params or {}).items():
        lines.append(f"[pipelines.params.{pipeline}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(tmp_path: Path, pipeline: str, folder: Path, out: str = "out", **params: object) -> dict:
    config = _config(tmp_path, {pipeline: params} if params else None)
    assert main(["run", "--config", str(config), pipeline, str(folder), "--output", str(tmp_path / out)]) == 0
    return json.loads((tmp_path / out / "result.json").read_text())


def _files(doc: dict, root: Path, kind: str) -> list[Path]:
    return [root / f["path"] for f in doc["files"] if f["kind"] == kind]


# ------------------------------------------------------------------------------------------- cine
@pytest.mark.parametrize("layout", list(CineLayout))
def test_cine_in_every_layout_gives_per_frame_values_and_a_cine_seg(tmp_path: Path, layout: CineLayout) -> None:
    values, masks = cine_phantom(positions=3, times=20)
    write_cine(values, tmp_path / "cine", layout=layout, pixel_spacing=PIXEL_MM, seed=3)
    pipeline = "test_cine_study" if layout is CineLayout.SERIES_PER_POSITION else "test_cine"
    doc = _run(tmp_path, pipeline, tmp_path / "cine")
    out = tmp_path / "out"
    assert doc["details"]["shape"] == [3, 20, 48, 48]
    assert doc["details"]["time_order"] == "trigger time"  # files are written out of time order
    expected = masks[1].reshape(20, -1).sum(axis=1) * PIXEL_MM[0] * PIXEL_MM[1]
    measured = [m["value"] for m in doc["measurements"]]
    np.testing.assert_allclose(measured, expected)
    # Each per-frame value names its source frame; the SR references that very frame.
    sr = _files(doc, out, "SR")[0]
    report = hd.sr.srread(sr).content
    groups = [*report.get_planar_roi_measurement_groups(), *report.get_volumetric_roi_measurement_groups()]
    by_id = {g.tracking_identifier: g for g in groups if g.get_measurements()}
    assert len(by_id) == 20
    for t in range(20):
        referenced = by_id[f"frame {t + 1}"].get_measurements()[0].referenced_images[0]
        assert referenced.referenced_sop_instance_uid == doc["measurements"][t]["source"]["sop_instance_uid"]
    # The cine SEG: one instance per time point, each the phantom's disc at every position of that phase.
    segs = sorted((hd.seg.segread(p) for p in _files(doc, out, "SEG")), key=lambda s: int(s.InstanceNumber))
    series_per_time = 3 if layout is CineLayout.SERIES_PER_POSITION else 1
    assert len(segs) == 20 * series_per_time
    assert len({str(s.SeriesInstanceUID) for s in segs}) == 1
    sources = {(s["sop_instance_uid"], s["frame_number"]) for s in (m["source"] for m in doc["measurements"])}
    assert len(sources) == 20
    for path in [*_files(doc, out, "SEG"), sr]:
        assert dciodvfy_errors(path) == [], path.name


def test_cine_seg_frames_point_at_the_right_phase_of_an_enhanced_multiframe(tmp_path: Path) -> None:
    values, _ = cine_phantom(positions=3, times=8)
    (path,) = write_cine(values, tmp_path / "cine", layout=CineLayout.ENHANCED, pixel_spacing=PIXEL_MM)
    doc = _run(tmp_path, "test_cine", tmp_path / "cine")
    source = pydicom.dcmread(path)
    for seg_path in _files(doc, tmp_path / "out", "SEG"):
        seg = hd.seg.segread(seg_path)
        for item in seg.PerFrameFunctionalGroupsSequence:
            frame = int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
            group = source.PerFrameFunctionalGroupsSequence[frame - 1]
            # the referenced source frame lies where the SEG frame lies, at the SEG's own time point
            assert list(group.PlanePositionSequence[0].ImagePositionPatient) == list(
                item.PlanePositionSequence[0].ImagePositionPatient
            )
            t = int(group.FrameContentSequence[0].TemporalPositionIndex) - 1
            assert re.search(rf"\bt{t + 1}\b", seg.ContentDescription)


def test_a_selector_counts_time_points_not_instances(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values, _ = cine_phantom(positions=4, times=3)  # 12 instances, but only 3 time points
    write_cine(values, tmp_path / "cine", pixel_spacing=PIXEL_MM)
    config = _config(tmp_path)
    status = main(
        ["run", "--config", str(config), "test_cine", str(tmp_path / "cine"), "--output", str(tmp_path / "o")]
    )
    assert status == 2
    assert "no series that test_cine accepts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- 3D findings
def test_overlapping_label_maps_and_a_scoord3d_finding_with_confidence(tmp_path: Path) -> None:
    write_sphere_study(tmp_path / "ct")
    doc = _run(tmp_path, "test_overlap", tmp_path / "ct")
    out = tmp_path / "out"
    segs = {str(pydicom.dcmread(p).SeriesDescription): p for p in _files(doc, out, "SEG")}
    assert set(segs) == {"test_overlap SEG bones", "test_overlap SEG fractures"}
    bones = hd.seg.segread(segs["test_overlap SEG bones"])
    fractures = hd.seg.segread(segs["test_overlap SEG fractures"])
    assert bones.SeriesInstanceUID != fractures.SeriesInstanceUID
    assert fractures.get_segment_description(1).segment_label == "fracture region"
    sr_path = _files(doc, out, "SR")[0]
    report = hd.sr.srread(sr_path).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    # one group per kind of evidence: the SEG segment, the box surface, the centre point
    assert len(volumetric) == 3 and {g.tracking_identifier for g in volumetric} == {"fracture 1"}
    segment = volumetric[0].referenced_segment
    assert segment is not None and segment.referenced_sop_instance_uid == fractures.SOPInstanceUID
    values = {m.name.value: m.value for m in volumetric[0].get_measurements()}
    assert values["111012"] == pytest.approx(87.5)  # Certainty of Finding, percent
    surfaces = [g.roi for g in volumetric[1:]]
    assert [s.graphic_type.value for s in surfaces] == ["POLYGON", "POINT"]
    centre = np.asarray(doc["details"]["centre_mm"])
    np.testing.assert_allclose(surfaces[1].graphic_data[0], centre)
    box = np.asarray(doc["details"]["box_mm"])
    corners = np.concatenate(surfaces[0].graphic_data)
    np.testing.assert_allclose(corners.min(axis=0), box.min(axis=0))
    np.testing.assert_allclose(corners.max(axis=0), box.max(axis=0))
    assert doc["produced_by"] == "mixed"  # learned finding, classical volume
    assert doc["measurements"][0]["produced_by"] == "classical"
    assert doc["findings"][0]["produced_by"] == "learned"
    dump = subprocess.run(["dsrdump", "+Pl", str(sr_path)], capture_output=True, text=True, check=True).stdout
    assert "weights_sha256=" + "ab" * 32 in dump
    for path in [*segs.values(), sr_path]:
        assert dciodvfy_errors(path) == [], path.name


# ------------------------------------------------------------------------------------------- chains
def test_a_chain_runs_its_upstream_once_and_passes_the_stored_image(tmp_path: Path) -> None:
    files, _, _ = write_sphere_study(tmp_path / "ct")
    count = tmp_path / "runs.txt"
    config = _config(
        tmp_path, {"test_upstream": {"count_file": str(count)}, "test_downstream": {"count_file": str(count)}}
    )
    status = main(
        ["run", "--config", str(config), "test_downstream", str(tmp_path / "ct"), "--output", str(tmp_path / "o")]
    )
    assert status == 0
    assert len(count.read_text().splitlines()) == 2  # upstream once, downstream once
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    upstream = json.loads((tmp_path / "o" / "upstream" / "test_upstream" / "result.json").read_text())
    mask = np.load(tmp_path / "o" / "upstream" / "test_upstream" / upstream["derived_images"][0]["path"])
    mid = pydicom.dcmread(files[upstream["details"]["slice"]])
    expected = float((mid.pixel_array > 300).sum()) * float(mid.PixelSpacing[0]) * float(mid.PixelSpacing[1])
    assert mask.sum() * float(mid.PixelSpacing[0]) * float(mid.PixelSpacing[1]) == pytest.approx(expected)
    assert doc["details"]["area_mm2"] == pytest.approx(expected)


def test_a_refusing_upstream_makes_the_chain_not_assessable_without_running_it(tmp_path: Path) -> None:
    write_sphere_study(tmp_path / "ct")
    count = tmp_path / "runs.txt"
    config = _config(
        tmp_path,
        {"test_upstream": {"count_file": str(count), "refuse": True}, "test_downstream": {"count_file": str(count)}},
    )
    assert (
        main(["run", "--config", str(config), "test_downstream", str(tmp_path / "ct"), "--output", str(tmp_path / "o")])
        == 0
    )
    assert len(count.read_text().splitlines()) == 1  # only the upstream ran
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert doc["outcome"] == "not_assessable"
    assert doc["not_assessable_reason"]["value"] == "na-upstream"
    assert "test_upstream could not assess" in doc["text"]


# ------------------------------------------------------------------------------------------- not assessable
def test_not_assessable_is_a_short_sr_without_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sphere_study(tmp_path / "ct")
    doc = _run(tmp_path, "test_refusing", tmp_path / "ct")
    assert "NOT ASSESSABLE: Anatomy not fully in the field of view" in capsys.readouterr().out
    assert doc["outcome"] == "not_assessable" and doc["measurements"] == []
    assert {f["kind"] for f in doc["files"]} == {"SR", "SUMMARY"}  # no SEG of nothing
    sr_path = _files(doc, tmp_path / "out", "SR")[0]
    sr = pydicom.dcmread(sr_path)
    dump = subprocess.run(["dsrdump", "+Pl", str(sr_path)], capture_output=True, text=True, check=True).stdout
    report = hd.sr.srread(sr_path).content
    groups = [*report.get_planar_roi_measurement_groups(), *report.get_image_measurement_groups()]
    assert groups and not [m for g in groups for m in g.get_measurements()]  # no number anywhere
    assert '"Not assessable"' in dump and "only 12 slices" in dump
    declared = [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence]
    assert declared == ["99DCMNODE"]
    # OHIF drops content items whose concept has only a Long Code Value: every code fits Code Value
    assert "Long Code Value" not in dump and "(0008,0119)" not in str(sr)
    assert dciodvfy_errors(sr_path) == []


def test_a_local_code_longer_than_code_value_is_refused_when_defined() -> None:
    from dicomnode.plugins.api import local_code

    assert local_code("na-reason", "Reason not assessable").value == "na-reason"
    with pytest.raises(ValueError, match="16 characters"):
        local_code("not-assessable-reason", "Reason not assessable")


# ------------------------------------------------------------------------------------------- models
def test_setup_runs_once_per_configuration_and_its_state_reaches_run(tmp_path: Path) -> None:
    calls = tmp_path / "setup.txt"
    settings = Settings.model_validate(
        {"worker": {"device": "cpu"}, "pipelines": {"params": {"test_setup": {"setup_file": str(calls)}}}}
    )
    host = PipelineHost(settings, Registry())
    pipeline = SetupCounter()
    first = host.context(pipeline, work_dir=None, job_id=1)
    second = host.context(pipeline, work_dir=None, job_id=2)
    assert first.state is second.state and first.state["device"] == "cpu"
    assert not first.state["weights_ok"] and "net_sha256 unset" in first.weights["net"].reason
    assert len(calls.read_text().splitlines()) == 1
    host.context(pipeline, work_dir=None, extra_params={"other": 1})  # a changed configuration sets up again
    assert len(calls.read_text().splitlines()) == 2


def test_pipelines_command_says_why_a_pipeline_is_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    extra = ["tests.unit.test_registry:_LearnedOnly", "tests.support.contract_pipelines:MaskDownstream"]
    config.write_text(
        f'[pipelines]\nextra = {json.dumps(extra)}\nweights_dir = "{tmp_path}"\n'
        f'[pipelines.params.learned_only]\nnet_sha256 = "{"0" * 64}"\n',
        encoding="utf-8",
    )
    assert main(["pipelines", "--config", str(config)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "unavailable" in lines["learned_only"] and "net.pt not found" in lines["learned_only"]
    assert (
        "unavailable" in lines["test_downstream"]
        and "test_upstream, which is not installed" in lines["test_downstream"]
    )


# ------------------------------------------------------------------------------------------- layering
def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    return set(out.stdout.split())


def test_layers_point_one_way() -> None:
    contract = _modules_after("import dicomnode.plugins.api")
    assert not {m for m in contract if m.startswith(("dicomnode.runner", "dicomnode.node", "dicomnode.encode"))}
    assert not {m for m in contract if m.startswith(("dicomnode.scp", "dicomnode.db", "pynetdicom", "highdicom"))}
    encoder = _modules_after("import dicomnode.encode")
    assert not {m for m in encoder if m.startswith(("dicomnode.runner", "dicomnode.node", "dicomnode.scp"))}
    standalone = _modules_after("import dicomnode.runner.standalone")
    assert not {m for m in standalone if m.startswith(("dicomnode.scp", "dicomnode.node", "pynetdicom"))}
    runtime = _modules_after("import pipelines.hand_xray.pipeline, pipelines.lung_longitudinal.pipeline")
    assert "dicomnode.testing.synthetic" not in runtime


# ------------------------------------------------------------------------------------------- the template
def test_the_documented_template_loads_and_runs_end_to_end(tmp_path: Path) -> None:
    from dicomnode.plugins.registry import load_reference

    pipeline = load_reference("tests.support.template_pipeline:DenseVolumePipeline")  # validated on load
    assert pipeline.name == "template_dense"
    _, volumes, _ = write_sphere_study(tmp_path / "ct")
    config = tmp_path / "t.toml"
    config.write_text('[pipelines]\nextra = ["tests.support.template_pipeline:DenseVolumePipeline"]\n')
    args = ["run", "--config", str(config), "template_dense", str(tmp_path / "ct"), "--output", str(tmp_path / "o")]
    assert main(args) == 0
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert doc["outcome"] == "assessed"
    assert doc["measurements"][0]["value"] == pytest.approx(sum(volumes))  # both spheres are > 300 HU
    for path in _files(doc, tmp_path / "o", "SEG") + _files(doc, tmp_path / "o", "SR"):
        assert dciodvfy_errors(path) == []


# ------------------------------------------------------------------------------------------- lazy loading
def test_a_study_level_pipeline_reads_the_pixels_of_the_series_it_uses_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomnode.plugins.api as api

    info = StudyInfo()
    big, _, _ = write_sphere_study(tmp_path / "study" / "big", info=info)
    small = write_ct_series(np.zeros((4, 16, 16)), tmp_path / "study" / "localizer", info=info, series_number=2)
    reads: list[str] = []
    original = api.read_full

    def counting(path: Path) -> pydicom.Dataset:
        reads.append(str(path))
        return original(path)

    monkeypatch.setattr(api, "read_full", counting)
    doc = _run(tmp_path, "test_largest_series", tmp_path / "study")
    assert doc["details"]["slices"] == len(big)
    assert sorted(reads) == sorted(str(p) for p in big)  # the localizer's pixels were never read
    assert not set(reads) & {str(p) for p in small}
