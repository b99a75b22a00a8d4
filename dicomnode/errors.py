"""One exception hierarchy, rooted in :class:`DicomNodeError`. Chain causes with ``raise ... from``."""

from __future__ import annotations


class DicomNodeError(Exception):
    """Root of every error the node raises on purpose."""


class ValidationError(DicomNodeError, ValueError):
    """A value failed validation at a boundary (constructor, config, plugin); the message names the field."""


class ConfigError(ValidationError):
    """The configuration file or a command-line override is invalid; the message names the key."""


class PluginError(DicomNodeError):
    """A pipeline could not be loaded or does not honour the contract."""


class PipelineInputError(DicomNodeError):
    """A pipeline was given input it cannot process (wrong modality, missing attribute, no pixels)."""


class PipelineError(DicomNodeError):
    """A pipeline failed while running."""


class WeightsError(DicomNodeError):
    """Model weights are missing or their checksum does not match."""


class StoreError(DicomNodeError):
    """The instance store could not write or read an object."""


class StoreFullError(StoreError):
    """No space left to store an object (maps to DIMSE 0xA700 Out of Resources)."""


class EncodeError(DicomNodeError):
    """A result could not be encoded as valid DICOM."""


class DeliveryError(DicomNodeError):
    """A C-STORE to a destination failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class JobError(DicomNodeError):
    """A job could not be claimed, run or finished."""


class QueryRetrieveError(DicomNodeError):
    """A C-FIND, C-GET or C-MOVE to a peer failed (no association, no response, or a failure status)."""
