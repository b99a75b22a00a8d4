"""The learned path of cardiac_lv as the patent describes it: k-means-stratified folds, a DLA ensemble of 5
trained by cross-validation (a tiny one here, seconds), checksum-verified loading, identical outputs after
reloading, the mean of the ensemble in the pipeline's learned results, and the LVQuan .mat layout."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from dicomnode.errors import WeightsError
from dicomnode.plugins.api import (
    ImageSeries,
    PipelineInputs,
    ProducedBy,
    RunContext,
    WeightsStatus,
)
from pipelines.cardiac_lv.datasets import load_labelled
from pipelines.cardiac_lv.metrics import ANCHORS
from pipelines.cardiac_lv.phantoms import PhantomSpec, make_cine
from pipelines.cardiac_lv.pipeline import MODEL_NAME, CardiacLvPipeline
from pipelines.cardiac_lv.train import MANIFEST, TRAINING_LOG, stratified_folds

torch = pytest.importorskip("torch")

SPECS = [
    PhantomSpec(n_frames=10, seed=s, semi_axes_ed_mm=(a, b), centre_offset_mm=(dy, dx), wall_mm=w)
    for s, (a, b, dy, dx, w) in enumerate(
        [
            (27.0, 23.0, 0.0, 0.0, (9.0, 8.0, 7.0, 6.0, 7.5, 8.5)),
            (22.0, 20.0, 8.0, -6.0, (7.0, 7.0, 6.0, 6.0, 8.0, 8.0)),
            (30.0, 25.0, -6.0, 10.0, (10.0, 9.0, 8.0, 7.0, 9.0, 10.0)),
            (25.0, 18.0, 4.0, 4.0, (6.0, 6.5, 7.0, 7.5, 8.0, 8.5)),
            (20.0, 17.0, -4.0, -8.0, (8.0, 7.0, 6.0, 5.5, 6.0, 7.0)),
        ]
    )
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test machine's two cores are shared: OpenMP threads waiting on each other cost 10x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_npz(folder, phantoms):
    folder.mkdir(parents=True, exist_ok=True)
    for k, p in enumerate(phantoms):
        np.savez(
            folder / f"cine{k}.npz", images=p.images, indices=p.indices, pixel_spacing_mm=p.spacing_mm, phase=p.phase
        )


@pytest.fixture(scope="module")
def phantoms():
    return [make_cine(spec) for spec in SPECS]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, phantoms):
    data = tmp_path_factory.mktemp("cines")
    _write_npz(data, phantoms)
    out = tmp_path_factory.mktemp("weights")
    options = {
        "config": "tiny",
        "epochs": "8",
        "batch": "8",
        "lr": "0.003",
        "folds": "5",
        "seed": "0",
        "augment": "0",
        "threads": "1",
    }
    path = CardiacLvPipeline().train(data, out, options)
    return path, json.loads((out / MANIFEST).read_text()), json.loads((out / TRAINING_LOG).read_text()), data


def test_five_folds_train_and_their_losses_fall(trained):
    path, manifest, log, _ = trained
    assert manifest == {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    assert len(log["folds"]) == 5 and sum(log["fold_sizes"]) == 50
    for fold in log["folds"]:
        losses = [h["train_loss"] for h in fold["history"]]
        assert np.mean(losses[-2:]) < 0.7 * losses[0], fold["fold"]


def test_folds_hold_a_share_of_every_kmeans_cluster():
    # Three kinds of image (grey level and indices differ a lot); each fold must hold a fifth of each kind.
    rng = np.random.default_rng(0)
    kinds = np.repeat([0, 1, 2], [25, 30, 45])
    crops = np.clip(rng.normal(0.2 + 0.3 * kinds[:, None, None], 0.02, (100, 8, 8)), 0, 1).astype(np.float32)
    targets = np.stack([kinds * 10.0 + rng.normal(0, 0.1, 100) for _ in range(11)], axis=1)
    folds = stratified_folds(crops, targets, 5, seed=3)
    for kind, size in ((0, 25), (1, 30), (2, 45)):
        counts = np.bincount(folds[kinds == kind], minlength=5)
        assert counts.min() >= size // 5 - 1 and counts.max() <= size // 5 + 1, (kind, counts)


def _ctx(path, sha, ok=True):
    status = WeightsStatus(
        "dla_ensemble", ok, "verified" if ok else "has sha256 x, expected y", path if ok else None, sha
    )
    return RunContext(weights={"dla_ensemble": status})


def test_reloaded_weights_give_identical_outputs(trained, phantoms):
    from pipelines.cardiac_lv.model import load_ensemble

    path, _, _, data = trained
    crops = load_labelled(data).crops[:10]
    first = load_ensemble(path).predict(crops)
    second = load_ensemble(path).predict(crops)
    np.testing.assert_array_equal(first, second)
    assert len(load_ensemble(path).models) == 5
    # The ensemble's answer is the mean of its members' (each de-standardised).
    ensemble = load_ensemble(path)
    members = [type(ensemble)(ensemble.config, [m], ensemble.target_mean, ensemble.target_std).predict(crops)
               for m in ensemble.models]  # fmt: skip
    np.testing.assert_allclose(first, np.mean(members, axis=0), rtol=1e-6, atol=1e-9)


def test_verified_weights_give_the_learned_path(trained, tmp_path):
    import pydicom

    from dicomnode.testing.cine import write_cine

    path, manifest, _, _ = trained
    sha = manifest[path.name]
    pipeline = CardiacLvPipeline()
    ctx = _ctx(path, sha)
    ctx.state = pipeline.setup(ctx)
    phantom = make_cine(SPECS[0].replace(seed=40))
    paths = write_cine(phantom.images[np.newaxis], tmp_path, pixel_spacing=(1.5, 1.5))
    series = ImageSeries([pydicom.dcmread(p, stop_before_pixels=True) for p in paths], paths)
    result = pipeline.run(PipelineInputs([series]), ctx)
    assert result.details["produced_by"] == "learned"
    assert [(m.name, m.sha256) for m in result.models] == [(MODEL_NAME, sha)]
    frame_groups = [g for g in result.groups if " frame " in g.tracking_id]
    assert all(g.produced_by is ProducedBy.LEARNED and g.model == MODEL_NAME for g in frame_groups)
    # the values are the network's, the SEG is the classical segmentation: the SR says "mixed"
    assert {m.produced_by or result.produced_by for m in result.label_maps} == {ProducedBy.CLASSICAL}
    assert result.overall_produced_by is ProducedBy.MIXED
    assert result.label_maps  # the SEG stays classical: the networks regress indices, not masks
    # A tiny network trained for seconds is no expert, but it has learned the scale of the cavity.
    areas = np.array(result.details["indices"])[:, 0]
    assert 0.5 * phantom.indices[:, 0].mean() < areas.mean() < 1.5 * phantom.indices[:, 0].mean()


def test_unverified_weights_leave_the_classical_path(trained):
    path, _, _, _ = trained
    ctx = _ctx(path, "0" * 64, ok=False)
    assert CardiacLvPipeline().setup(ctx) is None
    with pytest.raises(WeightsError, match="expected"):
        ctx.weights_path("dla_ensemble")


def test_lvquan_mat_layout_is_read_in_mm(tmp_path, phantoms):
    from scipy.io import savemat

    from pipelines.cardiac_lv.analysis import roi_for
    from pipelines.cardiac_lv.locate import locate_lv
    from pipelines.cardiac_lv.preprocess import equalise

    # Two subjects as the LVQuan18 file holds them: 80 x 80 crops, indices in crop pixels, per-subject scale.
    crops, px_indices, pix, ratio, phase = [], [], [], [], []
    for p in phantoms[:2]:
        location = locate_lv(equalise(p.images), (p.spacing_mm, p.spacing_mm))
        roi = roi_for(location, (p.spacing_mm, p.spacing_mm), 80)
        crops.append(roi.sample(p.images))
        mm_per_px = roi.side_mm / 80
        scale = np.array([mm_per_px**2, mm_per_px**2, *[mm_per_px] * 9])
        px_indices.append(p.indices / scale)
        pix.append(p.spacing_mm)
        ratio.append(mm_per_px / p.spacing_mm)
        phase.append(p.phase)
    px_all = np.concatenate(px_indices)
    savemat(
        tmp_path / "cardiac-dig.mat",
        {
            "images_LV": np.moveaxis(np.concatenate(crops), 0, -1),
            "areas": px_all[:, :2].T,
            "dims": px_all[:, 2:5].T,
            "rwt": px_all[:, 5:].T,
            "lv_phase": np.concatenate(phase)[None],
            "pix_spa": np.array(pix)[:, None],
            "ratio_resize_inverse": np.array(ratio)[None],
        },
    )
    data = load_labelled(tmp_path, frames_per_subject=10)
    assert data.crops.shape == (20, 80, 80) and data.subject.tolist() == [0] * 10 + [1] * 10
    np.testing.assert_allclose(data.indices, np.concatenate([p.indices for p in phantoms[:2]]), rtol=1e-9)
    report = CardiacLvPipeline().evaluate(tmp_path, {"frames_per_subject": "10"}, RunContext())
    assert report["path"] == "classical" and report["items"] == 20
    mae = report["metrics"]["mae"]
    print(f"classical on LVQuan-style crops: {mae}, phase error {report['phase_error_rate']}")
    assert mae["areas_mm2"] < ANCHORS["areas_mm2"] and mae["rwt_mm"] < ANCHORS["rwt_mm"]
    assert report["phase_error_rate"] <= 0.1
