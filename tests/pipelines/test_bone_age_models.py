"""The learned parts of bone_age: the YOLOv3 detector's and the grader's shapes, the filter gate's wiring
(h->_{t-1} and h<-_{t+1}), context across the 13 bones, the loss, a tiny training run on phantoms (losses
fall, manifest checksums, reloaded weights give identical outputs) and the evaluation metrics on cases with
known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dicomnode.plugins.api import RunContext, WeightsStatus
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.metrics import Detection, average_precision, box_iou, grade_accuracy, mad_months, map50
from pipelines.bone_age.phantoms import write_training_set
from pipelines.bone_age.scoring import Standard, class_count

torch = pytest.importorskip("torch")

TINY = {
    "seed": 0,
    "threads": 1,
    "device": "cpu",
    "detector_epochs": 5,
    "detector_width": 0.125,
    "detector_depth": "1,1,1,1,1",
    "detector_input": 128,
    "detector_lr": 0.003,
    "pretrain_epochs": 2,
    "epochs": 6,
    "grader_width": 8,
    "grader_blocks": "1,1,1,1",
    "context_hidden": 16,
    "hidden": 16,
    "crop": 32,
    "batch": 6,
    "lr": 0.003,
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the test machine's cores are shared: more threads only contend


def test_yolov3_at_416_has_three_scales_of_three_anchors() -> None:
    from pipelines.bone_age.detector import DetectorConfig, YoloV3

    model = YoloV3(DetectorConfig(width=0.125)).eval()
    with torch.no_grad():
        maps = model(torch.zeros(2, 1, 416, 416))
    assert [tuple(m.shape) for m in maps] == [(2, 3, 13, 13, 18), (2, 3, 26, 26, 18), (2, 3, 52, 52, 18)]


def test_full_size_detector_is_darknet53_yolov3() -> None:
    from pipelines.bone_age.detector import DetectorConfig, YoloV3

    model = YoloV3(DetectorConfig())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    total = sum(p.numel() for p in model.parameters())
    # Darknet-53 without its classifier: 40.6 M weights for 3 channels in; ours takes one channel
    assert 40.0e6 < backbone < 41.0e6
    assert 60.0e6 < total < 62.5e6  # YOLOv3 is 61.9 M with 80 classes; 13 classes have smaller heads


def _grader(**kwargs: object):
    from pipelines.bone_age.grader import BoneAgeGrader, GraderConfig

    cfg = GraderConfig(**{"width": 8, "blocks": (1, 1, 1, 1), "context_hidden": 8, "hidden": 8, "crop": 32, **kwargs})
    return BoneAgeGrader(cfg).eval()


def test_grader_outputs_a_grade_per_bone_and_standard_and_an_age() -> None:
    model = _grader()
    with torch.no_grad():
        out = model(torch.randn(3, 13, 1, 32, 32))
    assert out.logits["tw3"].shape == (3, 13, 9) and out.logits["chn"].shape == (3, 13, 15)
    assert out.age.shape == (3,) and out.gate.shape == (3, 13, 64)
    for standard in Standard:
        prob = torch.softmax(out.logits[standard.value], -1)
        for b, bone in enumerate(BONE_KEYS):
            n = class_count(standard, bone)
            assert torch.allclose(prob[:, b, :n].sum(-1), torch.ones(3))  # only the bone's own grades
            assert torch.all(prob[:, b, n:] == 0)
    assert float(out.step_weights.sum()) == pytest.approx(1.0)


def test_filter_gate_reads_the_previous_forward_and_next_backward_state() -> None:
    from pipelines.bone_age.grader import FilterGate

    gate = FilterGate(feature_dim=6, context_hidden=4)
    x = torch.randn(1, 13, 6)
    fwd, bwd = torch.randn(1, 13, 4), torch.randn(1, 13, 4)
    _, g = gate(x, fwd, bwd)
    for t in (0, 5, 12):
        moved_fwd, moved_bwd = fwd.clone(), bwd.clone()
        moved_fwd[0, t] += 3.0
        moved_bwd[0, t] += 3.0
        _, g_f = gate(x, moved_fwd, bwd)
        _, g_b = gate(x, fwd, moved_bwd)
        changed_f = [s for s in range(13) if not torch.allclose(g_f[0, s], g[0, s])]
        changed_b = [s for s in range(13) if not torch.allclose(g_b[0, s], g[0, s])]
        assert changed_f == ([t + 1] if t < 12 else [])  # h->_t gates x_{t+1}
        assert changed_b == ([t - 1] if t > 0 else [])  # h<-_t gates x_{t-1}
    gated, g = gate(x, fwd, bwd)
    assert torch.all((g > 0) & (g < 1)) and torch.allclose(gated, g * x)


def test_every_bone_is_graded_in_the_context_of_the_others() -> None:
    model = _grader()
    crops = torch.randn(1, 13, 1, 32, 32)
    with torch.no_grad():
        base = model(crops)
        changed = crops.clone()
        changed[0, 12] = torch.randn(1, 32, 32)  # only the radius
        other = model(changed)
    assert not torch.allclose(base.logits["tw3"][0, 0], other.logits["tw3"][0, 0])  # DP1, at the far end


def test_loss_weights_alpha_for_grades_and_beta_for_age() -> None:
    from pipelines.bone_age.grader import LossWeights, grader_loss

    model = _grader(standards=("tw3",))
    with torch.no_grad():
        out = model(torch.randn(2, 13, 1, 32, 32))
    labels = {"tw3": torch.full((2, 13), 3, dtype=torch.long)}
    age = torch.tensor([8.0, math.nan])
    only_age = grader_loss(out, labels, age, LossWeights(alpha=0.0, beta=1.0))
    assert float(only_age) == pytest.approx(abs(float(out.age[0]) - 8.0), rel=1e-5)  # the unknown age is left out
    only_grades = grader_loss(out, labels, age, LossWeights(alpha=1.0, beta=0.0))
    ce = torch.nn.functional.cross_entropy(out.logits["tw3"].reshape(-1, 9), labels["tw3"].reshape(-1))
    assert float(only_grades) == pytest.approx(float(ce), rel=1e-5)


# ----------------------------------------------------------------------------------------- training
def train_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny detector and grader trained on five phantoms, once per test session (the pipeline tests use
    the same files); returns the grader's path."""
    from pipelines.bone_age.pipeline import BoneAgePipeline

    root = tmp_path_factory.getbasetemp() / "bone_age_tiny"
    grader = root / "weights" / "bone_grader.pt"
    if not grader.is_file():
        torch.set_num_threads(1)
        write_training_set(root / "data", 5, seed=1)
        BoneAgePipeline().train(root / "data", root / "weights", TINY)
    return grader


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    path = train_once(tmp_path_factory)
    return path.parent.parent / "data", path, json.loads((path.parent / "training_log.json").read_text())


