"""Routing: series facts, selector and rule matching (with reasons), rule validation, decide(), route explain."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation

from dicomnode.errors import ConfigError, ValidationError
from dicomnode.plugins.api import (
    OutputKind,
    Pipeline,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    PriorSpec,
    RunContext,
    Selector,
    Trigger,
)
from dicomnode.routing.explain import explain_folder
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.router import decide
from dicomnode.routing.rules import Rule, load_rules, match_rule
from dicomnode.routing.selectors import match_selector
from dicomnode.testing.synthetic import StudyInfo, write_ct_series, write_radiograph
from tests.conftest import shared_data


# --------------------------------------------------------------------------------------------- fakes
@dataclass
class FakePipeline(PipelineBase):
    """Pure-logic stand-in with the Pipeline protocol's attributes (routing never calls run)."""

    name: str
    selector: Selector
    version: str = "1.0"
    description: str = "test pipeline"
    produces: frozenset[OutputKind] = frozenset({OutputKind.SR})
    priors: PriorSpec | None = None

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        raise NotImplementedError("routing tests never run a pipeline")


LUNG = FakePipeline(
    "lung",
    Selector(
        modalities=("CT",),
        body_parts=("CHEST",),
        image_type_excludes=("LOCALIZER",),
        min_instances=5,
        max_slice_thickness_mm=2.5,
    ),
)
HAND = FakePipeline("hand", Selector(modalities=("DX", "CR"), body_parts=("HAND",)))
LONGITUDINAL = FakePipeline("longitudinal", Selector(modalities=("CT",), trigger=Trigger.STUDY))


def _pipelines(*pipelines: FakePipeline) -> dict[str, Pipeline]:
    return {p.name: p for p in pipelines}


def _facts(**overrides: Any) -> SeriesFacts:
    base = SeriesFacts(
        modality="CT",
        body_part="CHEST",
        body_part_source="BodyPartExamined",
        sop_class_uid=str(CTImageStorage),
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        series_description="CT Thorax 1.0 B70f",
        study_description="CT chest with contrast",
        calling_ae="CT_SCANNER_1",
        called_ae="DICOMNODE",
        instance_count=120,
        slice_thickness_mm=1.0,
        frame_count=120,
        time_points=1,
        series_instance_uid="1.2.3.4",
        study_instance_uid="1.2.3",
    )
    return replace(base, **overrides)


# --------------------------------------------------------------------------------------------- facts
def test_facts_from_synthetic_ct_header(tmp_path: Path) -> None:
    info = StudyInfo(study_description="Thorax native")
    paths = write_ct_series(
        np.zeros((3, 8, 8)), tmp_path, spacing=(2.0, 0.7, 0.7), info=info, body_part="THORAX", series_number=3
    )
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    facts = SeriesFacts.from_dataset(ds, instance_count=3, calling_ae="CT1 ", called_ae="NODE")
    assert facts.modality == "CT"
    assert (facts.body_part, facts.body_part_source) == ("CHEST", "BodyPartExamined")
    assert facts.sop_class_uid == CTImageStorage
    assert facts.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert facts.slice_thickness_mm == 2.0
    assert (facts.calling_ae, facts.called_ae, facts.instance_count) == ("CT1", "NODE", 3)
    assert facts.series_instance_uid == ds.SeriesInstanceUID
    assert facts.study_instance_uid == info.study_instance_uid
    assert facts.study_description == "Thorax native"


def test_facts_json_round_trip() -> None:
    facts = _facts(slice_thickness_mm=None, body_part=None, body_part_source="none")
    assert SeriesFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    assert SeriesFacts.from_dict(json.loads(json.dumps(_facts().to_dict()))) == _facts()


def test_facts_from_dict_names_bad_keys() -> None:
    data = _facts().to_dict()
    data["colour"] = "blue"
    del data["modality"]
    with pytest.raises(ValidationError, match=r"unknown keys \['colour'\], missing keys \['modality'\]"):
        SeriesFacts.from_dict(data)


