"""Body-part normalisation: vendor synonyms, composite regions, and the fallback chain of sources."""

from __future__ import annotations

import pydicom
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from dicomnode.routing.bodypart import (
    BODY_PARTS,
    canonical_body_part,
    normalise_body_part,
    normalise_body_part_text,
    regions_covered,
)
from tests.conftest import shared_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # chest, as GE/Siemens, Philips, Canon, Spanish, French, German write it
        ("CHEST", "CHEST"),
        ("THORAX", "CHEST"),
        ("THORAX^LUNG", "CHEST"),
        ("LUNG", "CHEST"),
        ("Torax", "CHEST"),
        ("POITRINE", "CHEST"),
        ("Brustkorb", "CHEST"),
        ("CT Thorax 1.0 B70f", "CHEST"),
        # composite trunk regions become the Annex L composite terms
        ("CHEST_ABDOMEN", "CHESTABDOMEN"),
        ("Thorax/Abdomen", "CHESTABDOMEN"),
        ("CT THORACO-ABDOMINAL", "CHESTABDOMEN"),
        ("Thorax-Abdomen-Becken", "CHESTABDPELVIS"),
        ("CHESTABDPELVIS", "CHESTABDPELVIS"),
        ("CT TAP", "CHESTABDPELVIS"),
        ("ABDOMEN PELVIS", "ABDOMENPELVIS"),
        ("Head & Neck", "HEADNECK"),
        ("WHOLE BODY", "WHOLEBODY"),
        # hands, as Fuji, Agfa, Carestream and French sites label them; bone-age images are "hand and wrist"
        ("HAND", "HAND"),
        ("HAND LT", "HAND"),
        ("Hands", "HAND"),
        ("HAND AND WRIST", "HAND"),
        ("MAIN", "HAND"),
        ("Bone age", "HAND"),
        ("WRIST", "WRIST"),
        ("FINGER", "FINGER"),
        # heart
        ("HEART", "HEART"),
        ("CARDIAC", "HEART"),
        ("Herz", "HEART"),
        ("Ca Score", "HEART"),
        # spine segments are not swallowed by "thoracic" -> CHEST
        ("T-SPINE", "TSPINE"),
        ("Thoracic spine", "TSPINE"),
        ("CERVICAL SPINE", "CSPINE"),
        ("LWS", "LSPINE"),
        ("7.1 L-Spine 3 Level 2.5mm", "LSPINE"),
        # accents and eszett
        ("Schädel", "SKULL"),
        ("Fuß", "FOOT"),
        ("genou", "KNEE"),
    ],
)
def test_synonyms_map_to_the_closed_vocabulary(text: str, expected: str) -> None:
    assert normalise_body_part_text(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "PARTIALBODY", "BODY", "OTHER", "Topogram 0.6 T20s", "CT Body 3.0"])
def test_texts_that_name_no_region_give_none(text: str) -> None:
    assert normalise_body_part_text(text) is None


def test_every_canonical_name_maps_to_itself() -> None:
    assert {name: normalise_body_part_text(name) for name in BODY_PARTS} == {name: name for name in BODY_PARTS}


def test_cine_is_cardiac_only_on_mr() -> None:
    assert normalise_body_part_text("SA CINE", modality="MR") == "HEART"
    assert normalise_body_part_text("SA CINE", modality="XA") is None
    assert normalise_body_part_text("cine SAX") == "HEART"  # short axis is cardiac on any modality


def test_regions_covered_by_composites_and_spine_segments() -> None:
    cap = regions_covered("CHESTABDPELVIS")
    assert {"CHEST", "ABDOMEN", "PELVIS", "CHESTABDOMEN", "ABDOMENPELVIS"} <= cap
    assert "NECK" not in cap and "HEAD" not in cap
    assert regions_covered("CHEST") == {"CHEST"}
    assert regions_covered("TSPINE") == {"TSPINE", "SPINE"}
    assert "HEAD" in regions_covered("BRAIN")
    assert "CHEST" in regions_covered("WHOLEBODY")


