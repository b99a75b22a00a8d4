"""``dicomnode evaluate cardiac_lv --data DIR``: the LVQuan18 metrics on labelled crops, and contour agreement
on cines with expert contours (layouts in README.md).

- ``DIR/*.mat`` / ``DIR/*.npz`` (see :mod:`pipelines.cardiac_lv.datasets`): per-index mean absolute error and
  Pearson correlation, the group MAEs (areas, dimensions, RWT) and the phase error rate, for the learned path
  when its weights are installed, else the classical path; the LVQuan18 winner's figures beside them.
- ``DIR/<case>/dicom/*.dcm`` with ``DIR/<case>/contours/{i,o}-contours/IM-0001-NNNN-*.txt`` (the Sunnybrook
  layout: file NNNN belongs to ``dicom/N.dcm``, points are (x y) pixels): per contour the Dice coefficient
  and the area error of the classical segmentation, the indices of both where the frame has both contours,
  and whether ED and ES fall on the frames the expert contoured (the larger cavity is ED).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from dicomnode.errors import PipelineInputError
from dicomnode.plugins.api import Cine, ImageSeries, PipelineInputs, RunContext
from pipelines.cardiac_lv.analysis import PositionAnalysis, analyse_position
from pipelines.cardiac_lv.datasets import LabelledSet, load_labelled, physical_indices
from pipelines.cardiac_lv.geometry import INDEX_NAMES, lvquan_indices
from pipelines.cardiac_lv.locate import LvLocation, locate_lv
from pipelines.cardiac_lv.metrics import ANCHORS, dice, index_metrics, phase_error_rate
from pipelines.cardiac_lv.options import number
from pipelines.cardiac_lv.phase import DEFAULT_DEGREE, fit_phase
from pipelines.cardiac_lv.preprocess import equalise
from pipelines.cardiac_lv.rasterise import polygon_mask
from pipelines.cardiac_lv.stack import mid_ventricular

if TYPE_CHECKING:
    from pipelines.cardiac_lv.pipeline import CardiacLvPipeline

__all__ = ["evaluate"]

_CONTOUR_FILE = re.compile(r"IM-\d+-(\d+)-([io])contour", re.IGNORECASE)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _ensemble(pipeline: CardiacLvPipeline, ctx: RunContext) -> Any:
    return ctx.state if ctx.state is not None else pipeline.setup(ctx)


# ---------------------------------------------------------------------------------------------- LVQuan
def _classical_on_crops(data: LabelledSet, degree: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int_]]:
    """The classical path on each subject's crops (the LV near their centre)."""
    predicted = np.full(data.indices.shape, np.nan)
    phase = np.full(len(data), -1, dtype=np.int_)
    for s in np.unique(data.subject):
        rows = np.nonzero(data.subject == s)[0]
        frames = data.raw[rows]
        mm = float(data.side_mm[rows[0]]) / frames.shape[-1]
        location = locate_lv(equalise(frames), (mm, mm))
        if location is None:  # the crops are centred on the LV: start there
            centre = ((frames.shape[1] - 1) / 2.0, (frames.shape[2] - 1) / 2.0)
            location = LvLocation(centre, 0.2 * frames.shape[-1] * mm, 0.0, 0.0, 0.0, 0.0, 0.0)
        analysis = analyse_position(frames, (mm, mm), location, 0, degree)
        predicted[rows] = analysis.indices
        if analysis.phase is not None:
            phase[rows] = analysis.phase.labels
    return predicted, phase


def _learned_on_crops(
    data: LabelledSet, ensemble: Any, degree: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int_]]:
    predicted = physical_indices(ensemble.predict(data.crops), data.side_mm)
    phase = np.full(len(data), -1, dtype=np.int_)
    for s in np.unique(data.subject):
        rows = np.nonzero(data.subject == s)[0]
        phase[rows] = fit_phase(predicted[rows, 0], degree).labels
    return predicted, phase


def _evaluate_labelled(data_dir: Path, options: Mapping[str, str], ensemble: Any) -> dict[str, Any]:
    data = load_labelled(data_dir, int(number(options, "frames_per_subject", 20, "option")))
    degree = int(number(options, "polynomial_degree", DEFAULT_DEGREE, "option"))
    if ensemble is not None:
        predicted, phase = _learned_on_crops(data, ensemble, degree)
        path = "learned"
    else:
        predicted, phase = _classical_on_crops(data, degree)
        path = "classical"
    return {
        "layout": "lvquan",
        "path": path,
        "data": data.source,
        "items": len(data),
        "subjects": len(np.unique(data.subject)),
        "index_order": list(INDEX_NAMES),
        "metrics": index_metrics(predicted, data.indices),
        "phase_error_rate": phase_error_rate(phase, data.phase),
        "lvquan18_winner": ANCHORS,
    }


