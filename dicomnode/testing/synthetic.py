"""Write synthetic DICOM (CT series, 2D radiographs) from NumPy arrays: for phantoms, tests and benchmarks.

The objects are complete enough for dciodvfy and for real peers (storescu, Orthanc): CT Image Storage with
patient, study, series, frame-of-reference and image-plane modules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from dicomnode.errors import ValidationError


@dataclass
class StudyInfo:
    """Patient and study attributes shared by the objects of one synthetic study."""

    patient_id: str = "PHANTOM001"
    patient_name: str = "Phantom^Test"
    patient_sex: str = "O"
    patient_birth_date: str = "19700101"
    study_instance_uid: str = field(default_factory=generate_uid)
    study_date: str = field(default_factory=lambda: dt.date.today().strftime("%Y%m%d"))
    study_id: str = "1"
    accession_number: str = "ACC0001"
    study_description: str = "Synthetic study"
    frame_of_reference_uid: str = field(default_factory=generate_uid)


def base_dataset(sop_class_uid: UID, info: StudyInfo, modality: str) -> Dataset:
    ds = Dataset()
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.patient_birth_date
    ds.PatientSex = info.patient_sex
    ds.StudyInstanceUID = info.study_instance_uid
    ds.StudyDate = info.study_date
    ds.StudyTime = "120000"
    ds.ContentDate = info.study_date
    ds.ContentTime = "120000"
    ds.StudyID = info.study_id
    ds.AccessionNumber = info.accession_number
    ds.StudyDescription = info.study_description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.Manufacturer = "dicomnode synthetic"
    return ds


def write_ct_series(
    hu: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    out_dir: Path,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    info: StudyInfo | None = None,
    series_description: str = "Synthetic CT",
    body_part: str | None = "CHEST",
    series_number: int = 1,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    series_instance_uid: str | None = None,
) -> list[Path]:
    """Write ``hu`` (z, y, x) as an axial CT series, one file per slice; return the paths in slice order.

    ``spacing`` is (slice, row, column) in mm. Values are stored as int16 with RescaleIntercept 0.
    """
    if hu.ndim != 3:
        raise ValidationError(f"hu must be 3D (z, y, x), got shape {hu.shape}")
    info = info or StudyInfo()
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_instance_uid or generate_uid()
    pixels = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    paths: list[Path] = []
    for k in range(pixels.shape[0]):
        ds = base_dataset(CTImageStorage, info, "CT")
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.SeriesDate = info.study_date
        ds.SeriesTime = "120000"
        if body_part:
            ds.BodyPartExamined = body_part
        ds.InstanceNumber = k + 1
        ds.ImageType = list(image_type)
        ds.FrameOfReferenceUID = info.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = spacing[0]
        ds.SliceLocation = origin[2] + k * spacing[0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = -600
        ds.WindowWidth = 1500
        ds.PixelData = pixels[k].tobytes()
        path = out_dir / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_ct_series_in_chunks(
    out_dir: Path,
    count: int,
    slab: Callable[[int, int], npt.NDArray[np.integer]],
    *,
    series_instance_uid: str,
    info: StudyInfo | None = None,
    chunk: int = 50,
) -> list[Path]:
    """A ``count``-slice CT series (1 mm apart) written ``chunk`` slices at a time, so that a benchmark's
    300-slice 512² volume never sits in memory whole; ``slab(start, n)`` gives slices ``start`` to
    ``start + n``. Each chunk goes to its own folder; the paths come back in slice order."""
    paths: list[Path] = []
    for start in range(0, count, chunk):
        paths += write_ct_series(
            slab(start, min(chunk, count - start)),
            out_dir / f"chunk{start:05d}",
            info=info,
            origin=(0.0, 0.0, float(start)),
            series_instance_uid=series_instance_uid,
        )
    return paths


def write_radiograph(
    pixels: npt.NDArray[np.integer],
    path: Path,
    *,
    info: StudyInfo | None = None,
    pixel_spacing: tuple[float, float] = (0.15, 0.15),
    body_part: str | None = "HAND",
    series_description: str = "Synthetic hand PA",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    image_laterality: str | None = None,
    view_position: str = "PA",
) -> Path:
    """Write a 2D unsigned radiograph as DX Image Storage (For Presentation)."""
    if pixels.ndim != 2:
        raise ValidationError(f"pixels must be 2D, got shape {pixels.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValidationError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric}")
    info = info or StudyInfo()
    ds = base_dataset(DigitalXRayImageStorageForPresentation, info, "DX")
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = series_description
    if body_part:
        ds.BodyPartExamined = body_part
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["R", "F"] if view_position == "PA" else ["L", "F"]
    ds.ImageLaterality = image_laterality or "U"
    ds.DetectorType = "SCINTILLATOR"
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1
    ds.ImagerPixelSpacing = list(pixel_spacing)
    ds.PixelSpacing = list(pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2 ** (bits_stored - 1)
    ds.WindowWidth = 2**bits_stored
    ds.LossyImageCompression = "00"
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    ds.PixelData = np.clip(pixels, 0, 2**bits_stored - 1).astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
