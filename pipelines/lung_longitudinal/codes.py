"""Coded concepts used in this pipeline's findings (SNOMED CT, DICOM, UCUM; a 99 scheme where none fits)."""

from __future__ import annotations

from dicomnode.plugins.api import LOCAL_SCHEME, Code

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

# Local concepts where no standard code says exactly this (private 99 scheme, allowed by PS3.16).
LOCAL = LOCAL_SCHEME
NORMAL_LUNG_VOLUME = Code("LUNG-NORMAL-VOL", LOCAL, "Normal lung volume")
ABNORMAL_LUNG_VOLUME = Code("LUNG-ABN-VOL", LOCAL, "Abnormal lung volume")
LUNG_VOLUME = Code("LUNG-ROI-VOL", LOCAL, "Lung volume")
LEFT_LUNG_VOLUME = Code("LUNG-LEFT-VOL", LOCAL, "Left lung volume")
RIGHT_LUNG_VOLUME = Code("LUNG-RIGHT-VOL", LOCAL, "Right lung volume")
VOLUME_CHANGE = Code("LES-VOL-CHG", LOCAL, "Volume change since prior")
PERCENT_VOLUME_CHANGE = Code("LES-VOL-PCT", LOCAL, "Percent volume change since prior")
DOUBLING_TIME = Code("LES-VDT", LOCAL, "Volume doubling time")
CHANGE_STATUS = Code("LES-CHG", LOCAL, "Change since prior study")
MARKING_TYPE = Code("LUNG-MARK", LOCAL, "Marking type")
HU_BAND = Code("LUNG-BAND", LOCAL, "Normal lung density band")
PRODUCED_BY = Code("LUNG-PATH", LOCAL, "Normal lung segmentation path")

# Change status values.
STATUS_CODES = {
    "new": Code("129721008", "SCT", "New finding"),
    "grown": Code("15454001", "SCT", "Increased size"),
    "shrunk": Code("19776001", "SCT", "Decrease in size"),
    "stable": Code("260388006", "SCT", "No change"),
    "resolved": Code("413322009", "SCT", "Problem resolved"),
}

# UCUM units.
ML = Code("mL", "UCUM", "milliliter")
MM = Code("mm", "UCUM", "millimeter")
PERCENT = Code("%", "UCUM", "percent")
DAY = Code("d", "UCUM", "day")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = Code("1", "UCUM", "no units")
