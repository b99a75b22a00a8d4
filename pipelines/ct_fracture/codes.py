"""Codes of ct_fracture's results: SNOMED CT and UCUM where a concept exists, the node's local scheme otherwise."""

from __future__ import annotations

from dicomnode.plugins.api import Code, local_code

# findings and anatomy (SNOMED CT)
FRACTURE = Code("72704001", "SCT", "Fracture")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
PHYSICAL_OBJECT = Code("260787004", "SCT", "Physical object")
BONE = Code("272673000", "SCT", "Bone")
SPINE = Code("51282000", "SCT", "Bone structure of spine")
RIB = Code("113197003", "SCT", "Rib")
STERNUM = Code("56873002", "SCT", "Sternum")
PELVIS = Code("118645006", "SCT", "Pelvis")
UPPER_LIMB_BONE = Code("371195002", "SCT", "Bone of upper limb")
LOWER_LIMB_BONE = Code("72001000", "SCT", "Bone of lower limb")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
METAL = local_code("metal-object", "Metallic object (implant or foreign body)")

# units (UCUM)
MM = Code("mm", "UCUM", "millimeter")
ML = Code("mL", "UCUM", "milliliter")
NO_UNITS = Code("1", "UCUM", "no units")

# measurements
LENGTH = Code("410668003", "SCT", "Length")
VOLUME = Code("118565006", "SCT", "Volume")
RIB_NUMBER = local_code("rib-number", "Rib number")
METAL_DISTANCE = local_code("metal-distance", "Distance to the nearest metal")
RIB_COUNT_LEFT = local_code("rib-count-left", "Ribs found, left")
RIB_COUNT_RIGHT = local_code("rib-count-right", "Ribs found, right")

# qualitative findings
FRACTURE_TYPE = local_code("fracture-type", "Fracture type")
TYPES = {
    "fresh": local_code("fx-fresh", "Fresh fracture"),
    "old": local_code("fx-old", "Old fracture"),
    "post-operative": local_code("fx-postop", "Post-operative fracture"),
    "suspected": local_code("fx-suspected", "Suspected fracture"),
    "other": local_code("fx-other", "Other bone abnormality"),
}
TYPING_METHOD = local_code("fx-typing-method", "Fracture typing method")
TYPED_BY_NETWORK = local_code("fx-typed-learned", "ResNet-34 self-attention classifier")
TYPED_BY_METAL_CUE = local_code("fx-typed-metal", "Metal next to the fracture")
METAL_NEARBY = local_code("fx-metal-nearby", "Metal next to the fracture")
PRESENT = Code("52101004", "SCT", "Present")
FRACTURE_DETECTION = local_code("fx-detection", "Fracture detection")
DETECTION_STATUS = local_code("fx-detect-status", "Fracture detection status")
SKELETON = local_code("skeleton", "Segmented skeleton")
BONE_SEGMENTATION_METHOD = local_code("bone-seg-method", "Bone segmentation method")
CLASSICAL_SEGMENTATION = local_code("bone-seg-hu", "HU threshold, closing, hole filling, clean-up")
LEARNED_SEGMENTATION = local_code("bone-seg-learned", "Residual 3D U-Net, clean-up")
RIB_NUMBERING = local_code("rib-numbering", "Rib numbering")
RIBS_FROM_TWELFTH = local_code("ribs-from-12", "Counted from the twelfth rib")
RIBS_FROM_FIRST = local_code("ribs-from-1", "Counted from the first rib")
RIBS_NOT_NUMBERED = local_code("ribs-unnumbered", "Not numbered (first and twelfth rib not in view)")