# ---------------------------------------------------------------------------------------------- contours
def _read_series(folder: Path) -> ImageSeries:
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise PipelineInputError(f"{folder}: no .dcm files")
    with warnings.catch_warnings():
        # Real files carry UIDs with leading-zero components; reading stays tolerant.
        warnings.simplefilter("ignore", UserWarning)
        datasets = [pydicom.dcmread(f, stop_before_pixels=True, force=True) for f in files]
    return ImageSeries(datasets, files)


def _contours(case: Path) -> dict[int, dict[str, npt.NDArray[np.float64]]]:
    """Contour points per DICOM file number: {"i": (n, 2) x y, "o": ...}."""
    found: dict[int, dict[str, npt.NDArray[np.float64]]] = {}
    for path in sorted((case / "contours").rglob("*.txt")):
        match = _CONTOUR_FILE.search(path.name)
        if match is None:
            continue
        points = np.loadtxt(path, ndmin=2)
        if points.shape[0] >= 3 and points.shape[1] >= 2:
            found.setdefault(int(match.group(1)), {})[match.group(2).lower()] = points[:, :2]
    return found


def _circular_distance(a: int, b: int, n: int) -> int:
    d = abs(a - b) % n
    return min(d, n - d)


def _contour_rows(
    p: int, t: int, contours: dict[str, npt.NDArray[np.float64]], analysis: PositionAnalysis | None, ctx: _CaseContext
) -> tuple[list[dict[str, Any]], tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None]:
    """Dice and area error of each expert contour of one frame, and (ours, expert's) indices when the frame
    has both contours."""
    masks = {kind: polygon_mask(points, ctx.shape) for kind, points in contours.items()}
    segmented = analysis is not None and analysis.contours[t] is not None
    rows = []
    for kind, name in (("i", "cavity"), ("o", "epicardium")):
        if kind not in masks:
            continue
        ours = None
        if segmented:
            assert analysis is not None  # segmented implies it
            ours = analysis.cavity[t] if kind == "i" else analysis.cavity[t] | analysis.myocardium[t]
        expert_area = float(masks[kind].sum()) * ctx.pixel_area
        ours_area = None if ours is None else float(ours.sum()) * ctx.pixel_area
        rows.append(
            {
                "position": p,
                "frame": t,
                "contour": name,
                "mid_ventricular": p == ctx.mid,
                "expert_mm2": _round(expert_area, 1),
                "ours_mm2": _round(ours_area, 1),
                "area_error_percent": None
                if ours_area is None
                else _round(100.0 * (ours_area - expert_area) / expert_area, 2),
                "dice": None if ours is None else _round(dice(ours, masks[kind])),
            }
        )
    indices = None
    if segmented and "i" in masks and "o" in masks:
        assert analysis is not None  # segmented implies it
        expert = lvquan_indices(masks["i"], masks["o"] & ~masks["i"], ctx.spacing).as_vector()
        indices = (analysis.indices[t], expert)
    return rows, indices


@dataclass
class _CaseContext:
    shape: tuple[int, int]
    spacing: tuple[float, float]
    pixel_area: float
    mid: int | None
    n_times: int


def _contoured_frames(case: Path, series: ImageSeries, cine: Cine) -> dict[tuple[int, int], dict[str, Any]]:
    """Expert contours by (position, frame) of the cine."""
    where = {src.sop_instance_uid: (p, t) for p, row in enumerate(cine.sources) for t, src in enumerate(row)}
    number_to_uid = {
        int(f.stem): str(ds.SOPInstanceUID) for ds, f in zip(series.datasets, series.files) if f.stem.isdigit()
    }
    by_frame: dict[tuple[int, int], dict[str, Any]] = {}
    for file_number, contours in _contours(case).items():
        uid = number_to_uid.get(file_number)
        if uid in where:
            by_frame[where[uid]] = contours
    if not by_frame:
        raise PipelineInputError(f"{case.name}: no contour file matches a DICOM file")
    return by_frame


