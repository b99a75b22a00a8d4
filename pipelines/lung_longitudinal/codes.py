"""Coded concepts used in this pipeline's findings (SNOMED CT, DICOM, UCUM; a 99 scheme where none fits)."""

from __future__ import annotations

from dicomnode.plugins.api import Code, local_code

# Anatomy and segment descriptions.
LUNG = Code("39607008", "SCT", "Lung structure")
LEFT_LUNG = Code("44029006", "SCT", "Left lung structure")
RIGHT_LUNG = Code("3341006", "SCT", "Right lung structure")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")
LESION = Code("52988006", "SCT", "Lesion")
OPACITY = Code("112001", "DCM", "Opacity")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")

# Measurements.
VOLUME = Code("118565006", "SCT", "Volume")
LONG_AXIS = Code("103339001", "SCT", "Long axis")
MEAN = Code("373098007", "SCT", "Mean")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
VOLUME_RATIO = Code("113288", "DCM", "Volume Ratio")

# Local concepts where no standard code says exactly this (the node's private scheme, through local_code).
NORMAL_LUNG_VOLUME = local_code("lung-normal-vol", "Normal lung volume")
ABNORMAL_LUNG_VOLUME = local_code("lung-abn-vol", "Abnormal lung volume")
LUNG_VOLUME = local_code("lung-roi-vol", "Lung volume")
LEFT_LUNG_VOLUME = local_code("lung-left-vol", "Left lung volume")
RIGHT_LUNG_VOLUME = local_code("lung-right-vol", "Right lung volume")
VOLUME_CHANGE = local_code("les-vol-chg", "Volume change since prior")
PERCENT_VOLUME_CHANGE = local_code("les-vol-pct", "Percent volume change since prior")
DOUBLING_TIME = local_code("les-vdt", "Volume doubling time")
CHANGE_STATUS = local_code("les-chg", "Change since prior study")
MARKING_TYPE = local_code("lung-mark", "Marking type")
HU_BAND = local_code("lung-band", "Normal lung density band")

# Change status values.
STATUS_CODES = {
    "new": Code("129721008", "SCT", "New finding"),
    "grown": Code("15454001", "SCT", "Increased size"),
    "shrunk": Code("19776001", "SCT", "Decrease in size"),
    "stable": Code("260388006", "SCT", "No change"),
    "resolved": Code("413322009", "SCT", "Problem resolved"),
    "indeterminate": Code("82334004", "SCT", "Indeterminate"),
}

# UCUM units.
ML = Code("mL", "UCUM", "milliliter")
MM = Code("mm", "UCUM", "millimeter")
PERCENT = Code("%", "UCUM", "percent")
DAY = Code("d", "UCUM", "day")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = Code("1", "UCUM", "no units")