def test_empty_sop_class_uid_falls_back_to_file_meta() -> None:
    ds = Dataset()
    ds.Modality = "DX"
    ds.SOPClassUID = ""
    ds.ImageType = "ORIGINAL"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    facts = SeriesFacts.from_dataset(ds, instance_count=1)
    assert facts.sop_class_uid == DigitalXRayImageStorageForPresentation
    assert facts.image_type == ("ORIGINAL",)
    assert facts.slice_thickness_mm is None


def test_facts_of_totalsegmentator_series_with_empty_sop_class_uid() -> None:
    path = sorted(shared_data("ct", "totalseg", "example_ct_dicom").iterdir())[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SOPClassUID == ""  # the point of this file
    facts = SeriesFacts.from_dataset(ds, instance_count=20)
    assert facts.sop_class_uid == CTImageStorage
    assert facts.slice_thickness_mm == 3.0
    assert facts.body_part is None
    assert match_selector(Selector(sop_class_uids=("CTImageStorage",)), facts).matched


# --------------------------------------------------------------------------------------------- selectors
def test_selector_with_every_criterion_passing_gives_one_reason_each() -> None:
    selector = Selector(
        modalities=("CT",),
        body_parts=("CHEST",),
        sop_class_uids=("CTImageStorage",),
        image_type_includes=("primary",),
        image_type_excludes=("localizer",),
        series_description=r"thorax\s+1\.0",
        study_description="CHEST",
        min_instances=100,
        max_slice_thickness_mm=1.5,
    )
    result = match_selector(selector, _facts())
    assert result.matched, result.failures
    assert len(result.reasons) == 9
    assert result.failures == []


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        (Selector(modalities=("DX", "CR")), "Modality CT not in ['DX', 'CR']"),
        (Selector(body_parts=("HAND",)), "BodyPart CHEST not in ['HAND']"),
        (Selector(sop_class_uids=(str(DigitalXRayImageStorageForPresentation),)), "SOPClassUID 1.2.840.10008.5.1.4"),
        (Selector(image_type_includes=("DERIVED",)), "lacks required DERIVED"),
        (Selector(image_type_excludes=("axial",)), "includes excluded AXIAL"),
        (Selector(series_description="lung"), "does not match /lung/i"),
        (Selector(study_description="^abdomen"), "does not match /^abdomen/i"),
        (Selector(min_instances=200), "120 instances < minimum 200"),
        (Selector(max_slice_thickness_mm=0.5), "SliceThickness 1 mm > maximum 0.5 mm"),
    ],
)
def test_each_selector_criterion_can_fail(selector: Selector, reason: str) -> None:
    result = match_selector(selector, _facts())
    assert not result.matched
    assert len(result.failures) == 1
    assert reason in result.failures[0]


def test_all_failing_criteria_are_reported_not_just_the_first() -> None:
    selector = Selector(modalities=("MR",), body_parts=("HEAD",), min_instances=500, series_description="brain")
    result = match_selector(selector, _facts())
    assert len(result.failures) == 4


def test_unknown_body_part_and_thickness_fail_closed() -> None:
    facts = _facts(body_part=None, body_part_source="none", slice_thickness_mm=None)
    result = match_selector(Selector(body_parts=("CHEST",), max_slice_thickness_mm=3.0), facts)
    assert not result.matched
    assert any("BodyPart unknown" in f for f in result.failures)
    assert any("SliceThickness unknown" in f for f in result.failures)


def test_composite_body_part_and_synonyms_in_selectors() -> None:
    cap = _facts(body_part="CHESTABDPELVIS")
    result = match_selector(Selector(body_parts=("CHEST",)), cap)
    assert result.matched
    assert "covers CHEST" in result.reasons[0]
    assert match_selector(Selector(body_parts=("THORAX",)), _facts()).matched
    assert not match_selector(Selector(body_parts=("CHESTABDOMEN",)), _facts()).matched


def test_selector_with_unknown_sop_class_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError, match="NotARealStorage"):
        match_selector(Selector(sop_class_uids=("NotARealStorage",)), _facts())


