"""Priors: earlier studies of the same patient, from the node's own store (with earlier results when the node
analysed them) and, when configured, from the PACS by C-FIND + C-GET."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.db.models import Instance, Job, JobState, Series, Study
from dicomnode.errors import DicomNodeError
from dicomnode.plugins.api import ImageSeries, Pipeline, PipelineResult, PriorSpec, PriorStudy
from dicomnode.routing.facts import facts_of_headers
from dicomnode.routing.selectors import match_selector
from dicomnode.runner.execute import group_series, load_result, read_headers

log = logging.getLogger(__name__)


def _accepts(spec: PriorSpec, series: ImageSeries) -> bool:
    facts = facts_of_headers(series.datasets)
    return match_selector(spec.selector, facts).matched


def previous_result(path: str | None) -> PipelineResult | None:
    """An earlier result, rebuilt from its result.json (its details carry what pipelines reuse)."""
    return load_result(Path(path)) if path and Path(path).is_file() else None


def _too_old(study_date: str, current: str, max_age_days: int | None) -> bool:
    if not max_age_days or not study_date or not current:
        return False
    try:
        gap = dt.datetime.strptime(current, "%Y%m%d") - dt.datetime.strptime(study_date, "%Y%m%d")
    except ValueError:
        return False
    return gap.days > max_age_days


class PriorFinder:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def find(self, pipeline: Pipeline, study: Study) -> list[PriorStudy]:
        spec = pipeline.priors
        if spec is None or not study.patient_id:
            return []
        limit = min(spec.max_priors, self.settings.priors.max_studies)
        max_age = spec.max_age_days or self.settings.priors.max_age_days
        priors = self._local(pipeline, spec, study, limit, max_age)
        if len(priors) < limit and self.settings.priors.pacs:
            known = {p.study_instance_uid for p in priors} | {study.study_instance_uid}
            priors += self._from_pacs(spec, study, known, limit - len(priors), max_age)
        priors.sort(key=lambda p: p.study_date, reverse=True)
        return priors[:limit]

    def _local(self, pipeline: Pipeline, spec: PriorSpec, study: Study, limit: int, max_age: int) -> list[PriorStudy]:
        with self.db.session() as session:
            earlier = session.scalars(
                select(Study)
                .where(Study.patient_id == study.patient_id, Study.id != study.id, Study.study_date <= study.study_date)
                .order_by(Study.study_date.desc())
            ).all()
            found: list[PriorStudy] = []
            for prior in earlier:
                if len(found) >= limit or _too_old(prior.study_date, study.study_date, max_age):
                    break
                paths = [
                    self.settings.resolve(p)
                    for p in session.scalars(select(Instance.path).join(Series).where(Series.study_id == prior.id))
                ]
                series = [s for s in group_series(read_headers(paths)) if _accepts(spec, s)]
                if not series:
                    continue
                result_path = session.scalar(
                    select(Job.result_path)
                    .where(
                        Job.study_id == prior.id,
                        Job.pipeline == pipeline.name,
                        Job.state.in_([JobState.DONE, JobState.DELIVERING]),
                    )
                    .order_by(Job.id.desc())
                    .limit(1)
                )
                found.append(
                    PriorStudy(
                        prior.study_instance_uid,
                        prior.study_date,
                        series,
                        previous_result(str(self.settings.resolve(result_path)) if result_path else None),
                    )
                )
        return found

    def _from_pacs(self, spec: PriorSpec, study: Study, known: set[str], limit: int, max_age: int) -> list[PriorStudy]:
        from dicomnode.addresses import Destination
        from dicomnode.qr import find_studies, get_study

        pacs = Destination.parse(self.settings.priors.pacs)
        calling = self.settings.dispatch_calling_ae
        modality = spec.selector.modalities[0] if spec.selector.modalities else None
        try:
            candidates = find_studies(
                pacs,
                calling,
                patient_id=study.patient_id,
                modality=modality,
                before_date=study.study_date,
                limit=limit + len(known),
            )
        except DicomNodeError as exc:
            log.warning("priors_query_failed study=%s error=%s", study.study_instance_uid, exc)
            return []
        found: list[PriorStudy] = []
        for candidate in candidates:
            if len(found) >= limit:
                break
            if candidate.study_instance_uid in known or _too_old(candidate.study_date, study.study_date, max_age):
                continue
            folder = self.settings.node.data_dir / "priors" / candidate.study_instance_uid
            try:
                paths = get_study(pacs, calling, candidate.study_instance_uid, folder)
            except DicomNodeError as exc:
                log.warning("priors_retrieve_failed study=%s error=%s", candidate.study_instance_uid, exc)
                continue
            series = [s for s in group_series(read_headers(paths)) if _accepts(spec, s)]
            if series:
                found.append(PriorStudy(candidate.study_instance_uid, candidate.study_date, series))
        return found