def _header(**attrs: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _header(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def test_body_part_examined_comes_first() -> None:
    ds = _header(Modality="CT", BodyPartExamined="THORAX", SeriesDescription="Abdomen 5mm")
    found = normalise_body_part(ds)
    assert (found.name, found.source, found.raw) == ("CHEST", "BodyPartExamined", "THORAX")


def test_missing_body_part_falls_back_to_anatomic_region_sct_code() -> None:
    ds = _header(Modality="DX", AnatomicRegionSequence=Sequence([_code("85562004", "SCT", "Hand")]))
    found = normalise_body_part(ds)
    assert (found.name, found.source) == ("HAND", "AnatomicRegionSequence")
    assert "85562004" in found.raw


@pytest.mark.parametrize(
    ("value", "scheme", "expected"),
    [
        ("80891009", "SCT", "HEART"),
        ("816094009", "SCT", "CHEST"),
        ("51185008", "SCT", "CHEST"),
        ("818981001", "SCT", "ABDOMEN"),
        ("113345001", "SCT", "ABDOMEN"),
        ("12921003", "SCT", "PELVIS"),
        ("816092008", "SCT", "PELVIS"),
        ("69536005", "SCT", "HEAD"),
        ("416775004", "SCT", "CHESTABDPELVIS"),
        ("T-D3000", "SRT", "CHEST"),
        ("T-D8700", "SRT", "HAND"),
    ],
)
def test_anatomic_region_codes(value: str, scheme: str, expected: str) -> None:
    ds = _header(AnatomicRegionSequence=Sequence([_code(value, scheme, "x")]))
    assert normalise_body_part(ds).name == expected


def test_unknown_code_uses_its_meaning_and_foreign_schemes_are_ignored() -> None:
    by_meaning = _header(AnatomicRegionSequence=Sequence([_code("999999", "SCT", "Thorax")]))
    assert normalise_body_part(by_meaning).name == "CHEST"
    # 85562004 is the SCT hand, but in a local scheme it is just a number: the meaning decides
    local_scheme = _header(AnatomicRegionSequence=Sequence([_code("85562004", "99LOCAL", "Foot")]))
    assert normalise_body_part(local_scheme).name == "FOOT"


def test_unrecognised_body_part_falls_through_descriptions_in_order() -> None:
    series = _header(Modality="CT", BodyPartExamined="PARTIALBODY", SeriesDescription="Thorax 1.0 B70f")
    assert (normalise_body_part(series).name, normalise_body_part(series).source) == ("CHEST", "SeriesDescription")
    study = _header(Modality="CT", SeriesDescription="Surview", StudyDescription="CT Upper Abdomen")
    assert (normalise_body_part(study).name, normalise_body_part(study).source) == ("ABDOMEN", "StudyDescription")
    protocol = _header(Modality="CR", SeriesDescription="PA", StudyDescription="", ProtocolName="BONE AGE")
    assert (normalise_body_part(protocol).name, normalise_body_part(protocol).source) == ("HAND", "ProtocolName")
    cine = _header(Modality="MR", SeriesDescription="", ProtocolName="SA_CINE_retro")
    assert normalise_body_part(cine).name == "HEART"


def test_nothing_known_gives_none_with_source_none() -> None:
    found = normalise_body_part(_header(Modality="CT", BodyPartExamined="PARTIALBODY", SeriesDescription="Body"))
    assert (found.name, found.source, found.raw) == (None, "none", "PARTIALBODY")
    assert "unknown" in found.describe()


def test_enhanced_multiframe_frame_anatomy() -> None:
    anatomy = _header(AnatomicRegionSequence=Sequence([_code("T-A0100", "SRT", "Brain")]))
    shared = _header(FrameAnatomySequence=Sequence([anatomy]))
    ds = _header(Modality="MR", SharedFunctionalGroupsSequence=Sequence([shared]))
    assert normalise_body_part(ds).name == "BRAIN"


@pytest.mark.parametrize(
    ("relative", "expected", "source"),
    [
        # Fujifilm DX: BodyPartExamined THORAX
        ("conformance/highdicom_test_files/dx_image.dcm", "CHEST", "BodyPartExamined"),
        # Philips enhanced MR: no BodyPartExamined, SRT brain code in the shared Frame Anatomy Sequence
        (
            "conformance/dicom2nifti_multivendor/philips_enhanced/anatomical/001/IM-0001-0170-0001.dcm",
            "BRAIN",
            "AnatomicRegionSequence",
        ),
        # GE CT: no body part, the protocol says "L-Spine"
        ("conformance/fo-dicom_test_data/GH1308.dcm", "LSPINE", "ProtocolName"),
        # Philips CT localizer: study description "CT Upper Abdomen with contrast"
        ("conformance/fo-dicom_test_data/GH342.dcm", "ABDOMEN", "StudyDescription"),
        # series description "HELICAL CHEST"
        (
            "conformance/cornerstone_transfer_syntax_matrix/CTImage.dcm_JPEG2000TransferSyntax_1.2.840.10008.1.2.4.91.dcm",
            "CHEST",
            "SeriesDescription",
        ),
        # NM "WHOLE BODY" with a space
        ("conformance/dcm4che_test_data/NM1_JPLY", "WHOLEBODY", "BodyPartExamined"),
    ],
)
def test_real_vendor_headers(relative: str, expected: str, source: str) -> None:
    path = shared_data(relative)
    found = normalise_body_part(pydicom.dcmread(path, stop_before_pixels=True))
    assert (found.name, found.source) == (expected, source)


def test_totalsegmentator_partialbody_has_no_known_region() -> None:
    folder = shared_data("ct", "totalseg", "example_ct_dicom")
    ds = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    # PARTIALBODY, "CT Body 3.0", protocol "FDG_TK_KM": none of them names a region, so no guess is made
    assert normalise_body_part(ds).name is None


def test_canonical_body_part_is_strict_for_configuration() -> None:
    assert canonical_body_part("THORAX") == "CHEST"
    assert canonical_body_part("t-spine") == "TSPINE"
    assert canonical_body_part("chest") == "CHEST"
    assert canonical_body_part("CT Thorax") is None  # free text is for headers, not for rules
    assert canonical_body_part("ELBOWS_AND_KNEES") is None