# --------------------------------------------------------------------------------------------- rules
RULES_TOML = """
[[rules]]
name = "chest-ct"
match = { modality = "ct", body_part = ["Thorax"], image_type_excludes = ["localizer"], min_instances = 5 }
pipelines = ["lung"]
forward_to = ["research", "ARCHIVE@10.0.0.5:104"]

[[rules]]
name = "everything-from-hospital-a"
match = { calling_ae = ["HOSP_A_PACS"], sop_class_uid = ["CTImageStorage", "1.2.840.10008.5.1.4.1.1.1.1"] }
pipelines = ["*"]

[[rules]]
name = "priors"
level = "study"
match = { modality = ["CT"], series_description = "(?i)thorax|chest" }
pipelines = ["longitudinal"]
"""


def test_rules_load_from_toml_with_normalised_values() -> None:
    rules = load_rules(tomllib.loads(RULES_TOML)["rules"])
    assert [r.name for r in rules] == ["chest-ct", "everything-from-hospital-a", "priors"]
    chest = rules[0]
    assert chest.match.modality == ["CT"]
    assert chest.match.body_part == ["CHEST"]
    assert chest.match.image_type_excludes == ["LOCALIZER"]
    assert chest.level == "series" and chest.enabled
    assert rules[1].match.sop_class_uid == [CTImageStorage, "1.2.840.10008.5.1.4.1.1.1.1"]
    assert rules[2].level == "study"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x"}, r"rules\[0\]: .*must name at least one of pipelines or forward_to"),
        ({"name": "x", "pipeline": ["lung"]}, r"rules\[0\]\.pipeline: Extra inputs are not permitted"),
        ({"name": "x", "pipelines": ["lung"], "match": {"modalities": ["CT"]}}, r"rules\[0\]\.match\.modalities"),
        (
            {"name": "x", "pipelines": ["lung"], "match": {"series_description": "thorax("}},
            r"rules\[0\]\.match\.series_description: .*invalid regular expression",
        ),
        (
            {"name": "x", "pipelines": ["lung"], "match": {"body_part": ["CHEST", "ELBOWS_AND_KNEES"]}},
            r"rules\[0\]\.match\.body_part: .*unknown body part 'ELBOWS_AND_KNEES'",
        ),
        (
            {"name": "x", "pipelines": ["lung"], "match": {"sop_class_uid": ["CTStorage"]}},
            r"rules\[0\]\.match\.sop_class_uid: .*unknown SOP class 'CTStorage'",
        ),
        ({"name": "x", "forward_to": ["PACS@host:99999"]}, r"rules\[0\]\.forward_to: .*port 1-65535"),
        ({"name": "x", "forward_to": ["A_TITLE_LONGER_THAN_16@h:104"]}, r"rules\[0\]\.forward_to: .*AE title"),
        ({"name": "x", "pipelines": ["lung"], "level": "patient"}, r"rules\[0\]\.level"),
        (
            {"name": "x", "pipelines": ["lung"], "match": {"min_instances": 10, "max_instances": 5}},
            r"rules\[0\]\.match: .*max_instances \(5\) < min_instances \(10\)",
        ),
        ({"name": "x", "pipelines": ["lung"], "match": {"min_instances": 0}}, r"rules\[0\]\.match\.min_instances"),
        ({"name": "", "pipelines": ["lung"]}, r"rules\[0\]\.name"),
    ],
)
def test_rule_validation_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_rules([raw])


def test_duplicate_rule_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\]\.name: duplicate rule name 'a'"):
        load_rules([{"name": "a", "pipelines": ["x"]}, {"name": "a", "forward_to": ["pacs"]}])


def test_rule_embedded_in_another_pydantic_model_reports_the_path() -> None:
    class Config(pydantic.BaseModel):
        rules: list[Rule]

    with pytest.raises(pydantic.ValidationError, match=r"rules\.0\.match\.study_description"):
        Config.model_validate({"rules": [{"name": "a", "pipelines": ["x"], "match": {"study_description": "["}}]})


def test_rule_only_criteria_can_fail() -> None:
    rule = Rule(
        name="r",
        pipelines=["lung"],
        match={"calling_ae": ["OTHER_AE"], "called_ae": ["DICOMNODE"], "max_instances": 50},  # type: ignore[arg-type]
    )
    result = match_rule(rule, _facts())
    assert not result.matched
    assert result.failures == [
        "calling AE CT_SCANNER_1 not in ['OTHER_AE']",
        "120 instances > maximum 50",
    ]
    assert "called AE DICOMNODE in ['DICOMNODE']" in result.reasons


