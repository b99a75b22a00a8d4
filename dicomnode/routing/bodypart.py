"""Body-part normalisation: map what vendors write to one closed vocabulary of names.

BodyPartExamined is often missing, free text, or in the local language. We map it (and, when it is missing or
not recognised, the Anatomic Region Sequence codes, then the series/study descriptions and the protocol name) to
the DICOM defined terms of PS3.16 Annex L (CHEST, HAND, HEART, ABDOMEN, CHESTABDOMEN, TSPINE, ...).

Two deliberate simplifications for routing: LUNG is reported as CHEST (a lung series is a chest series to a
router), and a "hand and wrist" image is HAND (that is how bone-age radiographs are labelled).
:func:`regions_covered` says which names a series of a composite region also counts as (CHESTABDPELVIS covers
CHEST; TSPINE counts as SPINE), so that a rule asking for CHEST accepts a chest-abdomen-pelvis CT.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "BODY_PARTS",
    "BodyPart",
    "canonical_body_part",
    "normalise_body_part",
    "normalise_body_part_text",
    "regions_covered",
]

logger = logging.getLogger(__name__)

# The trunk, top to bottom: a text naming several of these is a composite region (CHEST + ABDOMEN -> CHESTABDOMEN).
_TRUNK = ("HEAD", "NECK", "CHEST", "ABDOMEN", "PELVIS")
_SPANS: dict[tuple[int, int], str] = {
    (0, 1): "HEADNECK",
    (1, 2): "NECKCHEST",
    (1, 3): "NECKCHESTABDOMEN",
    (1, 4): "NECKCHESTABDPELV",
    (2, 3): "CHESTABDOMEN",
    (2, 4): "CHESTABDPELVIS",
    (3, 4): "ABDOMENPELVIS",
    (0, 4): "WHOLEBODY",
}
_SPAN_OF: dict[str, tuple[int, int]] = {name: span for span, name in _SPANS.items()}
# Single regions that sit at a trunk level (a brain MR is a head series).
_TRUNK_LEVEL: dict[str, int] = {
    "HEAD": 0,
    "BRAIN": 0,
    "SKULL": 0,
    "NECK": 1,
    "CHEST": 2,
    "ABDOMEN": 3,
    "PELVIS": 4,
}
# Names a series of this region also counts as, beyond the trunk spans.
_PARENTS: dict[str, tuple[str, ...]] = {
    "BRAIN": ("HEAD",),
    "SKULL": ("HEAD",),
    "CSPINE": ("SPINE",),
    "TSPINE": ("SPINE",),
    "LSPINE": ("SPINE",),
    "SSPINE": ("SPINE",),
    "CTSPINE": ("SPINE", "CSPINE", "TSPINE"),
    "TLSPINE": ("SPINE", "TSPINE", "LSPINE"),
    "LSSPINE": ("SPINE", "LSPINE", "SSPINE"),
    "CORONARYARTERY": ("HEART",),
}

# Defined terms of PS3.16 Annex L that we keep as canonical names (LUNG is deliberately folded into CHEST).
# fmt: off
_DEFINED_TERMS = (
    "ADRENAL", "ANKLE", "AORTA", "ARM", "AXILLA", "BLADDER", "BRAIN", "BREAST", "CALCANEUS", "CAROTID", "CLAVICLE",
    "COCCYX", "COLON", "CORONARYARTERY", "CSPINE", "CTSPINE", "EAR", "ELBOW", "ESOPHAGUS", "EXTREMITY", "EYE",
    "FACE", "FEMUR", "FINGER", "FOOT", "FOREARM", "HAND", "HEART", "HIP", "HUMERUS", "IAC", "JAW", "KIDNEY",
    "KNEE", "LARYNX", "LEG", "LIVER", "LSPINE", "LSSPINE", "MEDIASTINUM", "ORBIT", "PANCREAS", "PATELLA", "PROSTATE",
    "RIB", "SACRUM", "SCAPULA", "SHOULDER", "SKULL", "SPINE", "SPLEEN", "SSPINE", "STERNUM", "STOMACH", "THIGH",
    "THUMB", "THYROID", "TLSPINE", "TMJ", "TOE", "TSPINE", "UTERUS", "WRIST",
)
# fmt: on
BODY_PARTS: frozenset[str] = frozenset({*_TRUNK, *_SPANS.values(), *_DEFINED_TERMS})

# Single words (one string, space separated) and multi-word phrases -> canonical name, matched after upper-casing,
# accent stripping and splitting on non-alphanumerics. English, German, French, Spanish, Italian and Dutch forms
# seen in BodyPartExamined and in descriptions.
_SYNONYMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CHEST": (
        "THORAX THORACIC THORACO THX TORAX TORACE TORACICO POITRINE CXR LUNG LUNGS LUNGE LUNGEN POUMON POUMONS "
        "PULMON PULMONES POLMONE POLMONI PULMONARY BRUST BRUSTKORB BORST BORSTKAS",
        (),
    ),
    "HEART": (
        "CARDIAC CARDIO CORONARY CORONARIES CCTA HERZ COEUR CORAZON CUORE HART 4CH 2CH 3CH SAX LVOT "
        "ECHOCARDIOGRAM ECHOCARDIOGRAPHY ECHOCARDIOGRAPHIE SMARTSCORE",
        ("SHORT AXIS", "CALCIUM SCORE", "CALCIUM SCORING", "CA SCORE"),
    ),
    "HAND": ("HANDS MAIN MAINS MANO MANOS BONEAGE", ("BONE AGE",)),
    "WRIST": ("CARPUS HANDGELENK POIGNET MUNECA POLSO", ()),
    "FINGER": ("FINGERS DOIGT DOIGTS DEDO DEDOS", ()),
    "THUMB": ("POUCE DAUMEN", ()),
    "ABDOMEN": ("ABD ABDO ABDOMINAL BAUCH VENTRE ADDOME", ()),
    "PELVIS": ("PELVIC PELV BECKEN BASSIN BACINO", ()),
    "HEAD": ("KOPF TETE CABEZA TESTA HOOFD", ()),
    "SKULL": ("CRANE CRANIUM SCHADEL SCHAEDEL CRANEO CRANIO SCHEDEL", ()),
    "BRAIN": ("CEREBRAL CEREBRUM GEHIRN CERVEAU CEREBRO", ()),
    "NECK": ("HALS COU CUELLO COLLO", ()),
    "SPINE": ("SPINAL RACHIS COLUMNA WIRBELSAULE WIRBELSAEULE", ("WHOLE SPINE", "TOTAL SPINE")),
    "CSPINE": ("HWS", ("C SPINE", "CERVICAL SPINE")),
    "TSPINE": ("BWS", ("T SPINE", "THORACIC SPINE", "DORSAL SPINE", "D SPINE")),
    "LSPINE": ("LWS LUMBAR", ("L SPINE", "LUMBAR SPINE")),
    "LSSPINE": ("LUMBOSACRAL", ("LS SPINE", "LUMBOSACRAL SPINE")),
    "TLSPINE": ("THORACOLUMBAR", ("TL SPINE", "THORACOLUMBAR SPINE")),
    # Not "CT SPINE": in a description that is a CT of the spine, not the cervicothoracic spine.
    "CTSPINE": ("CERVICOTHORACIC", ("CERVICOTHORACIC SPINE",)),
    "SSPINE": ("", ("SACRAL SPINE",)),
    "SACRUM": ("SACRAL", ()),
    "KNEE": ("KNEES KNIE GENOU RODILLA GINOCCHIO", ()),
    "FOOT": ("FEET FUSS PIED PIE PIEDE VOET", ()),
    "ANKLE": ("SPRUNGGELENK CHEVILLE TOBILLO CAVIGLIA", ()),
    "LEG": ("TIBIA FIBULA CALF JAMBE UNTERSCHENKEL", ("LOWER LEG",)),
    "THIGH": ("OBERSCHENKEL", ("UPPER LEG",)),
    "ARM": ("OBERARM", ("UPPER ARM",)),
    "FOREARM": ("RADIUS ULNA UNTERARM AVANTBRAS", ("LOWER ARM",)),
    "ELBOW": ("ELLBOGEN COUDE CODO GOMITO", ()),
    "SHOULDER": ("SHOULDERS SCHULTER EPAULE HOMBRO SPALLA", ()),
    "HIP": ("HIPS HUFTE HUEFTE HANCHE CADERA ANCA", ()),
    "BREAST": ("BREASTS MAMMA MAMMO MAMMOGRAPHY MAMMOGRAM MAMA", ()),
    "KIDNEY": ("KIDNEYS RENAL NIERE RINON", ()),
    "LIVER": ("HEPATIC LEBER FOIE HIGADO FEGATO", ()),
    "JAW": ("MANDIBLE MANDIBULA MAXILLA", ()),
    "RIB": ("RIBS", ()),
    "TOE": ("TOES", ()),
    "WHOLEBODY": ("WB GANZKORPER", ("WHOLE BODY", "TOTAL BODY", "ENTIRE BODY", "CORPS ENTIER")),
    "CHESTABDOMEN": ("THORACOABDOMINAL", ()),
    "ABDOMENPELVIS": ("ABDOMINOPELVIC", ()),
    "CHESTABDPELVIS": ("TAP CAP", ()),
}
# Words that name a region only on one modality: "CINE" alone is a cardiac MR, not a cine CT or XA run.
_MR_ONLY_SYNONYMS: dict[str, str] = {"CINE": "HEART", "LAX": "HEART"}


def _build_phrases() -> dict[tuple[str, ...], str]:
    phrases: dict[tuple[str, ...], str] = {(name,): name for name in BODY_PARTS}
    for name, (words, multi) in _SYNONYMS.items():
        phrases.update({(word,): name for word in words.split()})
        phrases.update({tuple(phrase.split()): name for phrase in multi})
    return phrases


_PHRASES = _build_phrases()
_MAX_PHRASE_WORDS = max(len(p) for p in _PHRASES)

# Anatomic Region Sequence codes (SNOMED CT "SCT", and the legacy SNOMED RT "SRT" codes still sent by older
# modalities) -> canonical name. Values from PS3.16 CID 4031 / Annex L.
_REGION_CODES: dict[str, str] = {
    # SCT
    "816094009": "CHEST",
    "51185008": "CHEST",
    "43799004": "CHEST",
    "39607008": "CHEST",
    "85562004": "HAND",
    "80891009": "HEART",
    "41801008": "CORONARYARTERY",
    "818981001": "ABDOMEN",
    "113345001": "ABDOMEN",
    "816092008": "PELVIS",
    "12921003": "PELVIS",
    "69536005": "HEAD",
    "12738006": "BRAIN",
    "89546000": "SKULL",
    "45048000": "NECK",
    "421060004": "SPINE",
    "122494005": "CSPINE",
    "122495006": "TSPINE",
    "122496007": "LSPINE",
    "297171002": "CTSPINE",
    "54735007": "SACRUM",
    "64688005": "COCCYX",
    "72696002": "KNEE",
    "56459004": "FOOT",
    "70258002": "ANKLE",
    "74670003": "WRIST",
    "16953009": "ELBOW",
    "16982005": "SHOULDER",
    "24136001": "HIP",
    "29836001": "HIP",
    "76752008": "BREAST",
    "818982008": "ABDOMENPELVIS",
    "416550000": "CHESTABDOMEN",
    "416775004": "CHESTABDPELVIS",
    "417437006": "NECKCHEST",
    "774007": "HEADNECK",
    "38266002": "WHOLEBODY",
    "7569003": "FINGER",
    "76505004": "THUMB",
    "29707007": "TOE",
    "10200004": "LIVER",
    "64033007": "KIDNEY",
    "41216001": "PROSTATE",
    "15776009": "PANCREAS",
    "78961009": "SPLEEN",
    "30021000": "LEG",
    "68367000": "THIGH",
    "40983000": "ARM",
    "14975008": "FOREARM",
    "71341001": "FEMUR",
    "85050009": "HUMERUS",
    "113197003": "RIB",
    "56873002": "STERNUM",
    "51299004": "CLAVICLE",
    "363654007": "ORBIT",
    "89545001": "FACE",
    "72410000": "MEDIASTINUM",
    "35039007": "UTERUS",
    "66019005": "EXTREMITY",
    # SRT (legacy)
    "T-D3000": "CHEST",
    "T-28000": "CHEST",
    "T-D8700": "HAND",
    "T-32000": "HEART",
    "T-D4000": "ABDOMEN",
    "T-D6000": "PELVIS",
    "T-D1100": "HEAD",
    "T-A0100": "BRAIN",
    "T-11100": "SKULL",
    "T-D1600": "NECK",
    "T-11501": "CSPINE",
    "T-11502": "TSPINE",
    "T-11503": "LSPINE",
    "T-D9200": "KNEE",
    "T-D9700": "FOOT",
}
_REGION_SCHEMES = frozenset({"SCT", "SRT", "SNM3", "99SDM"})

# Values that say nothing about the region: skip them and try the next source.
_NO_REGION = frozenset({"", "BODY", "PARTIALBODY", "OTHER", "UNKNOWN", "NONE", "ANY"})


@dataclass(frozen=True)
class BodyPart:
    """A normalised body part and where it came from.

    ``source`` is the DICOM keyword that gave it (BodyPartExamined, AnatomicRegionSequence, SeriesDescription,
    StudyDescription, ProtocolName) or "none"; ``raw`` the value found there (text, or "scheme:code").
    """

    name: str | None
    source: str
    raw: str = ""

    def describe(self) -> str:
        if self.name is None:
            return "unknown (no source names a body part)"
        return f"{self.name} (from {self.source} {self.raw!r})"


def _words(text: str) -> list[str]:
    # "ß".upper() is "SS"; NFKD then drops the accents ("SCHÄDEL" -> "SCHADEL").
    folded = unicodedata.normalize("NFKD", text.upper())
    ascii_only = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [w for w in re.split(r"[^A-Z0-9]+", ascii_only) if w]


def _regions_in(words: list[str], modality: str) -> list[str]:
    """Greedy longest-phrase scan, left to right: "THORACIC SPINE" is TSPINE, not CHEST + SPINE."""
    found: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_PHRASE_WORDS, len(words) - i), 0, -1):
            name = _PHRASES.get(tuple(words[i : i + n]))
            if name is None and n == 1 and modality == "MR":
                name = _MR_ONLY_SYNONYMS.get(words[i])
            if name is not None:
                if name not in found:
                    found.append(name)
                i += n
                break
        else:
            i += 1
    return found


def _combine(found: list[str]) -> str | None:
    """One name for the regions a text mentions."""
    if not found:
        return None
    levels: set[int] = set()
    for name in found:
        if name in _SPAN_OF:
            low, high = _SPAN_OF[name]
            levels.update(range(low, high + 1))
        elif name in _TRUNK_LEVEL:
            levels.add(_TRUNK_LEVEL[name])
    if len(levels) >= 2:
        span = (min(levels), max(levels))
        if span in _SPANS:
            return _SPANS[span]
        logger.debug("no composite body part spans %s", found, extra={"action": "routing.bodypart"})
        return None
    # Specific wins over general: a "hand wrist" image is a hand, a "cardiac chest" series is a heart series.
    for preferred in ("HAND", "HEART"):
        if preferred in found:
            return preferred
    return found[0]


def normalise_body_part_text(text: str, *, modality: str = "") -> str | None:
    """The canonical body-part name in ``text`` (a BodyPartExamined value or a description), or None.

    ``modality`` enables words that name a region only for that modality (CINE is cardiac on MR).
    """
    words = _words(text)
    if not words:
        return None
    compact = "".join(words)
    if compact in _NO_REGION:
        return None
    if compact in BODY_PARTS:
        return compact
    return _combine(_regions_in(words, modality.upper()))


def canonical_body_part(value: str) -> str | None:
    """The canonical name ``value`` stands for when it is one name or one synonym ("THORAX", "T-SPINE"), else None.

    Strict, for configuration: unlike :func:`normalise_body_part_text` it does not search free text, so a typo
    such as "ELBOWS_AND_KNEES" is rejected instead of read as KNEE.
    """
    words = _words(value)
    compact = "".join(words)
    if compact in BODY_PARTS:
        return compact
    return _PHRASES.get(tuple(words))


def regions_covered(name: str) -> frozenset[str]:
    """Every name a series of region ``name`` counts as: itself, the parts of a composite, its parents.

    ``regions_covered("CHESTABDPELVIS")`` holds CHEST, ABDOMEN, PELVIS, CHESTABDOMEN and ABDOMENPELVIS.
    """
    covered = {name, *_PARENTS.get(name, ())}
    if name in _SPAN_OF:
        low, high = _SPAN_OF[name]
        covered.update(_TRUNK[low : high + 1])
        covered.update(span_name for (a, b), span_name in _SPANS.items() if low <= a and b <= high)
    return frozenset(covered)


def _code_items(ds: Dataset) -> Iterable[Dataset]:
    yield from ds.get("AnatomicRegionSequence", None) or ()
    # Enhanced multi-frame objects put it in the shared functional groups' Frame Anatomy Sequence.
    for group in ds.get("SharedFunctionalGroupsSequence", None) or ():
        for anatomy in group.get("FrameAnatomySequence", None) or ():
            yield from anatomy.get("AnatomicRegionSequence", None) or ()


def _from_codes(ds: Dataset) -> BodyPart | None:
    for item in _code_items(ds):
        value = str(item.get("CodeValue", "") or item.get("LongCodeValue", "") or "").strip()
        scheme = str(item.get("CodingSchemeDesignator", "") or "").strip().upper()
        # A code value means something only in its scheme; a local code's meaning can still name the region.
        name = _REGION_CODES.get(value) if not scheme or scheme in _REGION_SCHEMES else None
        if name is not None:
            return BodyPart(name, "AnatomicRegionSequence", f"{scheme or '?'}:{value}")
        meaning = normalise_body_part_text(str(item.get("CodeMeaning", "") or ""))
        if meaning is not None:
            return BodyPart(meaning, "AnatomicRegionSequence", f"{scheme or '?'}:{value} {item.get('CodeMeaning')}")
    return None


_TEXT_SOURCES = ("SeriesDescription", "StudyDescription", "ProtocolName")


def normalise_body_part(ds: Dataset) -> BodyPart:
    """The body part of the series ``ds`` belongs to, trying each source in order.

    BodyPartExamined -> Anatomic Region Sequence codes -> SeriesDescription -> StudyDescription -> ProtocolName.
    A source that is present but names no known region is passed over (the next may know better).
    """
    modality = str(ds.get("Modality", "") or "")
    raw = str(ds.get("BodyPartExamined", "") or "")
    name = normalise_body_part_text(raw, modality=modality)
    if name is not None:
        return BodyPart(name, "BodyPartExamined", raw)
    coded = _from_codes(ds)
    if coded is not None:
        return coded
    for keyword in _TEXT_SOURCES:
        text = str(ds.get(keyword, "") or "")
        name = normalise_body_part_text(text, modality=modality)
        if name is not None:
            return BodyPart(name, keyword, text)
    return BodyPart(None, "none", raw)
