"""bone_age: the 13 RUS bones graded by a Bi-GRU with a filter gate, TW3-RUS and RUS-CHN bone age (patent 004).

Chained after hand_xray: it takes hand_xray's derived image "left_hand" (the kept left hand, cropped) and
never re-reads the radiograph. Steps: the 13 regions (the YOLOv3 detector when its weights are installed,
else the classical localisation from the hand's shape); the 128 x 128 crops graded by the patent's model
(ResNet, context Bi-GRU, filter gate, Bi-GRU, per-bone heads, age module); grades → scores → maturity score
→ bone age by sex with both standards (the exact scoring layer, classical); the chronological age from the
header and the difference.

Without the grader's weights it cannot grade: the result is "not assessable (model weights not installed)"
and still shows the 13 regions for manual grading (regions only, no value). ``dicomnode bone-age score`` is
the scoring layer as a calculator (:mod:`pipelines.bone_age.calculator`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from dicomnode.errors import ValidationError
from dicomnode.plugins.api import (
    Code,
    Compute,
    Consumes,
    DerivedImage,
    Environment,
    NotAssessable,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    Requirements,
    RunContext,
    Selector,
    WeightsSpec,
    local_code,
)
from pipelines.bone_age import report
from pipelines.bone_age.ages import chronological_age, difference_months
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.handshape import FloatImage, display
from pipelines.bone_age.inference import DETECTOR, GRADER, Grading, Models, Regions, find_regions, grade, load_models
from pipelines.bone_age.scoring import Scoring, Standard, grade_label, parse_sex, score_hand
from pipelines.bone_age.summary import SummaryInput, draw_summary, wrap

log = logging.getLogger(__name__)

NOT_LOCALISED = local_code("na-bones", "RUS bones not all localised")


def _sex(ds: Dataset | None) -> str | None:
    try:
        return parse_sex(str(ds.get("PatientSex", "") or "")) if ds is not None else None
    except ValidationError:
        return None


def _source_header(inputs: PipelineInputs, derived: DerivedImage) -> Dataset | None:
    """The header of the radiograph the left hand was cut from (age, sex, dates)."""
    for series in inputs.series:
        for ds in series.datasets:
            if str(ds.get("SOPInstanceUID", "")) == derived.source_sop_instance_uid:
                return ds
    return inputs.series[0].first if inputs.series else None


class BoneAgePipeline(PipelineBase):
    """Bone age of the left hand: 13 RUS bones, Bi-GRU grading, TW3-RUS and RUS-CHN (patent 004)."""

    name = "bone_age"
    version = "1.0.0"
    description = (
        "Finds the 13 RUS bones of the left hand, grades them with a Bi-GRU over ResNet features with a filter "
        "gate, and converts the grades to TW3-RUS and RUS-CHN (China-05) bone ages by sex; the chronological age "
        "and the difference. Without the grader's weights it shows the 13 regions and does not grade."
    )
    selector = Selector(modalities=("DX", "CR", "OT"), body_parts=("HAND",), image_type_excludes=("LOCALIZER",))
    produces = frozenset({OutputKind.SR, OutputKind.SUMMARY})
    requirements = Requirements(
        compute=Compute.GPU_OPTIONAL,
        memory_mb=3072,
        weights=(
            WeightsSpec(DETECTOR, "bone_detector.pt", description="YOLOv3 detector of the 13 RUS bones (416 x 416)"),
            WeightsSpec(GRADER, "bone_grader.pt", description="ResNet + filter gate + Bi-GRU grader and age module"),
        ),
    )
    consumes = (Consumes("hand_xray", "left_hand"),)
    command_name = "bone-age"

    # ----------------------------------------------------------------------------------------- contract
    def is_available(self, env: Environment) -> tuple[bool, str]:
        grader = env.weights.get(GRADER)
        detector = env.weights.get(DETECTOR)
        regions = "detector" if detector is not None and detector.ok else "classical localisation"
        if grader is None or not grader.ok:
            reason = grader.reason if grader is not None else "not declared"
            return True, f"regions only ({regions}); cannot grade: bone_grader {reason}"
        return True, f"grades with bone_grader, regions by {regions}"

    def setup(self, ctx: RunContext) -> Any:
        """The detector and grader on ``ctx.device``, once per worker; None when neither is installed."""
        return load_models(ctx)

    def command(self, argv: Sequence[str]) -> int:
        from pipelines.bone_age.calculator import main

        return main(argv)

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
        from pipelines.bone_age.train import train

        return train(data_dir, output_dir, options)

    def evaluate(self, data_dir: Path, options: Mapping[str, str], ctx: RunContext) -> dict[str, Any]:
        from pipelines.bone_age.evaluate import evaluate

        return evaluate(data_dir, options, ctx)

    # ----------------------------------------------------------------------------------------- run
    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        derived = inputs.derived("hand_xray", "left_hand")
        header = _source_header(inputs, derived)
        image = display(derived.pixels, derived.photometric)
        models = ctx.state if isinstance(ctx.state, Models) else None
        found = find_regions(models, image)
        source = report.SourceMap.of(derived)
        sex = _sex(header)
        chrono = chronological_age(header) if header is not None else None
        chrono_years = chrono.years if chrono is not None else None
        details: dict[str, Any] = {
            "regions_by": found.produced_by.value,
            "regions": {b: [round(v, 1) for v in _source_box(source, r.corners)] for b, r in found.regions.items()},
            "localisation_problems": found.problems,
            "thumb_side": found.thumb_side,
            "sex": sex,
            "chronological_age_years": round(chrono_years, 2) if chrono_years is not None else None,
            "chronological_age_from": chrono.source if chrono is not None else None,
        }
        if found.thumb_side != "right":
            details["flags"] = ["thumb_on_viewer_left"]
        upstream = inputs.upstream["hand_xray"].details
        if upstream.get("selected_side") == "R":
            text = "hand_xray found no left hand and kept a right one: TW3-RUS and RUS-CHN grade the left hand."
            return self._refusal(NotAssessable.WRONG_ANATOMY, text, image, found, source, details, models)
        if models is None or models.grader is None:
            reason = (models.missing.get(GRADER) if models else None) or "bone_grader weights not installed"
            text = f"Cannot grade the bones: {reason}. {self._regions_sentence(found)}"
            return self._refusal(NotAssessable.MODEL_NOT_INSTALLED, text, image, found, source, details, models)
        if not found.complete:
            missing = [b for b in BONE_KEYS if b not in found.regions]
            text = f"Not all 13 RUS bones were localised (missing {', '.join(missing)}): {'; '.join(found.problems)}."
            return self._refusal(NOT_LOCALISED, text, image, found, source, details, models)
        grading = grade(models.grader, image, found.boxes(), models.device)
        details["grades"] = {s.value: {b: grade_label(s, c) for b, c in g.items()} for s, g in grading.classes.items()}
        details["model_age_years"] = round(grading.model_age_years, 2)
        if sex is None:
            text = "The bones were graded, but PatientSex (M or F) is missing: the scoring tables are by sex."
            return self._refusal(
                NotAssessable.MISSING_INFORMATION, text, image, found, source, details, models, grading
            )
        scorings = {s: score_hand(s, sex, classes) for s, classes in grading.classes.items()}
        return self._assessed(image, found, source, grading, scorings, chrono_years, details, models)

    # ----------------------------------------------------------------------------------------- results
    @staticmethod
    def _regions_sentence(found: Regions) -> str:
        how = "the bone detector" if found.produced_by is ProducedBy.LEARNED else "the classical localisation"
        shown = len(found.regions)
        return f"{shown} of 13 regions found by {how} are shown for manual grading."

    def _refusal(
        self,
        reason: Code,
        text: str,
        image: FloatImage,
        found: Regions,
        source: report.SourceMap,
        details: dict[str, Any],
        models: Models | None,
        grading: Grading | None = None,
    ) -> PipelineResult:
        labels = {}
        if grading is not None:
            labels = {b: "/".join(grade_label(s, c[b]) for s, c in grading.classes.items()) for b in BONE_KEYS}
        picture = draw_summary(
            SummaryInput(
                image,
                found.regions,
                labels,
                details.get("sex"),
                [],
                details.get("chronological_age_years"),
                None,
                wrap(text),
                "Bone age: not assessed",
            )
        )
        result = PipelineResult.not_assessable(
            reason,
            text,
            produced_by=found.produced_by,
            details=details,
            summary_image=picture,
            groups=report.region_groups(found.regions, source, found.produced_by),
        )
        result.summary_title = "Bone age: regions for manual grading"
        result.models = list(models.infos) if models else []
        return result

    def _assessed(
        self,
        image: FloatImage,
        found: Regions,
        source: report.SourceMap,
        grading: Grading,
        scorings: dict[Standard, Scoring],
        chrono_years: float | None,
        details: dict[str, Any],
        models: Models,
    ) -> PipelineResult:
        groups = report.bone_groups(found.regions, source, grading, scorings)
        groups += [report.standard_group(s, chrono_years, source) for s in scorings.values()]
        groups += report.age_groups(chrono_years, grading.model_age_years, source)
        details["standards"] = {
            s.value: {
                "maturity_score": sc.total,
                "scores": sc.scores,
                "bone_age_years": sc.bone_age.years,
                "bone_age": sc.bone_age.text,
                "bone_age_status": sc.bone_age.status,
                "difference_months": (
                    difference_months(sc.bone_age.years, chrono_years)
                    if chrono_years is not None and sc.bone_age.years is not None and sc.bone_age.status == "in_range"
                    else None
                ),
            }
            for s, sc in scorings.items()
        }
        text = _sentence(scorings, chrono_years, grading.model_age_years, details["sex"])
        labels = {b: "/".join(grade_label(s, c[b]) for s, c in grading.classes.items()) for b in BONE_KEYS}
        lines = report.table_lines(grading, list(scorings.values()))
        lines += [f"{sc.standard.label}: score {sc.total}, bone age {sc.bone_age.text}" for sc in scorings.values()]
        if chrono_years is not None:
            lines.append(f"chronological age {chrono_years:.1f} y")
        lines.append(f"model age {grading.model_age_years:.1f} y (learned)")
        picture = draw_summary(
            SummaryInput(
                image,
                found.regions,
                labels,
                details["sex"],
                list(scorings.values()),
                chrono_years,
                grading.model_age_years,
                lines,
                "Bone age (left hand, RUS)",
            )
        )
        return PipelineResult(
            produced_by=ProducedBy.LEARNED,
            groups=groups,
            summary_image=picture,
            summary_title="Bone age: 13 RUS bones, TW3-RUS and RUS-CHN",
            text=text,
            details=details,
            models=list(models.infos),
        )


def _source_box(source: report.SourceMap, corners: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    pts = [source.point(x, y) for x, y in corners]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _sentence(scorings: Mapping[Standard, Scoring], chrono: float | None, model_age: float, sex: str | None) -> str:
    parts = [f"{sc.standard.label} {sc.bone_age.text} (score {sc.total})" for sc in scorings.values()]
    text = "Bone age " + ", ".join(parts) + f"; {'boy' if sex == 'M' else 'girl'}"
    if chrono is not None:
        text += f", chronological age {chrono:.1f} y"
        diffs = [
            f"{sc.standard.label} {difference_months(sc.bone_age.years, chrono):+.1f} months"
            for sc in scorings.values()
            if sc.bone_age.years is not None and sc.bone_age.status == "in_range"
        ]
        if diffs:
            text += " (difference " + ", ".join(diffs) + ")"
    return text + f". Model age {model_age:.1f} y. Grades by the learned grader, scores and ages by the tables."