def test_disabled_rule_never_matches() -> None:
    rule = Rule(name="off", pipelines=["lung"], enabled=False)
    assert not match_rule(rule, _facts()).matched
    assert decide(_facts(), [rule], _pipelines(LUNG)).pipelines == []


# --------------------------------------------------------------------------------------------- decide
def test_star_runs_every_pipeline_whose_selector_accepts() -> None:
    rules = [Rule(name="all", pipelines=["*"])]
    decision = decide(_facts(), rules, _pipelines(LUNG, HAND))
    assert decision.pipelines == ["lung"]
    (explanation,) = decision.explanations
    assert explanation.matched
    hand = next(p for p in explanation.pipelines if p.pipeline == "hand")
    assert not hand.runs
    assert "Modality CT not in ['DX', 'CR']" in hand.failures
    dx = _facts(modality="DX", body_part="HAND", image_type=("ORIGINAL", "PRIMARY"), instance_count=1)
    assert decide(dx, rules, _pipelines(LUNG, HAND)).pipelines == ["hand"]


def test_explicit_pipelines_need_both_rule_and_selector() -> None:
    rules = [
        Rule(name="chest", match={"body_part": ["CHEST"]}, pipelines=["lung", "hand"]),  # type: ignore[arg-type]
        Rule(name="hands", match={"modality": ["DX"]}, pipelines=["hand"]),  # type: ignore[arg-type]
    ]
    decision = decide(_facts(), rules, _pipelines(LUNG, HAND))
    assert decision.pipelines == ["lung"]  # "chest" names hand, but hand's selector refuses a CT
    assert [e.matched for e in decision.explanations] == [True, False]
    assert decision.explanations[1].failures == ["Modality CT not in ['DX']"]
    thick = _facts(slice_thickness_mm=5.0)
    assert decide(thick, rules, _pipelines(LUNG, HAND)).pipelines == []


def test_pipelines_and_forwards_are_deduplicated_in_rule_order() -> None:
    rules = [
        Rule(name="a", pipelines=["lung"], forward_to=["pacs", "archive"]),
        Rule(name="b", pipelines=["*"], forward_to=["archive", "AI@127.0.0.1:11112"]),
        Rule(name="c", pipelines=["lung", "unknown_pipeline"]),
    ]
    decision = decide(_facts(), rules, _pipelines(HAND, LUNG, replace(LUNG, name="lung2")))
    assert decision.pipelines == ["lung", "lung2"]
    assert decision.forward_to == ["pacs", "archive", "AI@127.0.0.1:11112"]
    unknown = next(p for p in decision.explanations[2].pipelines if p.pipeline == "unknown_pipeline")
    assert not unknown.runs and "not enabled" in unknown.failures[0]


def test_forward_only_rule_runs_nothing() -> None:
    decision = decide(_facts(), [Rule(name="copy", forward_to=["backup"])], _pipelines(LUNG))
    assert (decision.pipelines, decision.forward_to) == ([], ["backup"])


def test_study_trigger_and_study_rules_only_at_study_level() -> None:
    rules = [
        Rule(name="series-all", pipelines=["*"]),
        Rule(name="study", level="study", pipelines=["longitudinal"], forward_to=["pacs"]),
    ]
    pipelines = _pipelines(LUNG, LONGITUDINAL)
    series = decide(_facts(), rules, pipelines, level="series")
    assert series.pipelines == ["lung"]
    assert [e.rule for e in series.explanations] == ["series-all"]
    blocked = next(p for p in series.explanations[0].pipelines if p.pipeline == "longitudinal")
    assert any("trigger is study" in f for f in blocked.failures)
    study = decide(_facts(), rules, pipelines, level="study")
    assert study.pipelines == ["longitudinal"]
    assert study.forward_to == ["pacs"]
    assert [e.rule for e in study.explanations] == ["study"]


