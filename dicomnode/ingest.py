"""The SCP's sink: records each stored instance (and its series and study) in the database."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete

from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Association, utcnow
from dicomnode.imaging.headers import number_of_frames
from dicomnode.routing.facts import SeriesFacts
from dicomnode.scp import ReceivedInstance

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 300.0


def instance_record(instance: ReceivedInstance, stored_path: str, *, new_series: bool = True) -> repo.InstanceRecord:
    """The DB record of a received instance; routing facts come from its header. They describe a new
    series only: ``new_series=False`` (its series row is known) leaves them out, which saves a tenth of
    recording an instance."""
    header = instance.header
    facts = (
        SeriesFacts.from_dataset(header, instance_count=1, calling_ae=instance.calling_ae, called_ae=instance.called_ae)
        if new_series
        else None
    )
    return repo.InstanceRecord(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        series_instance_uid=instance.series_instance_uid,
        study_instance_uid=instance.study_instance_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        path=stored_path,
        size=instance.size,
        calling_ae=instance.calling_ae,
        called_ae=instance.called_ae,
        association_id=instance.association_id,
        patient_id=str(header.get("PatientID", "") or ""),
        study_date=str(header.get("StudyDate", "") or ""),
        study_description=str(header.get("StudyDescription", "") or ""),
        accession_number=str(header.get("AccessionNumber", "") or ""),
        modality=str(header.get("Modality", "") or ""),
        series_description=str(header.get("SeriesDescription", "") or ""),
        body_part=facts.body_part if facts else None,
        facts=facts.to_dict() if facts else {},
        frames=number_of_frames(header),
    )


class DatabaseSink:
    """Implements dicomnode.scp.InstanceSink on top of the database. Errors propagate to the SCP handler,
    which answers Out of Resources (the bytes are already safely on disk)."""

    def __init__(
        self,
        db: Database,
        stored_path: Callable[[Path], str] = str,
        *,
        association_retention: dt.timedelta | None = None,
    ) -> None:
        self.db = db
        self.stored_path = stored_path
        self.association_retention = association_retention
        self._pruned_at = -math.inf
        self._prune_lock = threading.Lock()
        # Study and series ids by association, then series UID: an association sends one series after
        # another, and looking them up again for every instance was a third of recording it. Each entry is
        # used by its association's own thread only; it goes when the association ends.
        self._series_ids: dict[str, dict[str, repo.SeriesIds]] = {}

    def association_started(self, association_id: str, calling_ae: str, called_ae: str) -> None:
        with self.db.session() as session:
            repo.association_started(session, association_id, calling_ae, called_ae)
        self._prune_associations()

    def _prune_associations(self) -> None:
        """Rows of associations that ended longer ago than the retention go (every echo adds one), checked
        on association start at most every few minutes. Series keep their last association's id as text."""
        if self.association_retention is None:
            return
        with self._prune_lock:
            now = time.monotonic()
            if now - self._pruned_at < _PRUNE_EVERY_S:
                return
            self._pruned_at = now
        cutoff = utcnow() - self.association_retention
        with self.db.session() as session:
            result = session.execute(delete(Association).where(Association.ended_at < cutoff))
        removed = int(getattr(result, "rowcount", 0) or 0)
        if removed:
            log.info("associations_pruned rows=%d ended_before=%s", removed, cutoff.isoformat(timespec="seconds"))

    def instance_received(self, instance: ReceivedInstance) -> None:
        series = self._series_ids.setdefault(instance.association_id, {})
        known = series.get(instance.series_instance_uid)
        record = instance_record(instance, self.stored_path(instance.path), new_series=known is None)
        try:
            with self.db.session() as session:
                is_new, ids = repo.record_received(session, record, replaced=instance.replaced, known=known)
        except repo.StaleSeriesIdsError:  # rolled back: record it as the first of a new series
            record = instance_record(instance, self.stored_path(instance.path))
            with self.db.session() as session:
                is_new, ids = repo.record_received(session, record, replaced=instance.replaced)
        series[instance.series_instance_uid] = ids  # only once committed: a rolled back series row is no id
        if not is_new:
            log.info(
                "instance_duplicate association_id=%s policy=%s",
                instance.association_id,
                "replaced" if instance.replaced else "kept first copy",
            )

    def association_ended(self, association_id: str) -> None:
        self._series_ids.pop(association_id, None)
        with self.db.session() as session:
            repo.association_ended(session, association_id)
