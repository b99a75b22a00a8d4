"""Query/retrieve of priors against a real Orthanc: C-FIND, C-GET, C-MOVE to our StorageSCP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.qr import find_studies, get_study, move_study
from dicomnode.scp import ScpSettings, StorageSCP
from dicomnode.store import InstanceStore
from dicomnode.testing.synthetic import StudyInfo, write_ct_series, write_radiograph
from tests.integration.test_scp import RecordingSink
from tests.support.orthanc import Orthanc

pytestmark = pytest.mark.integration

PATIENT = "QRPATIENT"


def upload_studies(orthanc: Orthanc, tmp_path: Path) -> dict[str, list[Path]]:
    """Three studies of one patient (CT 2020, DX 2022, CT 2024) and one of somebody else."""
    studies: dict[str, list[Path]] = {}
    hu = np.zeros((3, 16, 16))
    for name, date in (("ct2020", "20200101"), ("ct2024", "20240101")):
        info = StudyInfo(patient_id=PATIENT, study_date=date, study_description=f"CT {date}")
        studies[name] = write_ct_series(hu, tmp_path / name, info=info)
    dx_info = StudyInfo(patient_id=PATIENT, study_date="20220101", study_description="DX 2022")
    studies["dx2022"] = [write_radiograph(np.zeros((16, 16), np.uint16), tmp_path / "dx.dcm", info=dx_info)]
    other = StudyInfo(patient_id="SOMEONEELSE", study_date="20210101")
    studies["other"] = write_ct_series(hu, tmp_path / "other", info=other)
    for paths in studies.values():
        for path in paths:
            orthanc.upload(path)
    return studies


def study_uid(paths: list[Path]) -> str:
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def test_find_studies_filters_by_patient_modality_and_date(orthanc: Orthanc, tmp_path: Path) -> None:
    studies = upload_studies(orthanc, tmp_path)
    found = find_studies(orthanc.destination, "DICOMNODE", patient_id=PATIENT)
    assert [s.study_instance_uid for s in found] == [
        study_uid(studies["ct2024"]),
        study_uid(studies["dx2022"]),
        study_uid(studies["ct2020"]),
    ]
    assert [s.study_date for s in found] == ["20240101", "20220101", "20200101"]
    assert found[0].modalities == ("CT",) and found[0].num_instances == 3
    assert found[0].description == "CT 20240101"

    ct_only = find_studies(orthanc.destination, "DICOMNODE", patient_id=PATIENT, modality="CT")
    assert {s.study_instance_uid for s in ct_only} == {study_uid(studies["ct2020"]), study_uid(studies["ct2024"])}

    priors = find_studies(orthanc.destination, "DICOMNODE", patient_id=PATIENT, modality="CT", before_date="20240101")
    assert [s.study_instance_uid for s in priors] == [study_uid(studies["ct2020"])]

    assert len(find_studies(orthanc.destination, "DICOMNODE", patient_id=PATIENT, limit=1)) == 1


def test_get_study_retrieves_every_instance(orthanc: Orthanc, tmp_path: Path) -> None:
    studies = upload_studies(orthanc, tmp_path)
    out_dir = tmp_path / "retrieved"
    paths = get_study(orthanc.destination, "DICOMNODE", study_uid(studies["ct2020"]), out_dir)
    expected = {pydicom.dcmread(p).SOPInstanceUID for p in studies["ct2020"]}
    assert {pydicom.dcmread(p).SOPInstanceUID for p in paths} == expected
    assert sorted(paths) == sorted(out_dir.iterdir())
    original = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in studies["ct2020"]}
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.PixelData == original[ds.SOPInstanceUID].PixelData


def test_move_study_delivers_to_our_scp(orthanc: Orthanc, tmp_path: Path) -> None:
    studies = upload_studies(orthanc, tmp_path)
    sink = RecordingSink()
    settings = ScpSettings(ae_title="NODEMOVE", host="127.0.0.1", port=0)
    with StorageSCP(settings, InstanceStore(tmp_path / "store"), sink) as scp:
        orthanc.add_modality("node", "NODEMOVE", "127.0.0.1", scp.port)
        completed = move_study(orthanc.destination, "DICOMNODE", study_uid(studies["ct2024"]), "NODEMOVE")
    expected = {pydicom.dcmread(p).SOPInstanceUID for p in studies["ct2024"]}
    assert completed == len(expected)
    assert {i.sop_instance_uid for i in sink.instances} == expected
    assert all(i.calling_ae == "ORTHANC" for i in sink.instances)
