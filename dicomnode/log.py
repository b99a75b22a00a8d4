"""Logging configuration, done only by the CLI. Records carry a stable action name and ids, never patient data."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # pynetdicom logs every PDU at INFO, patient-identifying elements included: keep it at WARNING.
    quiet = logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG
    logging.getLogger("pynetdicom").setLevel(quiet)
    logging.getLogger("highdicom").setLevel(quiet)  # logs every copied module at INFO
