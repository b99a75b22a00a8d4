"""Throwaway prototype (not the encoder): rewrite one of our SRs the way OHIF 3.13 needs, to show the change works.

    python -m tools.viewer_bench.prototype_sr CT_DIR SEG_FILE SR_FILE OUT_DIR [--graphic contour|box|point]

Keeps every measurement group of SR_FILE (TID 1411, referencing SEG_FILE's segments) and adds, per group, a
TID 1410 Planar ROI group with the same Tracking Identifier and Tracking Unique Identifier whose Image Region
SCOORD lies on the source image where the segment is largest: its outline (closed POLYLINE), its bounding box
(closed 5-point POLYLINE, which OHIF maps to its RectangleROI tool) or its centre (POINT, OHIF's Probe). The
Image Library lists the images those regions lie on. See docs/viewers.md for what OHIF shows of each variant;
the real change belongs in dicomnode/encode/sr_groups.py. It also writes a copy of SEG_FILE whose
segments recommend display colours (change 2, dicomnode/encode/seg.py).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import Dataset

from dicomnode.plugins.drawing import segment_colour
from tools.viewer_bench.bench import dicom_files


def key_slice(
    seg: hd.seg.Segmentation, segment_number: int, sources: dict[str, Dataset]
) -> tuple[Dataset, npt.NDArray[np.bool_]]:
    """The source image where the segment covers most pixels, and the segment's mask on it."""
    best: tuple[int, str, npt.NDArray[np.bool_]] | None = None
    for uid in sources:
        try:
            pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[segment_number])
        except (ValueError, KeyError, IndexError):
            continue  # no frame of this segment on that image
        mask = np.asarray(pixels[0, :, :, 0] > 0)
        if best is None or mask.sum() > best[0]:
            best = (int(mask.sum()), uid, mask)
    if best is None or best[0] == 0:
        raise SystemExit(f"segment {segment_number} covers no source image")
    return sources[best[1]], best[2]


def region_points(mask: npt.NDArray[np.bool_], graphic: str) -> tuple[str, npt.NDArray[np.float64]]:
    """(graphic type, (column, row) points in image coordinates: pixel centres at +0.5)."""
    rows, cols = np.nonzero(mask)
    if graphic == "point":
        return "POINT", np.array([[cols.mean() + 0.5, rows.mean() + 0.5]])
    if graphic == "box":
        c0, c1, r0, r1 = cols.min(), cols.max() + 1.0, rows.min(), rows.max() + 1.0
        return "POLYLINE", np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=float)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea)[:, 0, :].astype(float) + 0.5
    return "POLYLINE", np.vstack([outline, outline[:1]])


def rewrite(ct: Sequence[Dataset], seg_ds: Dataset, sr_path: Path, graphic: str) -> hd.sr.Comprehensive3DSR:
    seg = hd.seg.Segmentation.from_dataset(seg_ds, copy=False)
    sources = {str(ds.SOPInstanceUID): ds for ds in ct}
    report = cast(Any, hd.sr.srread(sr_path).content)  # a MeasurementReport (typed as its base class)
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = []
    library: dict[str, Dataset] = {}
    for group in report.get_volumetric_roi_measurement_groups():
        tracking = hd.sr.TrackingIdentifier(uid=group.tracking_uid, identifier=group.tracking_identifier)
        measurements = [hd.sr.Measurement(name=m.name, value=m.value, unit=m.unit) for m in group.get_measurements()]
        number = int(group.referenced_segment.referenced_segment_numbers[0])
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg_ds, number),
                finding_type=group.finding_type,
                measurements=measurements,
            )
        )
        image, mask = key_slice(seg, number, sources)
        library[str(image.SOPInstanceUID)] = image
        graphic_type, points = region_points(mask, graphic)
        region = hd.sr.ImageRegion(graphic_type, points, hd.sr.SourceImageForRegion.from_source_image(image))
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_region=region, finding_type=group.finding_type
            )
        )
    first = ct[0]
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=hd.UID(), name="prototype"
                ),
            )
        ),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=groups,
        referenced_images=sorted(library.values(), key=lambda ds: int(ds.InstanceNumber)),
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*ct, seg_ds],
        content=content[0],
        series_instance_uid=hd.UID(),
        series_number=int(first.SeriesNumber) + 9100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="dicomnode prototype",
        is_complete=True,
    )
    sr.SeriesDescription = f"prototype SR ({graphic})"
    return sr


def recoloured_seg(seg_ds: Dataset) -> Dataset:
    """A copy of the SEG (new series) whose segments recommend the colours of drawing.segment_colour: what
    encoder change 2 writes (highdicom: SegmentDescription(display_color=CIELabColor.from_rgb(...)))."""
    seg = copy.deepcopy(seg_ds)
    seg.SeriesInstanceUID, seg.SOPInstanceUID = hd.UID(), hd.UID()
    seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
    seg.SeriesDescription = f"{seg_ds.SeriesDescription} (coloured)"[:64]
    for item in seg.SegmentSequence:
        rgb = segment_colour(int(item.SegmentNumber))
        item.RecommendedDisplayCIELabValue = list(hd.color.CIELabColor.from_rgb(*rgb).value)
    return seg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ct", type=Path)
    parser.add_argument("seg", type=Path)
    parser.add_argument("sr", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--graphic", choices=("contour", "box", "point"), default="contour")
    args = parser.parse_args(argv)
    ct = [pydicom.dcmread(p) for p in dicom_files([args.ct])]
    sr = rewrite(ct, pydicom.dcmread(args.seg), args.sr, args.graphic)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"prototype_sr_{args.graphic}.dcm"
    sr.save_as(path, enforce_file_format=True)
    print(path)
    seg_path = args.out / "prototype_seg_coloured.dcm"
    recoloured_seg(pydicom.dcmread(args.seg)).save_as(seg_path, enforce_file_format=True)
    print(seg_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