def test_training_losses_fall(trained: tuple[Path, Path, dict]) -> None:
    _, _, log = trained
    for stage in ("detector_loss", "pretrain_loss", "grader_loss"):
        losses = log[stage]
        assert losses[-1] < 0.85 * losses[0], (stage, losses)
    assert log["standards"] == ["tw3", "chn"]


def test_manifest_holds_the_weights_checksums(trained: tuple[Path, Path, dict]) -> None:
    import hashlib

    _, path, _ = trained
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert set(manifest["files"]) == {"bone_detector.pt", "bone_grader.pt"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((path.parent / name).read_bytes()).hexdigest() == sha


def test_saved_and_reloaded_grader_gives_identical_outputs(tmp_path: Path) -> None:
    from pipelines.bone_age import checkpoints
    from pipelines.bone_age.dataset import load_cases
    from pipelines.bone_age.train import grader_config, samples_for, train_grader

    write_training_set(tmp_path / "data", 3, seed=4)
    cases = load_cases(tmp_path / "data")
    samples = samples_for(cases, {c.id: c.image() for c in cases}, None)
    options = {**TINY, "epochs": 2}
    model, _ = train_grader(samples, grader_config(options, ["tw3", "chn"]), options, np.random.default_rng(0))
    checkpoints.save_grader(model, tmp_path / "g.pt")
    again = checkpoints.load_grader(tmp_path / "g.pt")
    crops = torch.randn(2, 13, 1, 32, 32)
    with torch.no_grad():
        a, b = model.eval()(crops), again(crops)
    for s in ("tw3", "chn"):
        assert torch.equal(a.logits[s], b.logits[s])
    assert torch.equal(a.age, b.age)


def test_setup_loads_the_verified_weights(trained: tuple[Path, Path, dict]) -> None:
    from pipelines.bone_age.inference import Models
    from pipelines.bone_age.pipeline import BoneAgePipeline

    _, path, _ = trained
    weights = {
        name: WeightsStatus(name, True, "verified", path.parent / f"{name}.pt", "0" * 64)
        for name in ("bone_detector", "bone_grader")
    }
    state = BoneAgePipeline().setup(RunContext(weights=weights))
    assert isinstance(state, Models) and state.detector is not None and state.grader is not None
    assert [m.name for m in state.infos] == ["bone_detector", "bone_grader"]
    missing = BoneAgePipeline().setup(RunContext(weights={"bone_grader": WeightsStatus("bone_grader", False, "x")}))
    assert missing is None


# ----------------------------------------------------------------------------------------- metrics
def test_metrics_on_known_answers() -> None:
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert mad_months([10.0, 12.0], [9.0, 12.5]) == pytest.approx(9.0)
    assert grade_accuracy(
        [{"DP1": 3, "MC1": 2}, {"DP1": 4, "MC1": 2}], [{"DP1": 3, "MC1": 2}, {"DP1": 3, "MC1": 2}]
    ) == {
        "DP1": 0.5,
        "MC1": 1.0,
    }
    truth = {0: (0, 0, 10, 10), 1: (0, 0, 10, 10)}
    hit, miss = (0, 0, 10, 10), (50, 50, 60, 60)
    # ranked: hit (0.9), miss (0.8), hit (0.7): precision 1 at recall 0.5, 2/3 at recall 1 -> AP = 0.5 + 0.5 * 2/3
    ranked = [Detection(0, "DP1", hit, 0.9), Detection(1, "DP1", miss, 0.8), Detection(1, "DP1", hit, 0.7)]
    assert average_precision(ranked, truth) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a second detection of an already found bone is a false positive
    doubled = [Detection(0, "DP1", hit, 0.9), Detection(0, "DP1", hit, 0.8)]
    assert average_precision(doubled, truth) == pytest.approx(0.5)
    result = map50(ranked, [{"DP1": hit}, {"DP1": hit}], ["DP1", "DP3"])
    assert result["DP3"] != result["DP3"]  # NaN: no true DP3, left out of the mean
    assert result["mAP50"] == pytest.approx(result["DP1"])


def test_evaluate_reports_known_answers(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """Cases built so the answers are known: labelled boxes equal to what the classical localisation finds
    for two cases and moved off the hand for two (AP50 0.5 for every bone); labelled ages one year above the
    grader's own model age (MAD 12 months); labelled DP1 stages equal to the grader's on three cases and one
    off on the fourth (DP1 accuracy 0.75)."""
    from pipelines.bone_age.dataset import load_cases
    from pipelines.bone_age.evaluate import evaluate
    from pipelines.bone_age.inference import Models, find_regions, grade
    from pipelines.bone_age.localise import localise

    _, path, _ = trained
    data = tmp_path / "eval"
    write_training_set(data, 8, seed=8, rows=320, columns=250)
    from pipelines.bone_age import checkpoints

    grader = checkpoints.load_grader(path)
    doc = json.loads((data / "annotations.json").read_text())
    # four cases whose regions were all found, none placed by proportion (those rank lower in the AP)
    chosen = []
    for case, loaded in zip(doc["cases"], load_cases(data), strict=True):
        found = localise(loaded.image())
        if found.complete and not any(r.estimated for r in found.regions.values()):
            chosen.append((case, loaded.image(), found))
    assert len(chosen) >= 4
    doc["cases"] = [case for case, _, _ in chosen[:4]]
    for k, (case, image, found) in enumerate(chosen[:4]):
        shift = 0.0 if k < 2 else 1000.0
        case["boxes"] = {b: [v + shift for v in found.regions[b].box] for b in BONE_KEYS}
        grading = grade(grader, image, find_regions(None, image).boxes())
        case["age_years"] = grading.model_age_years + 1.0
        stage = grading.classes[Standard.TW3]["DP1"]
        case["grades"] = {"tw3": {"DP1": "ABCDEFGHI"[stage if k != 1 else (stage + 1) % 9]}}
    (data / "annotations.json").write_text(json.dumps(doc))
    no_weights = evaluate(data, {}, RunContext())
    assert no_weights["localisation"] == "classical" and no_weights["not_localised"] == 0
    assert all(v == pytest.approx(0.5) for v in no_weights["detection_ap50"].values()), no_weights
    assert "not installed" in no_weights["grading"]
    ctx = RunContext()
    ctx.state = Models(grader=grader)
    report = evaluate(data, {}, ctx)
    assert report["mad_months"]["model"] == {"value": pytest.approx(12.0, abs=0.01), "n": 4}
    assert report["grade_accuracy"]["tw3"]["DP1"] == pytest.approx(0.75)  # 3 of 4 cases labelled as graded


def test_rsna_style_ages_join_the_annotated_cases(tmp_path: Path) -> None:
    from pipelines.bone_age.dataset import load_cases

    write_training_set(tmp_path, 2, seed=3)
    (tmp_path / "images" / "rsna7.png").write_bytes((tmp_path / "images" / "case000.png").read_bytes())
    (tmp_path / "boneage.csv").write_text("id,boneage,male\ncase000,999,True\nrsna7,126,False\n")
    cases = {c.id: c for c in load_cases(tmp_path)}
    assert set(cases) == {"case000", "case001", "rsna7"}
    assert cases["case000"].age_years != pytest.approx(999 / 12)  # the annotated case keeps its own labels
    rsna = cases["rsna7"]
    assert rsna.age_years == pytest.approx(10.5) and rsna.sex == "F"
    assert rsna.boxes is None and rsna.grades == {}
