"""Synthetic DICOM writers for tests, benchmarks and phantoms (never imported by a pipeline's run path)."""
