"""Importing plain pictures: PNG/JPEG radiographs wrapped as Secondary Capture, and folders of mixed input.

Users of the hand pipeline often hold their radiographs as PNG or JPEG. ``dicomnode import``/``run`` wrap each
as an 8-bit (or 16-bit for 16-bit grey PNG) MONOCHROME2 Secondary Capture Image Storage object, one series per
picture, so that the rest of the node sees DICOM only.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomnode.errors import PipelineInputError
from dicomnode.imaging.headers import read_header

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def _grey_pixels(path: Path) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise PipelineInputError(f"cannot decode image file {path.name}")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype == np.uint16:
        return np.ascontiguousarray(image, dtype=np.uint16)
    if image.dtype != np.uint8:
        raise PipelineInputError(f"unsupported pixel type {image.dtype} in {path.name}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def wrap_image_as_secondary_capture(
    path: Path,
    *,
    patient_id: str = "IMPORTED",
    patient_name: str = "Imported^Image",
    study_instance_uid: str | None = None,
    body_part: str | None = "HAND",
) -> Dataset:
    """A Secondary Capture dataset (with file meta) holding the picture at ``path`` as MONOCHROME2."""
    pixels = _grey_pixels(path)
    now = dt.datetime.now()
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"Imported {path.suffix.lstrip('.').upper()} {path.stem}"[:64]
    if body_part:
        ds.BodyPartExamined = body_part
    ds.Laterality = ""
    ds.Manufacturer = ""
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01" if path.suffix.lower() in (".jpg", ".jpeg") else "00"
    if ds.LossyImageCompression == "01":
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = pixels.tobytes()
    return ds


def load_input_folder(folder: Path) -> list[tuple[Path, Dataset]]:
    """Every DICOM file under ``folder`` (recursively, sorted by path) as its header, with PNG/JPEG pictures
    wrapped as SC (pixels included).

    The wrapped pictures of one folder share one StudyInstanceUID. Files that are neither are skipped
    (logged at DEBUG).
    """
    if not folder.is_dir():
        raise PipelineInputError(f"input folder {folder} does not exist")
    study_uid = generate_uid()
    items: list[tuple[Path, Dataset]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            items.append((path, wrap_image_as_secondary_capture(path, study_instance_uid=study_uid)))
            continue
        try:
            items.append((path, read_header(path)))
        except PipelineInputError as exc:
            log.debug("import.skip file=%s reason=%s", path.name, exc)
    return items
