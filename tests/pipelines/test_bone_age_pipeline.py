"""bone_age as a pipeline: the contract, the run on a hand-made hand_xray result (without weights: regions
only and "not assessable"; with weights trained in the test: grades, scores, ages), the regions mapped back
to the source radiograph, and end to end chained after hand_xray through ``dicomnode run`` and the served
node (SR and summary dciodvfy-clean, read back with highdicom)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.errors import PipelineInputError
from dicomnode.plugins.api import (
    CommandPipeline,
    Compute,
    DerivedImage,
    Environment,
    EvaluablePipeline,
    ImageSeries,
    NotAssessable,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    RunContext,
    TrainablePipeline,
    WeightsStatus,
)
from dicomnode.testing.synthetic import StudyInfo, write_radiograph
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.calculator import report as calculator_report
from pipelines.bone_age.metrics import box_iou
from pipelines.bone_age.phantoms import HandPhantom, HandSpec, make_hand
from pipelines.bone_age.pipeline import BoneAgePipeline
from pipelines.bone_age.scoring import Standard, parse_grades, score_hand
from tests.conftest import require_tool
from tests.support.tools import dciodvfy_errors

BIRTH, STUDY = "20140301", "20240615"  # 10.29 years
EXTRA = "pipelines.bone_age.pipeline:BoneAgePipeline"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Detector and grader trained in seconds on phantoms: to show the path, not accuracy."""
    pytest.importorskip("torch")
    from tests.pipelines.test_bone_age_models import train_once

    grader = train_once(tmp_path_factory)
    return {name: grader.parent / f"{name}.pt" for name in ("bone_detector", "bone_grader")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _context(weights: dict[str, Path] | None, names: tuple[str, ...] = ("bone_grader",)) -> RunContext:
    statuses = {}
    if weights:
        statuses = {n: WeightsStatus(n, True, "verified", weights[n], _sha(weights[n])) for n in names}
    ctx = RunContext(weights=statuses)
    ctx.state = BoneAgePipeline().setup(ctx)
    return ctx


# A source radiograph larger than the hand: the left hand sits at an offset, as hand_xray crops it.
OFFSET = (40, 60)  # rows, columns


def _case(tmp_path: Path, sex: str = "F") -> tuple[HandPhantom, PipelineInputs, DerivedImage]:
    phantom = make_hand(HandSpec(maturity=0.55, rows=512, columns=400, seed=21))
    r0, c0 = OFFSET
    source = np.full((512 + 2 * r0, 400 + 2 * c0), int(0.1 * 4095), np.uint16)
    source[r0 : r0 + 512, c0 : c0 + 400] = phantom.stored(12)
    info = StudyInfo(patient_sex=sex, patient_birth_date=BIRTH, study_date=STUDY)
    path = write_radiograph(source, tmp_path / "hand.dcm", info=info)
    ds = pydicom.dcmread(path)
    derived = DerivedImage(
        "left_hand",
        phantom.stored(12).astype(np.float32),
        (0.15, 0.15),
        str(ds.SOPInstanceUID),
        (r0, c0, r0 + 512, c0 + 400),
    )
    upstream = PipelineResult(produced_by=ProducedBy.CLASSICAL, derived_images=[derived])
    inputs = PipelineInputs(series=[ImageSeries([ds], [path])], upstream={"hand_xray": upstream})
    return phantom, inputs, derived


def _region_box(group) -> tuple[float, float, float, float]:
    pts = np.asarray(group.regions[0].points)
    return (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())


def _load_time_imports(module: str) -> set[str]:
    """Top-level packages imported when ``module`` loads, following this package's own modules (imports
    inside functions and under TYPE_CHECKING are not followed)."""
    import ast
    import importlib.util

    seen, todo, found = set(), [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        tree = ast.parse(Path(spec.origin).read_text())  # type: ignore[arg-type, union-attr]
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for imported in names:
                found.add(imported.split(".")[0])
                if imported.startswith("pipelines.bone_age"):
                    todo.append(imported)
    return found


def test_contract() -> None:
    pipeline = BoneAgePipeline()
    for protocol in (Pipeline, TrainablePipeline, EvaluablePipeline, CommandPipeline):
        assert isinstance(pipeline, protocol)
    assert [(c.pipeline, c.name) for c in pipeline.consumes] == [("hand_xray", "left_hand")]
    assert pipeline.requirements.compute is Compute.GPU_OPTIONAL
    assert [w.name for w in pipeline.requirements.weights] == ["bone_detector", "bone_grader"]
    ok, reason = pipeline.is_available(Environment())
    assert ok and "cannot grade" in reason
    # importing the pipeline never imports torch: no module it imports at load time does (the model modules
    # are imported inside functions, when weights are loaded or a model is trained)
    assert "torch" not in _load_time_imports("pipelines.bone_age.pipeline")


def test_without_weights_shows_the_regions_and_does_not_grade(tmp_path: Path) -> None:
    phantom, inputs, derived = _case(tmp_path)
    result = BoneAgePipeline().run(inputs, RunContext())
    assert not result.assessed and result.not_assessable_reason == NotAssessable.MODEL_NOT_INSTALLED
    assert "Cannot grade" in result.text and "13 of 13 regions" in result.text
    assert result.overall_produced_by is ProducedBy.CLASSICAL
    assert len(result.groups) == 13 and not any(g.measurements or g.qualitative for g in result.groups)
    r0, c0 = OFFSET
    hits = 0
    for group, bone in zip(result.groups, BONE_KEYS, strict=True):
        region = group.regions[0]
        assert region.sop_instance_uid == derived.source_sop_instance_uid and region.graphic_type == "POLYLINE"
        assert region.points[0] == region.points[-1]  # closed
        x0, y0, x1, y1 = phantom.boxes[bone]
        hits += box_iou(_region_box(group), (x0 + c0, y0 + r0, x1 + c0, y1 + r0)) >= 0.5  # on the source grid
    assert hits >= 10
    assert result.summary_image is not None and result.summary_image.shape[2] == 3
    assert result.details["chronological_age_years"] == pytest.approx(10.29)


def test_with_weights_grades_scores_and_ages(tmp_path: Path, weights: dict[str, Path]) -> None:
    _, inputs, _ = _case(tmp_path)
    ctx = _context(weights)
    result = BoneAgePipeline().run(inputs, ctx)
    assert result.assessed, result.text
    assert result.overall_produced_by is ProducedBy.MIXED
    assert [m.name for m in result.models] == ["bone_grader"] and result.models[0].sha256 == _sha(
        weights["bone_grader"]
    )
    bones = {g.tracking_id.split()[0]: g for g in result.groups[:13]}
    assert list(bones) == list(BONE_KEYS)
    for group in bones.values():
        assert group.produced_by is ProducedBy.LEARNED and group.model == "bone_grader"
        assert {q.name.meaning for q in group.qualitative} == {"TW3 RUS stage", "RUS-CHN grade"}
        assert all(m.produced_by is ProducedBy.CLASSICAL for m in group.measurements)
        assert group.regions and 0.0 < (group.confidence or 0) <= 1.0
    grades = result.details["grades"]
    for standard in Standard:
        # a radiologist re-scoring the reported grades with the calculator gets the reported bone age
        text = ",".join(f"{b}={g}" for b, g in grades[standard.value].items())
        check = calculator_report(score_hand(standard, "F", parse_grades(standard, text)), 3759 / 365.25)
        reported = result.details["standards"][standard.value]
        assert reported["maturity_score"] == check["maturity_score"]
        assert reported["bone_age"] == check["bone_age"]
        assert reported["difference_months"] == check.get("difference_months")
        group = next(g for g in result.groups if g.tracking_id == f"bone age {standard.label}")
        assert group.measurements[0].value == check["maturity_score"]
    chrono = next(g for g in result.groups if g.tracking_id == "chronological age")
    assert chrono.produced_by is ProducedBy.CLASSICAL and chrono.measurements[0].value == pytest.approx(10.29)
    model_age = next(g for g in result.groups if g.tracking_id == "model bone age")
    assert model_age.produced_by is ProducedBy.LEARNED and model_age.measurements[0].unit.value == "a"
    assert "TW3-RUS" in result.text and "RUS-CHN" in result.text and "chronological age 10.3 y" in result.text


def test_detector_weights_find_the_regions(tmp_path: Path, weights: dict[str, Path]) -> None:
    _, inputs, _ = _case(tmp_path)
    result = BoneAgePipeline().run(inputs, _context(weights, ("bone_detector", "bone_grader")))
    assert result.details["regions_by"] == "learned"
    assert [m.name for m in result.models] == ["bone_detector", "bone_grader"]
    assert len(result.details["regions"]) == 13


def test_without_sex_the_grades_are_not_scored(tmp_path: Path, weights: dict[str, Path]) -> None:
    _, inputs, _ = _case(tmp_path, sex="O")
    result = BoneAgePipeline().run(inputs, _context(weights))
    assert not result.assessed and result.not_assessable_reason == NotAssessable.MISSING_INFORMATION
    assert "PatientSex" in result.text and set(result.details["grades"]) == {"tw3", "chn"}
    assert not any(g.measurements for g in result.groups)


def test_a_right_hand_is_not_graded(tmp_path: Path, weights: dict[str, Path]) -> None:
    _, inputs, _ = _case(tmp_path)
    inputs.upstream["hand_xray"].details = {"selected_side": "R", "flags": ["no_left_hand"]}
    result = BoneAgePipeline().run(inputs, _context(weights))
    assert not result.assessed and result.not_assessable_reason == NotAssessable.WRONG_ANATOMY
    assert "left hand" in result.text and not any(g.measurements for g in result.groups)


def test_without_the_upstream_image_it_says_so(tmp_path: Path) -> None:
    _, inputs, _ = _case(tmp_path)
    inputs.upstream = {}
    with pytest.raises(PipelineInputError, match="hand_xray"):
        BoneAgePipeline().run(inputs, RunContext())


# ----------------------------------------------------------------------------------------- end to end
def _radiograph(folder: Path, sex: str = "F") -> Path:
    """A full hand radiograph (forearm to the lower edge, lead "L"), as a modality sends it."""
    phantom = make_hand(HandSpec(maturity=0.5, sex=sex, rows=640, columns=520, seed=4))
    info = StudyInfo(patient_sex=sex, patient_birth_date=BIRTH, study_date=STUDY)
    return write_radiograph(phantom.stored(12), folder / "hand.dcm", info=info)


def _config(tmp_path: Path, weights: dict[str, Path] | None) -> Path:
    lines = ["[pipelines]", f'extra = ["{EXTRA}"]']
    if weights:
        lines.append(f'weights_dir = "{weights["bone_grader"].parent}"')
        lines += ["[pipelines.params.bone_age]", f'bone_grader_sha256 = "{_sha(weights["bone_grader"])}"']
    path = tmp_path / "dicomnode.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _scoords(items) -> list:
    found = []
    for item in items:
        if item.ValueType == "SCOORD":
            found.append(item)
        found += _scoords(item.get("ContentSequence", []))
    return found


def _scoords_by_group(items) -> dict[str, list]:
    """The SCOORDs of each measurement group, by the group's tracking identifier."""
    groups: dict[str, list] = {}
    for item in items:
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if item.ValueType == "CONTAINER" and name is not None and name.CodeValue == "125007":  # Measurement Group
            children = list(item.get("ContentSequence", []))
            tracking = next(c.TextValue for c in children if c.ConceptNameCodeSequence[0].CodeValue == "112039")
            groups[str(tracking)] = _scoords(children)
        else:
            groups.update(_scoords_by_group(item.get("ContentSequence", [])))
    return groups


def test_dicomnode_run_chained_after_hand_xray(tmp_path: Path, weights: dict[str, Path]) -> None:
    require_tool("dciodvfy")
    import highdicom as hd

    from dicomnode.cli import main

    source = pydicom.dcmread(_radiograph(tmp_path / "in"))
    out = tmp_path / "out"
    config = _config(tmp_path, weights)
    assert main(["run", "bone_age", str(tmp_path / "in"), "--output", str(out), "--config", str(config)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert (out / "upstream" / "hand_xray" / "result.json").is_file()  # hand_xray ran first, once
    assert doc["outcome"] == "assessed"
    assert sorted(f["kind"] for f in doc["files"]) == ["SR", "SUMMARY"]
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]
    sr_path = out / next(f["path"] for f in doc["files"] if f["kind"] == "SR")
    sr = hd.sr.srread(sr_path)
    rows, cols = int(source.Rows), int(source.Columns)
    by_group = _scoords_by_group(sr.ContentSequence)
    assert len(_scoords(sr.ContentSequence)) == sum(len(found) for found in by_group.values())  # all in groups
    # one region per bone, in the bone's group (tracking identifier "DP1 distal phalanx I (thumb)", ...)
    bone_groups = {tracking: found for tracking, found in by_group.items() if tracking.split()[0] in BONE_KEYS}
    assert sorted(tracking.split()[0] for tracking in bone_groups) == sorted(BONE_KEYS)
    assert all(len(found) == 1 for found in bone_groups.values())
    regions = [found[0] for found in bone_groups.values()]
    # the other findings (scores, ages) have no region of their own: the encoder draws the outline of the
    # image they were measured on so that viewers show them, the whole image's border, not a bone
    border = [0.0, 0.0, cols, 0.0, cols, rows, 0.0, rows, 0.0, 0.0]
    for tracking, found in by_group.items():
        if tracking not in bone_groups:
            assert all([float(v) for v in r.GraphicData] == border for r in found), tracking
    referenced = {r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions}
    assert referenced == {source.SOPInstanceUID}
    for region in regions:  # on the source image's grid, each a small part of it
        xs, ys = region.GraphicData[0::2], region.GraphicData[1::2]
        assert all(-20 <= x <= cols + 20 for x in xs) and all(-20 <= y <= rows + 20 for y in ys)
        assert (max(xs) - min(xs)) * (max(ys) - min(ys)) < 0.1 * rows * cols
    names = {m["name"] for m in doc["measurements"]}
    assert {"TW3-RUS maturity score", "RUS-CHN (China-05) maturity score", "Chronological age at the study"} <= names


def test_real_infant_hand_png_shows_its_regions(tmp_path: Path) -> None:
    """A real left hand (PNG, no header: no sex, no age) through hand_xray and bone_age without weights."""
    require_tool("dciodvfy")
    from dicomnode.cli import main
    from tests.conftest import shared_data

    png = shared_data("hand", "radinformatics_infant") / "2.png"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "2.png").write_bytes(png.read_bytes())
    out = tmp_path / "out"
    config = _config(tmp_path, None)
    assert main(["run", "bone_age", str(folder), "--output", str(out), "--config", str(config)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["outcome"] == "not_assessable" and "Cannot grade" in doc["text"]
    assert len(doc["details"]["regions"]) == 13 and doc["details"]["localisation_problems"] == []
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]


@pytest.mark.integration
def test_served_node_chains_bone_age_after_hand_xray(tmp_path: Path, weights: dict[str, Path], orthanc) -> None:
    require_tool("storescu")
    from sqlalchemy import select

    from dicomnode.config import Settings
    from dicomnode.db.models import Job, JobKind, JobState
    from dicomnode.node import Node
    from tests.support.net import storescu, wait_for

    path = _radiograph(tmp_path / "in")
    settings = Settings.model_validate(
        {
            "node": {"port": 0, "data_dir": str(tmp_path / "node")},
            "completion": {"series_quiet_seconds": 2, "association_end_grace_seconds": 0.5, "poll_seconds": 0.2},
            "worker": {"poll_seconds": 0.2},
            "dispatch": {"poll_seconds": 0.2},
            "pipelines": {
                "extra": [EXTRA],
                "weights_dir": str(weights["bone_grader"].parent),
                "params": {"bone_age": {"bone_grader_sha256": _sha(weights["bone_grader"])}},
            },
            "destinations": [
                {"name": "PACS", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            ],
        }
    )
    node = Node(settings)
    node.start()
    try:
        storescu([path], node.scp.port)

        def finished() -> list[Job] | None:
            with node.db.session() as s:
                jobs = list(s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE)).all())
                done = len(jobs) == 2 and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)
                return jobs if done else None

        jobs = wait_for(finished, 180, "the hand_xray and bone_age jobs")
    finally:
        node.stop()
    # one job each: bone_age used hand_xray's stored result, it did not run it again
    assert sorted((j.pipeline, j.state) for j in jobs) == [("bone_age", JobState.DONE), ("hand_xray", JobState.DONE)]
    received = [orthanc.download(i["ID"]) for i in orthanc.instances()]
    reports = [ds for ds in received if ds.Modality == "SR"]
    assert len(reports) == 2
    titles = [str(getattr(ds, "SeriesDescription", "")) for ds in reports]
    bone = next(
        ds
        for ds, title in zip(reports, titles, strict=True)
        if "bone_age" in title.lower() or "bone age" in title.lower()
    )
    names = set()
    stack = list(bone.ContentSequence)
    while stack:
        item = stack.pop()
        if item.ValueType == "NUM":
            names.add(item.ConceptNameCodeSequence[0].CodeMeaning)
        stack += list(item.get("ContentSequence", []))
    assert {"TW3-RUS maturity score", "RUS-CHN (China-05) maturity score", "Chronological age at the study"} <= names
