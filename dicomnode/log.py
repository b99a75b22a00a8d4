"""Logging configuration, done only by the CLI. Records carry a stable action name and ids, never patient data.

Messages follow one convention: ``"action key=value key=value free text"``. The JSON format (``--log-format
json`` or ``node.log_format``) turns that into fields: ``action``, then each ``key=value`` (numbers as numbers,
``job``/``study``/``series`` as ``job_id``/``study_id``/``series_id``), plus any ``extra=`` given to the logger.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any

_ACTION = re.compile(r"[a-z][a-z0-9_.]*")
_FIELD = re.compile(r"([a-z][a-z0-9_]*)=(\S+)")
# Short keys the messages use for ids, with the names the JSON fields carry.
_ID_KEYS = {"job": "job_id", "study": "study_id", "series": "series_id", "delivery": "delivery_id"}
# Attributes every LogRecord has; anything else was passed through ``extra=`` and becomes a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _value(text: str) -> Any:
    text = text.rstrip(",;:")
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]+\.[0-9]+", text):
        return float(text)
    return text


def record_fields(message: str) -> dict[str, Any]:
    """The action (first word) and ``key=value`` fields of a message in the node's convention."""
    first, _, _ = message.partition(" ")
    fields: dict[str, Any] = {"action": first} if _ACTION.fullmatch(first) else {}
    for key, raw in _FIELD.findall(message):
        fields[_ID_KEYS.get(key, key)] = _value(raw)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, action, ids and other fields, and the message."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            **record_fields(message),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        data["message"] = message
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    # pynetdicom logs every PDU at INFO, patient-identifying elements included: keep it at WARNING.
    quiet = logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG
    logging.getLogger("pynetdicom").setLevel(quiet)
    logging.getLogger("highdicom").setLevel(quiet)  # logs every copied module at INFO
