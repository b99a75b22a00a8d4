"""``cardiac_lv``: LV quantification and cardiac phase from short-axis cine MR (patent 001, PIPELINES.md C).

Per frame of the mid-ventricular position: the 11 LVQuan indices (cavity and myocardium areas, three cavity
dimensions, six regional wall thicknesses); per position: the phase of every frame from a polynomial fit of the
cavity-area curve (ED = its maximum, ES = its minimum), the fractional area change; with
``analyse_all_positions`` every position of the stack, and volumes and ejection fraction by Simpson's method.

Two paths. Classical (always): LV search, segmentation on a fixed grid around the LV, the LVQuan geometry on
the masks. Learned (when the DLA ensemble's weights are installed and verify): the 11 indices regressed by the
5 networks and averaged, the phase from their cavity areas; the SEG and the volumes stay classical.

Parameters (``[pipelines.params.cardiac_lv]`` or ``--param``): ``analyse_all_positions`` (false),
``polynomial_degree`` (11), ``min_time_points`` (10), ``dla_ensemble_sha256`` / ``dla_ensemble_file`` (the
weights). Input domain, how positions are chosen and what is reported: README.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.errors import ValidationError
from dicomnode.plugins.api import (
    Cine,
    Compute,
    Environment,
    ImageSeries,
    ModelInfo,
    NotAssessable,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    Requirements,
    RunContext,
    Selector,
    Trigger,
    WeightsSpec,
)
from pipelines.cardiac_lv import codes, results
from pipelines.cardiac_lv.analysis import PositionAnalysis, analyse_position
from pipelines.cardiac_lv.locate import LvLocation, find_candidates, track_positions
from pipelines.cardiac_lv.options import flag, number
from pipelines.cardiac_lv.phase import DEFAULT_DEGREE, fit_phase
from pipelines.cardiac_lv.preprocess import equalise
from pipelines.cardiac_lv.stack import StackVolumes, mid_ventricular, ringed_run, simpson
from pipelines.cardiac_lv.summary import render_summary

__all__ = ["CardiacLvPipeline"]

log = logging.getLogger(__name__)

MIN_TIME_POINTS = 10  # fewer phases cannot show one cardiac cycle well enough to find ED and ES
WEIGHTS = WeightsSpec(
    "dla_ensemble",
    "cardiac_lv_dla.pt",
    description="the 5 cross-validated DLA regressors of the 11 LVQuan indices (dicomnode train cardiac_lv)",
)
MODEL_NAME = "cardiac_lv_dla_ensemble"
_CARDIAC_PARTS = frozenset({"HEART", "CHEST", "CORONARYARTERY"})


def _positions_of(series: ImageSeries) -> int:
    """Slice positions of a series from its headers (frames / time points)."""
    times = max(series.time_points(), 1)
    return max(1, round(series.frame_count / times))


def choose_cine(inputs: PipelineInputs) -> Cine:
    """The short-axis cine of the input: among the series with more than one time point (a study may also
    hold localisers and static stacks), the one holding the most slice positions when one series holds
    several, else the stack the contract builds from one series per position."""
    cines = [s for s in inputs.series if s.time_points() > 1] or list(inputs.series)
    multi = [s for s in cines if _positions_of(s) > 1]
    if multi:
        return max(multi, key=_positions_of).cine()
    return PipelineInputs(series=cines).cine()


def _in_plane_mm(cine: Cine, p: int, centre_rc: tuple[float, float]) -> npt.NDArray[np.float64]:
    """In-plane patient coordinates (mm along the row and column directions) of a pixel at position p."""
    spacing = cine.pixel_spacing_mm or (1.0, 1.0)
    if len(cine.orientation) != 6:
        return np.array([centre_rc[0] * spacing[0], centre_rc[1] * spacing[1]])
    across, down = np.asarray(cine.orientation[:3]), np.asarray(cine.orientation[3:])
    offset = np.asarray(cine.positions[p]) - np.asarray(cine.positions[0])
    return np.array([offset @ down + centre_rc[0] * spacing[0], offset @ across + centre_rc[1] * spacing[1]])


class CardiacLvPipeline(PipelineBase):
    """The contract's pipeline object (see the module docstring)."""

    name = "cardiac_lv"
    version = "1.0.0"
    description = "Cine MR: LV areas, dimensions, regional wall thickness and cardiac phase per frame (LVQuan)"
    selector = Selector(
        modalities=("MR",),
        image_type_excludes=("LOCALIZER",),
        min_time_points=MIN_TIME_POINTS,
        min_frames=MIN_TIME_POINTS,
        trigger=Trigger.STUDY,
    )
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})
    requirements = Requirements(compute=Compute.GPU_OPTIONAL, memory_mb=2048, weights=(WEIGHTS,))

    def is_available(self, env: Environment) -> tuple[bool, str]:
        status = env.weights.get(WEIGHTS.name)
        if status is not None and status.ok:
            return True, f"learned DLA ensemble verified ({status.path}); classical segmentation for the SEG"
        reason = status.reason if status is not None else "not configured"
        return True, f"classical path (learned DLA ensemble: {reason})"

    # ------------------------------------------------------------------------------------ learned part
    def setup(self, ctx: RunContext) -> Any:
        status = ctx.weights.get(WEIGHTS.name)
        if status is None or not status.ok:
            return None
        from pipelines.cardiac_lv.model import load_ensemble

        return load_ensemble(ctx.weights_path(WEIGHTS.name), ctx.device, status.sha256 or "")

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
        from pipelines.cardiac_lv.train import train

        return train(data_dir, output_dir, options)

    def evaluate(self, data_dir: Path, options: Mapping[str, str], ctx: RunContext) -> dict[str, Any]:
        from pipelines.cardiac_lv.evaluate import evaluate

        return evaluate(self, data_dir, options, ctx)

    # ------------------------------------------------------------------------------------ run
    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        params = ctx.params
        degree = int(number(params, "polynomial_degree", DEFAULT_DEGREE))
        min_times = int(number(params, "min_time_points", MIN_TIME_POINTS))
        if degree < 2:
            raise ValidationError(f"parameter polynomial_degree must be at least 2, got {degree}")
        parts = {s.body_part for s in inputs.series if s.body_part}
        if parts and not parts & _CARDIAC_PARTS:
            return PipelineResult.not_assessable(
                NotAssessable.WRONG_ANATOMY, f"the series show {', '.join(sorted(parts))}, not the heart"
            )
        cine = choose_cine(inputs)
        if cine.n_times < min_times:
            return PipelineResult.not_assessable(
                NotAssessable.TOO_FEW_FRAMES,
                f"{cine.n_times} time points per slice position; a cardiac cycle needs at least {min_times}",
            )
        spacing = cine.pixel_spacing_mm
        locations = self.locate(cine)
        mid, why = mid_ventricular(locations)
        if mid is None:
            return PipelineResult.not_assessable(
                codes.NO_LV_FOUND, f"no left-ventricle blood pool with a myocardial ring was found ({why})"
            )
        analyse_all = flag(params, "analyse_all_positions", False)
        wanted = [p for p, loc in enumerate(locations) if loc is not None] if analyse_all else [mid]
        analyses: dict[int, PositionAnalysis] = {}
        for p in wanted:
            loc = locations[p]
            assert loc is not None  # wanted holds only positions with an LV
            analyses[p] = analyse_position(cine.array[p], spacing, loc, p, degree)
        main = analyses[mid]
        if not main.assessable:
            return PipelineResult.not_assessable(
                NotAssessable.INSUFFICIENT_QUALITY,
                f"the LV blood pool could not be segmented in {len(main.failed_frames)} of {cine.n_times} frames",
            )
        return self._result(cine, locations, mid, why, analyses, degree, ctx)

    def locate(self, cine: Cine) -> list[LvLocation | None]:
        """The LV at every position, tracked through the stack (None where there is none)."""
        spacing = cine.pixel_spacing_mm or (1.0, 1.0)
        candidates = [find_candidates(equalise(cine.array[p]), spacing) for p in range(cine.n_positions)]
        centres = [[_in_plane_mm(cine, p, c.centre_rc) for c in cands] for p, cands in enumerate(candidates)]
        return track_positions(candidates, centres)

    def _learned(
        self, ensemble: Any, cine: Cine, location: LvLocation, position: int, degree: int
    ) -> results.FrameSeries:
        from pipelines.cardiac_lv.datasets import learned_crops, physical_indices

        crops, side = learned_crops(cine.array[position], cine.pixel_spacing_mm or (1.0, 1.0), location)
        indices = physical_indices(ensemble.predict(crops), np.full(len(crops), side))
        return results.FrameSeries(
            position,
            indices,
            fit_phase(indices[:, 0], degree),
            ProducedBy.LEARNED,
            cine.pixel_spacing_mm is None,
            MODEL_NAME,
        )

    def _result(
        self,
        cine: Cine,
        locations: list[LvLocation | None],
        mid: int,
        why: str,
        analyses: dict[int, PositionAnalysis],
        degree: int,
        ctx: RunContext,
    ) -> PipelineResult:
        main = analyses[mid]
        assert main.phase is not None  # checked by run()
        ensemble = ctx.state
        models: list[ModelInfo] = []
        if ensemble is not None:
            reported = self._learned(ensemble, cine, main.location, mid, degree)
            models.append(ModelInfo(MODEL_NAME, self.version, getattr(ensemble, "sha256", "") or "unknown"))
        else:
            reported = results.FrameSeries(mid, main.indices, main.phase, ProducedBy.CLASSICAL, main.in_pixels)
        names = results.position_names(cine.n_positions)
        uid_root = cine.sources[mid][0].series_instance_uid or cine.frame_of_reference_uid or "cardiac_lv"
        label_map = results.label_map(
            cine, {p: a.cavity for p, a in analyses.items()}, {p: a.myocardium for p, a in analyses.items()}
        )
        groups = results.frame_groups(reported, cine, uid_root, names[mid])
        groups.append(results.function_group(reported, cine, uid_root, names[mid], True))
        run = ringed_run(locations)
        volumes = simpson([analyses.get(p) for p in range(cine.n_positions)], cine.slice_spacing_mm or 0.0, run)
        if volumes is not None and len(analyses) > 1:
            group = results.volume_group(volumes, uid_root, main.in_pixels)
            if group is not None:
                groups.append(group)
        else:
            volumes = None
        lines = self._summary_lines(reported, cine, mid, why, volumes, main)
        image = render_summary(
            cine.array[mid],
            main.cavity,
            main.myocardium,
            reported.indices[:, 0],
            reported.phase,
            None if cine.pixel_spacing_mm is None else float(cine.pixel_spacing_mm[1]),
            cine.orientation,
            lines,
            f"LV quantification, {names[mid]} ({reported.produced_by.value} path)",
        )
        details = self._details(cine, locations, mid, why, analyses, reported, volumes, degree)
        return PipelineResult(
            produced_by=ProducedBy.CLASSICAL,
            groups=groups,
            label_maps=[label_map],
            summary_image=image,
            summary_title="LV quantification (cardiac_lv)",
            text="; ".join(lines[:3]),
            details=details,
            models=models,
        )

    @staticmethod
    def _summary_lines(
        reported: results.FrameSeries,
        cine: Cine,
        mid: int,
        why: str,
        volumes: StackVolumes | None,
        main: PositionAnalysis,
    ) -> list[str]:
        unit_a, unit_l = ("px2", "px") if reported.in_pixels else ("mm2", "mm")
        ed, es = reported.phase.ed, reported.phase.es
        a_ed, a_es = reported.indices[ed, 0], reported.indices[es, 0]
        lines = [
            f"ED frame {ed + 1}, ES frame {es + 1}: cavity {a_ed:.0f} / {a_es:.0f} {unit_a}, "
            f"fractional area change {100 * (a_ed - a_es) / a_ed:.0f} %",
            "wall thickness at ED (IS, I, IL, AL, A, AS): "
            + ", ".join(f"{v:.1f}" for v in reported.indices[ed, 5:])
            + f" {unit_l}",
            "cavity dimensions at ED (D1-D3): "
            + ", ".join(f"{v:.1f}" for v in reported.indices[ed, 2:5])
            + f" {unit_l}",
        ]
        if volumes is not None:
            lines.append(
                f"stack (Simpson): EDV {volumes.edv_ml:.0f} mL, ESV {volumes.esv_ml:.0f} mL, "
                f"EF {volumes.ef_percent:.0f} %, positions {volumes.positions[0] + 1}-{volumes.positions[-1] + 1}"
            )
        lines.append(f"position: {why}")
        if reported.in_pixels:
            lines.append("no pixel spacing in the headers: lengths and areas in pixels")
        lines.extend(main.notes)
        lines.append("RV assumed on the image left (LVQuan sectors); indices per frame in the SR")
        return lines

    @staticmethod
    def _details(
        cine: Cine,
        locations: list[LvLocation | None],
        mid: int,
        why: str,
        analyses: dict[int, PositionAnalysis],
        reported: results.FrameSeries,
        volumes: StackVolumes | None,
        degree: int,
    ) -> dict[str, Any]:
        def rows(values: npt.NDArray[np.float64]) -> list[list[float | None]]:
            rounded = np.round(values, 3).astype(object)
            rounded[~np.isfinite(values)] = None
            return [[None if v is None else float(v) for v in row] for row in rounded.tolist()]

        details: dict[str, Any] = {
            "produced_by": reported.produced_by.value,
            "units": {"length": "px" if reported.in_pixels else "mm", "area": "px2" if reported.in_pixels else "mm2"},
            "index_order": ["A1", "A2", "D1", "D2", "D3", "RWT_IS", "RWT_I", "RWT_IL", "RWT_AL", "RWT_A", "RWT_AS"],
            "mid_position": mid,
            "mid_position_reason": why,
            "positions": cine.n_positions,
            "time_points": cine.n_times,
            "time_order": cine.time_order,
            "trigger_times_ms": cine.trigger_times_ms[mid],
            "cine_notes": list(cine.notes),
            "lv_search": [None if loc is None else loc.describe() for loc in locations],
            "phase": {
                "ed_frame": reported.phase.ed,
                "es_frame": reported.phase.es,
                "labels": reported.phase.labels.tolist(),
                "degree": reported.phase.degree,
                "degree_requested": degree,
            },
            "indices": rows(reported.indices),
            "classical": {
                str(p): {
                    "indices": rows(a.indices),
                    "failed_frames": a.failed_frames,
                    "ed_frame": None if a.phase is None else a.phase.ed,
                    "es_frame": None if a.phase is None else a.phase.es,
                    "notes": a.notes,
                }
                for p, a in analyses.items()
            },
        }
        if volumes is not None:
            details["volumes"] = {
                "volumes_ml": [round(float(v), 2) for v in volumes.volumes_ml],
                "ed_frame": volumes.ed,
                "es_frame": volumes.es,
                "edv_ml": round(volumes.edv_ml, 2),
                "esv_ml": round(volumes.esv_ml, 2),
                "ef_percent": round(volumes.ef_percent, 2),
                "mass_g": round(volumes.mass_g, 1),
                "positions": volumes.positions,
                "interpolated_positions": volumes.interpolated,
            }
        return details