def _phase_row(p: int, analysis: PositionAnalysis, cavity_areas: dict[int, float], n: int) -> dict[str, Any]:
    """Our ED/ES against the expert's two contoured frames at one position (the larger cavity is ED)."""
    assert analysis.phase is not None  # callers check
    (t_es, _), (t_ed, _) = sorted(cavity_areas.items(), key=lambda kv: kv[1])
    return {
        "position": p,
        "expert_ed": t_ed,
        "expert_es": t_es,
        "ours_ed": analysis.phase.ed,
        "ours_es": analysis.phase.es,
        "ed_frames_off": _circular_distance(analysis.phase.ed, t_ed, n),
        "es_frames_off": _circular_distance(analysis.phase.es, t_es, n),
    }


def _evaluate_case(pipeline: CardiacLvPipeline, case: Path, degree: int) -> dict[str, Any]:
    series = _read_series(case / "dicom")
    cine = PipelineInputs([series]).cine()
    spacing = cine.pixel_spacing_mm
    if spacing is None:
        raise PipelineInputError(f"{case.name}: no pixel spacing, areas cannot be compared in mm2")
    by_frame = _contoured_frames(case, series, cine)
    locations = pipeline.locate(cine)
    mid, why = mid_ventricular(locations)
    shape = (int(cine.array.shape[2]), int(cine.array.shape[3]))
    ctx = _CaseContext(shape, spacing, spacing[0] * spacing[1], mid, cine.n_times)
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    phase_rows = []
    for p in sorted({p for p, _ in by_frame}):
        loc = locations[p]
        analysis = analyse_position(cine.array[p], spacing, loc, p, degree) if loc is not None else None
        cavity_areas = {}
        for (q, t), contours in sorted(by_frame.items()):
            if q != p:
                continue
            frame_rows, indices = _contour_rows(p, t, contours, analysis, ctx)
            rows += frame_rows
            pairs += [indices] if indices is not None else []
            cavity = [r["expert_mm2"] for r in frame_rows if r["contour"] == "cavity"]
            if cavity:
                cavity_areas[t] = cavity[0]
        if analysis is not None and analysis.phase is not None and len(cavity_areas) == 2:
            phase_rows.append(_phase_row(p, analysis, cavity_areas, cine.n_times))
    return {
        "case": case.name,
        "positions": cine.n_positions,
        "time_points": cine.n_times,
        "mid_position": mid,
        "mid_position_reason": why,
        "summary": _contour_summary(rows, mid),
        "indices_at_frames_with_both_contours": index_metrics(
            np.array([o for o, _ in pairs]), np.array([e for _, e in pairs])
        )
        if pairs
        else None,
        "phase": phase_rows,
        "contours": rows,
    }


def _contour_summary(rows: list[dict[str, Any]], mid: int | None) -> dict[str, Any]:
    def stats(selected: list[dict[str, Any]]) -> dict[str, Any]:
        done = [r for r in selected if r["dice"] is not None]
        return {
            "contours": len(selected),
            "segmented": len(done),
            "mean_dice": _round(float(np.mean([r["dice"] for r in done]))) if done else None,
            "mean_abs_area_error_percent": _round(float(np.mean([abs(r["area_error_percent"]) for r in done])), 2)
            if done
            else None,
        }

    summary: dict[str, Any] = {}
    for kind in ("cavity", "epicardium"):
        of_kind = [r for r in rows if r["contour"] == kind]
        summary[kind] = {"all": stats(of_kind), "mid_ventricular": stats([r for r in of_kind if r["position"] == mid])}
    return summary


def evaluate(
    pipeline: CardiacLvPipeline, data_dir: Path, options: Mapping[str, str], ctx: RunContext
) -> dict[str, Any]:
    """Metrics of whatever path ``ctx`` makes available on the labelled data in ``data_dir``."""
    if not data_dir.is_dir():
        raise PipelineInputError(f"{data_dir}: no such directory")
    if any(data_dir.glob("*.mat")) or any(data_dir.glob("*.npz")):
        return _evaluate_labelled(data_dir, options, _ensemble(pipeline, ctx))
    cases = sorted(p for p in data_dir.iterdir() if (p / "dicom").is_dir() and (p / "contours").is_dir())
    if not cases:
        raise PipelineInputError(
            f"{data_dir}: neither *.mat / *.npz nor <case>/dicom + <case>/contours (see pipelines/cardiac_lv/README.md)"
        )
    degree = int(number(options, "polynomial_degree", DEFAULT_DEGREE, "option"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # real files' UIDs with leading zeros, warned on each read
        reports = [_evaluate_case(pipeline, case, degree) for case in cases]
    return {"layout": "contours", "path": "classical", "cases": reports}
