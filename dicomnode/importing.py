"""Importing plain pictures: PNG/JPEG radiographs wrapped as Secondary Capture, and folders of mixed input.

Users of the hand pipeline often hold their radiographs as PNG or JPEG. ``dicomnode import``/``run`` wrap each
as a Secondary Capture Image Storage object, one series per picture, so that the rest of the node sees DICOM
only: grey pictures (and colour files whose three channels are equal, as most exported radiographs are) as 8-bit
or 16-bit MONOCHROME2, colour pictures as 8-bit RGB.
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


def _pixels(path: Path) -> tuple[npt.NDArray[np.uint8] | npt.NDArray[np.uint16], str]:
    """The picture's pixels and photometric interpretation (MONOCHROME2, or RGB with samples last)."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise PipelineInputError(f"cannot decode image file {path.name}")
    if image.dtype not in (np.uint8, np.uint16):
        raise PipelineInputError(f"unsupported pixel type {image.dtype} in {path.name}")
    if image.ndim == 3:
        bgr = image[:, :, :3]
        if bool((bgr[:, :, 0] == bgr[:, :, 1]).all() and (bgr[:, :, 1] == bgr[:, :, 2]).all()):
            image = bgr[:, :, 0]
        else:
            if image.dtype == np.uint16:  # Secondary Capture RGB is 8 bits a sample
                bgr = (bgr // 257).astype(np.uint8)
            return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8), "RGB"
    if image.dtype == np.uint16:
        return np.ascontiguousarray(image, dtype=np.uint16), "MONOCHROME2"
    return np.ascontiguousarray(image, dtype=np.uint8), "MONOCHROME2"


def wrap_image_as_secondary_capture(
    path: Path,
    *,
    patient_id: str = "IMPORTED",
    patient_name: str = "Imported^Image",
    study_instance_uid: str | None = None,
    body_part: str | None = "HAND",
    modality: str = "OT",
    study_description: str = "",
    accession_number: str = "",
    series_number: int = 1,
) -> Dataset:
    """A Secondary Capture dataset (with file meta) holding the picture at ``path`` (grey or RGB)."""
    pixels, photometric = _pixels(path)
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
    ds.AccessionNumber = accession_number
    if study_description:
        ds.StudyDescription = study_description
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
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
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.PlanarConfiguration = 0  # R, G, B of a pixel together, as the array holds them
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
