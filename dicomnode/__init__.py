"""dicomnode: an AI DICOM node that receives studies, runs analyses and returns SR/SEG to the PACS."""

__version__ = "0.1.0"
