"""`dicomnode run`: one pipeline on a folder, no server, no database; DICOM outputs plus result.json."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from dicomnode.cli import main
from tests.support.phantoms import write_sphere_study


def _run(tmp_path: Path, *extra: str) -> int:
    config = tmp_path / "c.toml"
    config.write_text('[pipelines]\nextra = ["tests.support.sphere_pipeline:SpherePipeline"]\n')
    return main(
        [
            "run",
            "--config",
            str(config),
            "test_spheres",
            str(tmp_path / "ct"),
            "--output",
            str(tmp_path / "out"),
            *extra,
        ]
    )


def test_run_writes_outputs_and_result_json(tmp_path: Path) -> None:
    _, volumes, info = write_sphere_study(tmp_path / "ct")
    (tmp_path / "ct" / "notes.txt").write_text("not DICOM: skipped with a warning")
    assert _run(tmp_path) == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["schema"] == "dicomnode.result/2"
    assert doc["pipeline"] == {"name": "test_spheres", "version": "0.1.0"}
    assert doc["produced_by"] == "classical"
    assert doc["source"]["study_instance_uid"] == info.study_instance_uid
    measured = sorted(m["value"] for m in doc["measurements"] if m["name"] == "Volume")
    assert np.allclose(measured, sorted(volumes))
    assert all(
        m["unit"] == "mL" and m["tracking_id"].startswith("Sphere")
        for m in doc["measurements"]
        if m["name"] == "Volume"
    )
    assert {f["kind"] for f in doc["files"]} == {"SR", "SEG", "SUMMARY"}
    for item in doc["files"]:
        assert (tmp_path / "out" / item["path"]).is_file()
    seg_path = next(tmp_path / "out" / f["path"] for f in doc["files"] if f["kind"] == "SEG")
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == len(volumes) == len(doc["segments"])


def test_parameters_reach_the_pipeline(tmp_path: Path) -> None:
    write_sphere_study(tmp_path / "ct")
    assert _run(tmp_path, "--param", "threshold_hu=900") == 0  # above the spheres: nothing found
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["details"] == {"count": 0, "threshold_hu": 900.0}
    assert doc["measurements"] == []


def test_unknown_pipeline_and_unaccepted_input_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sphere_study(tmp_path / "ct")
    assert main(["run", "no_such_pipeline", str(tmp_path / "ct"), "--output", str(tmp_path / "o")]) == 2
    assert "unknown pipeline 'no_such_pipeline'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    config = tmp_path / "c.toml"
    config.write_text('[pipelines]\nextra = ["tests.support.sphere_pipeline:SpherePipeline"]\n')
    assert (
        main(["run", "--config", str(config), "test_spheres", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
        == 2
    )
    assert "no series that test_spheres accepts" in capsys.readouterr().err
