"""Coded concepts of the cardiac_lv findings: SNOMED CT, LOINC, DICOM and UCUM where a code says exactly this;
the node's private scheme (via :func:`local_code`) for the LVQuan indices, which no standard codes."""

from __future__ import annotations

from dicomnode.plugins.api import Code, local_code

# Anatomy and segment descriptions.
LEFT_VENTRICLE = Code("87878005", "SCT", "Left ventricle")
LV_MYOCARDIUM = Code("49848007", "SCT", "Left ventricle myocardium")
LV_CAVITY = local_code("lv-cavity", "Left ventricle cavity (blood pool with papillary muscles)")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")

# Units.
MM = Code("mm", "UCUM", "millimeter")
MM2 = Code("mm2", "UCUM", "square millimeter")
PX = Code("{pixel}", "UCUM", "pixel")
PX2 = Code("{pixel_squared}", "UCUM", "square pixel")
ML = Code("mL", "UCUM", "milliliter")
PERCENT = Code("%", "UCUM", "percent")
MS = Code("ms", "UCUM", "millisecond")
GRAM = Code("g", "UCUM", "gram")

# The 11 LVQuan indices of one frame, in the order of geometry.INDEX_NAMES.
CAVITY_AREA = local_code("lvquan-a1", "LV cavity area (LVQuan A1)")
MYOCARDIUM_AREA = local_code("lvquan-a2", "LV myocardium area (LVQuan A2)")
DIMENSION_IS_AL = local_code("lvquan-d1", "LV cavity dimension inferoseptal-anterolateral (LVQuan D1)")
DIMENSION_I_A = local_code("lvquan-d2", "LV cavity dimension inferior-anterior (LVQuan D2)")
DIMENSION_IL_AS = local_code("lvquan-d3", "LV cavity dimension inferolateral-anteroseptal (LVQuan D3)")
RWT = {
    "IS": local_code("lvquan-rwt-is", "LV regional wall thickness, inferoseptal (LVQuan)"),
    "I": local_code("lvquan-rwt-i", "LV regional wall thickness, inferior (LVQuan)"),
    "IL": local_code("lvquan-rwt-il", "LV regional wall thickness, inferolateral (LVQuan)"),
    "AL": local_code("lvquan-rwt-al", "LV regional wall thickness, anterolateral (LVQuan)"),
    "A": local_code("lvquan-rwt-a", "LV regional wall thickness, anterior (LVQuan)"),
    "AS": local_code("lvquan-rwt-as", "LV regional wall thickness, anteroseptal (LVQuan)"),
}
INDEX_CODES: tuple[Code, ...] = (
    CAVITY_AREA,
    MYOCARDIUM_AREA,
    DIMENSION_IS_AL,
    DIMENSION_I_A,
    DIMENSION_IL_AS,
    RWT["IS"],
    RWT["I"],
    RWT["IL"],
    RWT["AL"],
    RWT["A"],
    RWT["AS"],
)

# Function.
DIASTOLIC_AREA = Code("399109006", "SCT", "Left ventricular diastolic area")
SYSTOLIC_AREA = Code("399030000", "SCT", "Left ventricular systolic area")
FRACTIONAL_AREA_CHANGE = Code("399287000", "SCT", "Left ventricular fractional area change")
EDV = Code("8821-1", "LN", "Left ventricular ED volume")
ESV = Code("8823-7", "LN", "Left ventricular ES volume")
STROKE_VOLUME = local_code("lv-sv", "Left ventricular stroke volume (Simpson's method)")
EJECTION_FRACTION = Code("8811-2", "LN", "Left ventricular ejection fraction by MR")
LV_MASS = Code("18087-7", "LN", "Left ventricle mass")
ED_TIME = local_code("lv-ed-time", "Trigger time of end-diastole")
ES_TIME = local_code("lv-es-time", "Trigger time of end-systole")
SIMPSON = local_code("simpson", "Summation of discs (Simpson's method) over the short-axis stack")

# Phase.
CARDIAC_PHASE = Code("246092007", "SCT", "Cardiac cycle phase")
SYSTOLE = Code("111973004", "SCT", "Systole")
DIASTOLE = Code("90892000", "SCT", "Diastole")
KEY_FRAME = local_code("lv-key-frame", "Key frame of the cardiac cycle")
END_DIASTOLE = Code("416190007", "SCT", "End diastole")
END_SYSTOLE = Code("416430001", "SCT", "End systole")

# Outside the domain.
NO_LV_FOUND = local_code("na-no-lv", "No left-ventricle blood pool with a myocardial ring found")
NOT_SHORT_AXIS_CINE = local_code("na-not-cine", "Not a short-axis cine")
