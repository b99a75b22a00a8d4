"""The CLI as a user meets it: `send` to a real storescp, `import` with patient and study flags (read back),
`serve` saying where its data is and where results go, and a bash completion script that bash accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from tests.support.cli import cli_env, dicomnode_command, run_cli
from tests.support.net import free_port
from tests.support.orthanc import dcmtk, wait_for_port

pytestmark = pytest.mark.integration


def test_send_folder_to_storescp(tmp_path: Path) -> None:
    sent = write_ct_series(np.zeros((5, 16, 16), dtype=np.int16), tmp_path / "ct" / "nested", info=StudyInfo())
    (tmp_path / "ct" / "README.txt").write_text("not DICOM: skipped\n")
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        result = run_cli("send", str(tmp_path / "ct"), f"STORESCP@127.0.0.1:{port}", cwd=tmp_path)
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert f"sent 5/5 files to STORESCP@127.0.0.1:{port}" in result.stdout
    got = {pydicom.dcmread(p).SOPInstanceUID for p in received.iterdir()}
    assert got == {pydicom.dcmread(p).SOPInstanceUID for p in sent}


def test_import_with_flags_keeps_colour(tmp_path: Path) -> None:
    colour = np.zeros((20, 30, 3), dtype=np.uint8)
    colour[:, :, 2] = 200  # red in OpenCV's BGR order
    colour[5:10, 5:10] = (0, 255, 0)
    cv2.imwrite(str(tmp_path / "photo.png"), colour)
    grey = np.tile(np.arange(30, dtype=np.uint8), (20, 1))
    cv2.imwrite(str(tmp_path / "xray.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))  # grey stored as RGB
    result = run_cli(
        "import",
        str(tmp_path / "photo.png"),
        str(tmp_path / "xray.png"),
        "--output",
        str(tmp_path / "out"),
        "--body-part",
        "FOOT",
        "--modality",
        "XC",
        "--patient-id",
        "P-42",
        "--patient-name",
        "Doe^Jane",
        "--study-description",
        "Wound photos",
        "--accession",
        "ACC7",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    photo = pydicom.dcmread(tmp_path / "out" / "photo.dcm")
    xray = pydicom.dcmread(tmp_path / "out" / "xray.dcm")
    for ds in (photo, xray):
        assert (ds.BodyPartExamined, ds.Modality, ds.PatientID, str(ds.PatientName)) == (
            "FOOT",
            "XC",
            "P-42",
            "Doe^Jane",
        )
        assert (ds.StudyDescription, ds.AccessionNumber) == ("Wound photos", "ACC7")
    assert photo.StudyInstanceUID == xray.StudyInstanceUID
    assert photo.SeriesInstanceUID != xray.SeriesInstanceUID
    assert (photo.PhotometricInterpretation, photo.SamplesPerPixel) == ("RGB", 3)
    pixels = photo.pixel_array
    assert pixels.shape == (20, 30, 3)
    assert tuple(pixels[0, 0]) == (200, 0, 0) and tuple(pixels[7, 7]) == (0, 255, 0)
    assert (xray.PhotometricInterpretation, xray.SamplesPerPixel) == ("MONOCHROME2", 1)
    assert np.array_equal(xray.pixel_array, grey)


def _first_lines(settings_args: list[str], cwd: Path, count: int) -> list[str]:
    process = subprocess.Popen(
        dicomnode_command("serve", *settings_args),
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        return [process.stdout.readline().rstrip("\n") for _ in range(count)]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_says_where_its_data_is_and_warns_without_destination(tmp_path: Path) -> None:
    lines = _first_lines(["--data-dir", str(tmp_path / "data"), "--port", "0", "--workers", "0"], tmp_path, 7)
    assert lines[0].startswith("dicomnode serving as DICOMNODE on 0.0.0.0:")
    assert int(lines[0].rsplit(":", 1)[1]) > 0  # the port actually bound
    assert any(str((tmp_path / "data").resolve()) in line and line.strip().startswith("data:") for line in lines)
    assert lines[-1].startswith("WARNING: no destination for results is configured")


def test_serve_echoes_its_destinations(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    scp = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        args = ["--data-dir", str(tmp_path / "d"), "--port", "0", "--workers", "0", "--ae-title", "AINODE"]
        args += ["--destination", f"PACS@127.0.0.1:{port}", "--destination", f"GONE@127.0.0.1:{dead}"]
        lines = _first_lines(args, tmp_path, 8)
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert lines[0].startswith("dicomnode serving as AINODE")
    pacs = next(line for line in lines if "destination PACS:" in line)
    gone = next(line for line in lines if "destination GONE:" in line)
    assert "C-ECHO ok" in pacs and "(results)" in pacs
    assert "C-ECHO no association" in gone
    assert not any(line.startswith("WARNING") for line in lines)


def test_bash_completion_script(tmp_path: Path) -> None:
    result = run_cli("completion", "bash", cwd=tmp_path)
    assert result.returncode == 0
    script = tmp_path / "dicomnode.bash"
    script.write_text(result.stdout)
    # bash itself completes `dicomnode se` and `dicomnode import --pat`
    probe = f"""source {script}
COMP_WORDS=(dicomnode se); COMP_CWORD=1; _dicomnode; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(dicomnode import --pat); COMP_CWORD=2; _dicomnode; echo "${{COMPREPLY[*]}}"
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split() == ["send", "serve"]
    assert out[1].split() == ["--patient-id", "--patient-name"]
