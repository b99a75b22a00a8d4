"""The learned path of lung_longitudinal: train a tiny normal-lung network, load it once in ``setup`` from the
verified weights the node reports (contract v2), run it, and take the classical path, saying why, when the node
reports the weights unusable."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pydicom
import pytest

from dicomnode.plugins.api import Environment, ImageSeries, PipelineInputs, ProducedBy, RunContext, WeightsStatus
from dicomnode.plugins.weights import verify_file
from dicomnode.synthetic import write_ct_series
from pipelines.lung_longitudinal.normal import BANDS, normal_by_band
from pipelines.lung_longitudinal.phantoms import LesionSpec, make_chest_phantom
from pipelines.lung_longitudinal.pipeline import LungLongitudinalPipeline

torch = pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

SHAPE, SPACING = (24, 64, 64), (6.0, 5.0, 5.0)


def _phantom(seed: int):
    lesion = LesionSpec("lesion", (70.0, 130.0, 100.0), 15.0, 20.0)
    return make_chest_phantom(SHAPE, SPACING, [lesion], seed=seed)


def _normal_truth(phantom) -> np.ndarray:
    return normal_by_band(phantom.hu, phantom.left_lung | phantom.right_lung, BANDS["well_aerated"])


def _dice(model, phantom) -> float:
    from pipelines.lung_longitudinal import model as net

    truth = _normal_truth(phantom)
    model.eval()
    pred = net.predict_normal(model, phantom.hu, np.ones_like(truth))
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    for seed in (1, 2):
        phantom = _phantom(seed)
        case = data / f"case{seed}"
        case.mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(phantom.hu), str(case / "ct.nii.gz"))
        sitk.WriteImage(
            sitk.GetImageFromArray(_normal_truth(phantom).astype(np.uint8)), str(case / "normal_mask.nii.gz")
        )
    out = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: more threads only contend on a shared machine
    try:
        path = LungLongitudinalPipeline().train(data, out, {"iterations": "60", "batch": "4", "base": "8", "seed": "0"})
    finally:
        torch.set_num_threads(threads)
    return path, json.loads((out / "training_log.json").read_text())


def test_training_learns(trained):
    from pipelines.lung_longitudinal import model as net

    path, log = trained
    losses = [h["loss"] for h in log["history"]]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert log["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    held_out = _phantom(7)
    torch.manual_seed(0)
    untrained = net.build_unet(8)
    assert _dice(net.load(path), held_out) > max(0.8, _dice(untrained, held_out) + 0.2)


def _series(tmp_path) -> ImageSeries:
    paths = write_ct_series(_phantom(9).hu, tmp_path / "ct", spacing=SPACING)
    return ImageSeries([pydicom.dcmread(p) for p in paths], paths)


def _context(status: WeightsStatus, sha: str) -> RunContext:
    return RunContext(params={"normal_lung_sha256": sha}, weights={"normal_lung": status})


def test_verified_weights_give_learned_path(trained, tmp_path):
    path, log = trained
    status = WeightsStatus("normal_lung", True, "verified", verify_file(path, log["sha256"]), log["sha256"])
    pipeline = LungLongitudinalPipeline()
    ctx = _context(status, log["sha256"])
    assert "ready" in pipeline.is_available(Environment(weights={"normal_lung": status}))[1]
    ctx.state = pipeline.setup(ctx)  # loaded once per worker
    assert ctx.state is not None
    series = _series(tmp_path)
    result = pipeline.run(PipelineInputs([series]), ctx)
    assert result.produced_by is ProducedBy.LEARNED and result.overall_produced_by is ProducedBy.MIXED
    assert result.details["produced_by"] == "learned"
    assert [m.name for m in result.models] == ["normal_lung"] and result.models[0].sha256 == log["sha256"]
    quantification = result.groups[0]
    assert quantification.model == "normal_lung"
    paths = {m.name.meaning: m.produced_by for m in quantification.measurements}
    assert paths["Lung volume"] is ProducedBy.CLASSICAL and paths["Abnormal lung volume"] is None  # group's path
    assert result.details["time_point"]["roi_ml"] > 0
    # the same weights on the classical path give a different normal lung only where the network differs
    classical = pipeline.run(PipelineInputs([series]), RunContext())
    assert classical.produced_by is ProducedBy.CLASSICAL
    assert classical.details["time_point"]["roi_ml"] == result.details["time_point"]["roi_ml"]


def test_unusable_weights_fall_back_to_classical(trained, tmp_path):
    path, _ = trained
    status = WeightsStatus("normal_lung", False, f"weights file {path} has sha256 ab12..., expected 0000...")
    pipeline = LungLongitudinalPipeline()
    ctx = _context(status, "0" * 64)
    ctx.state = pipeline.setup(ctx)
    assert ctx.state is None
    result = pipeline.run(PipelineInputs([_series(tmp_path)]), ctx)
    assert result.produced_by is ProducedBy.CLASSICAL and result.models == []
    assert "sha256" in result.details["path_reason"] and "classical" in result.details["path_reason"]
