"""Reading images for pipelines: tolerant headers, geometry and timing, pixel data, volumes and cines.

The bottom layer of the node (pydicom and NumPy only): the pipeline contract, the encoder and the runner
all use it, and it uses none of them.
"""

from dicomnode.imaging.cine import cine_stacks, load_cine, time_point_count
from dicomnode.imaging.geometry import FrameRef, frame_geometry, frame_refs, sorted_frames
from dicomnode.imaging.headers import pixel_spacing, read_full, read_header, repair_header, sop_class_uid
from dicomnode.imaging.pixels import modality_frames
from dicomnode.imaging.types import Cine, FrameSource, Volume
from dicomnode.imaging.volume import load_volume

__all__ = [
    "Cine",
    "FrameRef",
    "FrameSource",
    "Volume",
    "cine_stacks",
    "frame_geometry",
    "frame_refs",
    "load_cine",
    "load_volume",
    "modality_frames",
    "pixel_spacing",
    "read_full",
    "read_header",
    "repair_header",
    "sop_class_uid",
    "sorted_frames",
    "time_point_count",
]