# --------------------------------------------------------------------------------------------- explain
def _series_blocks(report: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    for block in report.split("\nSeries ")[1:]:
        uid, _, rest = block.partition("\n")
        blocks[uid] = rest.split("\nSkipped ")[0]
    return blocks


@pytest.fixture
def study_folder(tmp_path: Path) -> dict[str, str]:
    info = StudyInfo(patient_name="Secret^Patient", patient_id="PID-4711")
    volume = np.full((6, 16, 16), -800.0)
    chest = write_ct_series(volume, tmp_path / "chest", info=info, body_part="CHEST", series_number=2)
    scout = write_ct_series(
        volume[:1],
        tmp_path / "scout",
        info=info,
        body_part="CHEST",
        series_description="Topogram",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        series_number=1,
    )
    hand = write_radiograph(np.full((32, 24), 900), tmp_path / "dx" / "hand.dcm", info=info, body_part="HANDS")
    (tmp_path / "README.txt").write_text("not a DICOM file\n")
    uid = {name: pydicom.dcmread(paths[0]).SeriesInstanceUID for name, paths in (("chest", chest), ("scout", scout))}
    uid["hand"] = pydicom.dcmread(hand).SeriesInstanceUID
    uid["folder"] = str(tmp_path)
    return uid


def test_explain_folder_on_synthetic_study(study_folder: dict[str, str]) -> None:
    rules = load_rules(
        [
            {
                "name": "ct-no-scouts",
                "match": {"modality": ["CT"], "image_type_excludes": ["LOCALIZER"]},
                "pipelines": ["*"],
            },
            {"name": "hands", "match": {"body_part": ["HAND"]}, "pipelines": ["hand"], "forward_to": ["pacs"]},
        ]
    )
    report = explain_folder(Path(study_folder["folder"]), rules, _pipelines(LUNG, HAND))
    assert report.startswith("3 series under ")
    blocks = _series_blocks(report)
    assert set(blocks) == {study_folder["chest"], study_folder["scout"], study_folder["hand"]}

    chest = blocks[study_folder["chest"]]
    assert "Body part: CHEST (from BodyPartExamined 'CHEST')" in chest
    assert "Instances: 6" in chest
    assert "[MATCH] rule 'ct-no-scouts'" in chest
    assert "decision at series level: run lung; forward to nowhere" in chest

    scout = blocks[study_folder["scout"]]
    assert "[NO MATCH] rule 'ct-no-scouts'" in scout
    assert "FAIL ImageType ORIGINAL\\PRIMARY\\LOCALIZER includes excluded LOCALIZER" in scout
    assert "decision at series level: run nothing" in scout
    assert "lung: rejects" in scout and "1 instances < minimum 5" in scout

    hand = blocks[study_folder["hand"]]
    assert "Body part: HAND (from BodyPartExamined 'HANDS')" in hand
    assert "Modality DX" in hand
    assert "decision at series level: run hand; forward to pacs" in hand

    assert "Skipped 1 file(s):" in report and "README.txt: skipped, not DICOM" in report
    assert "Secret" not in report and "PID-4711" not in report


def test_explain_folder_on_totalsegmentator_example() -> None:
    rules = load_rules([{"name": "ct", "match": {"modality": "CT"}, "pipelines": ["*"]}])
    report = explain_folder(shared_data("ct", "totalseg", "example_ct_dicom"), rules, _pipelines(LUNG, LONGITUDINAL))
    # The anonymiser blanked every UID: the 20 files are one group, its SOP class comes from the file meta.
    assert report.startswith("1 series under ")
    assert "Series (no SeriesInstanceUID in these files)" in report
    assert "SOP class 1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)" in report
    assert "Instances: 20" in report
    assert "Body part: unknown" in report
    assert "BodyPart unknown (no attribute names one), required one of ['CHEST']" in report
    assert "SliceThickness 3 mm > maximum 2.5 mm" in report
    assert "Skipped" not in report


def test_explain_folder_that_does_not_exist(tmp_path: Path) -> None:
    assert "not a folder" in explain_folder(tmp_path / "missing", [], {})


def test_fake_pipeline_honours_the_protocol() -> None:
    assert isinstance(LUNG, Pipeline)
