"""The learned path of lung_longitudinal: train a tiny normal-lung network, load it checksum-verified, reject a
wrong checksum (classical path, and the result says why)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pydicom
import pytest

from dicomnode.config import Settings
from dicomnode.plugins.api import ImageSeries, PipelineInputs, ProducedBy, RunContext
from dicomnode.plugins.registry import Registry
from dicomnode.runner.host import PipelineHost
from dicomnode.testing.synthetic import write_ct_series
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
    path = LungLongitudinalPipeline().train(data, out, {"iterations": "60", "batch": "4", "base": "8", "seed": "0"})
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


def _context(params: dict, weights_dir) -> RunContext:
    """The run context the node builds: weights verified by the host, the network loaded by setup."""
    settings = Settings.model_validate(
        {"pipelines": {"weights_dir": str(weights_dir), "params": {"lung_longitudinal": params}}}
    )
    return PipelineHost(settings, Registry()).context(LungLongitudinalPipeline(), work_dir=None)


def test_verified_weights_give_learned_path(trained, tmp_path):
    path, log = trained
    ctx = _context({"normal_lung_sha256": log["sha256"], "normal_lung_file": path.name}, path.parent)
    assert ctx.state is not None  # setup loaded the network
    result = LungLongitudinalPipeline().run(PipelineInputs([_series(tmp_path)]), ctx)
    assert result.produced_by is ProducedBy.LEARNED
    assert result.details["produced_by"] == "learned"
    assert result.details["time_point"]["roi_ml"] > 0


def test_wrong_checksum_falls_back_to_classical(trained, tmp_path):
    path, _ = trained
    ctx = _context({"normal_lung_sha256": "0" * 64, "normal_lung_file": path.name}, path.parent)
    assert ctx.state is None
    result = LungLongitudinalPipeline().run(PipelineInputs([_series(tmp_path)]), ctx)
    assert result.produced_by is ProducedBy.CLASSICAL
    assert "has sha256" in result.details["path_reason"]
