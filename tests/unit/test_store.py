"""InstanceStore: UID validation against traversal, atomic replace, quarantine notes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomnode.errors import StoreError, ValidationError
from dicomnode.store import InstanceStore

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"


@pytest.mark.parametrize(
    "bad",
    ["..", "../../etc", "1.2/../3", "/abs", "1.2.3\x00", "1..2", ".1.2", "1.2.", "", "1.2.a", "1" * 65, "1.2\\3"],
)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_path_for_rejects_anything_but_uids(tmp_path: Path, bad: str, position: int) -> None:
    uids = [STUDY, SERIES, SOP]
    uids[position] = bad
    with pytest.raises(ValidationError):
        InstanceStore(tmp_path).path_for(*uids)


@pytest.mark.parametrize("uid", ["1.2.840.Zyxwv^Marker", "Zyxwv.1.2", "1.2.Zyxwv.", "1..2.Zyxwv"])
def test_a_uid_rejection_names_the_field_and_place_never_the_value(tmp_path: Path, uid: str) -> None:
    """Sites put patient text into UIDs; the reason goes to logs and job errors (issue 15, point 5)."""
    with pytest.raises(ValidationError) as raised:
        InstanceStore(tmp_path).path_for(STUDY, uid, SOP)
    reason = str(raised.value)
    assert "SeriesInstanceUID" in reason and "character" in reason
    assert "Zyxwv" not in reason and "Marker" not in reason


def test_path_for_stays_under_root(tmp_path: Path) -> None:
    path = InstanceStore(tmp_path).path_for(STUDY, SERIES, SOP)
    assert path == tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    assert path.resolve().is_relative_to(tmp_path.resolve())
    longest = "1." + "2" * 62
    assert InstanceStore(tmp_path).path_for(longest, SERIES, SOP).parent.parent.name == longest


def test_write_atomic_writes_and_replaces(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    first = store.write_atomic(STUDY, SERIES, SOP, b"first version")
    second = store.write_atomic(STUDY, SERIES, SOP, b"second")
    assert first == second
    assert second.read_bytes() == b"second"
    assert sorted(p.name for p in second.parent.iterdir()) == [f"{SOP}.dcm"]  # no temp files left behind


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    path = store.write_atomic(STUDY, SERIES, SOP, b"old")
    os.chmod(path.parent, 0o500)
    try:
        if os.access(path.parent, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions (root)")
        with pytest.raises(StoreError):
            store.write_atomic(STUDY, SERIES, SOP, b"new")
    finally:
        os.chmod(path.parent, 0o700)
    assert path.read_bytes() == b"old"


def test_write_atomic_wraps_os_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "root-is-a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StoreError) as info:
        InstanceStore(blocker).write_atomic(STUDY, SERIES, SOP, b"x")
    assert isinstance(info.value.__cause__, OSError)


def test_quarantine_keeps_bytes_and_reason(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    first = store.quarantine(b"\x00garbage", "missing StudyInstanceUID", "MODALITY1")
    second = store.quarantine(b"more garbage", "cannot parse", "MODALITY2")
    assert first != second
    assert first.parent == tmp_path / "quarantine" and first.suffix == ".dcm"
    assert first.read_bytes() == b"\x00garbage"
    note = first.with_suffix(".txt").read_text()
    assert "missing StudyInstanceUID" in note and "MODALITY1" in note
