"""Prometheus metrics computed from the database and the store at scrape time: the counters live in the
database, so every process and host of a scaled-out node reports the same numbers."""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from dicomnode.db import repository as repo
from dicomnode.db.models import Association, Delivery, DeliveryState, Instance, Job
from dicomnode.db.queries import LIVE_WORKER_SECONDS
from dicomnode.http.reads import quarantined
from dicomnode.http.services import NodeServices

# Pipeline run times: seconds to an hour (GPU models and large CTs take minutes).
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class NodeCollector(Collector):
    def __init__(self, services: NodeServices) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        with self.services.db.session() as session:
            received, size = session.execute(
                select(func.coalesce(func.sum(Instance.received_count), 0), func.coalesce(func.sum(Instance.size), 0))
            ).one()
            associations = session.scalar(select(func.count()).select_from(Association))
            jobs = session.execute(
                select(Job.kind, Job.pipeline, Job.state, func.count()).group_by(Job.kind, Job.pipeline, Job.state)
            ).all()
            runs = session.execute(
                select(Job.pipeline, Job.started_at, Job.processed_at).where(
                    Job.started_at.is_not(None), Job.processed_at.is_not(None)
                )
            ).all()
            deliveries = session.execute(
                select(Delivery.destination, Delivery.state, func.count()).group_by(
                    Delivery.destination, Delivery.state
                )
            ).all()
            live = len(repo.live_workers(session, within_seconds=LIVE_WORKER_SECONDS))
        yield CounterMetricFamily(
            "dicomnode_instances_received", "C-STORE requests stored (duplicates included)", value=int(received)
        )
        yield CounterMetricFamily("dicomnode_received_bytes", "bytes of the instances stored", value=int(size))
        yield CounterMetricFamily("dicomnode_associations", "incoming associations", value=int(associations or 0))
        queue = GaugeMetricFamily(
            "dicomnode_jobs", "jobs by kind, pipeline and state", labels=["kind", "pipeline", "state"]
        )
        for kind, pipeline, state, count in jobs:
            queue.add_metric([kind.value, pipeline, state.value], int(count))
        yield queue
        yield self._durations(runs)
        yield from self._deliveries(deliveries)
        yield GaugeMetricFamily("dicomnode_live_workers", "worker processes seen alive lately", value=live)
        yield GaugeMetricFamily(
            "dicomnode_quarantined_files", "received files kept aside", value=len(quarantined(self.services.settings))
        )
        yield from self._disk()

    @staticmethod
    def _durations(runs: Sequence[Any]) -> HistogramMetricFamily:
        by_pipeline: dict[str, list[float]] = defaultdict(list)
        for pipeline, started, processed in runs:
            by_pipeline[pipeline].append(max(0.0, (processed - started).total_seconds()))
        family = HistogramMetricFamily(
            "dicomnode_job_run_seconds", "pipeline run time (claimed to outputs written)", labels=["pipeline"]
        )
        for pipeline, seconds in sorted(by_pipeline.items()):
            buckets = [(str(le), sum(1 for s in seconds if s <= le)) for le in DURATION_BUCKETS]
            buckets.append(("+Inf", len(seconds)))
            family.add_metric([pipeline], buckets, sum_value=sum(seconds))
        return family

    def _deliveries(self, rows: Sequence[Any]) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "dicomnode_deliveries", "deliveries by destination and state", labels=["destination", "state"]
        )
        failures = GaugeMetricFamily(
            "dicomnode_delivery_failures", "deliveries failed permanently (until retried)", labels=["destination"]
        )
        failed: dict[str, int] = {d.name: 0 for d in self.services.settings.destinations}
        for destination, state, count in rows:
            by_state.add_metric([destination, state.value], int(count))
            if state is DeliveryState.FAILED:
                failed[destination] = int(count)
        for destination, count in sorted(failed.items()):
            failures.add_metric([destination], count)
        yield by_state
        yield failures

    def _disk(self) -> Iterator[Metric]:
        store = self.services.settings.store_dir
        target = store if store.exists() else self.services.settings.node.data_dir
        usage = shutil.disk_usage(target)
        yield GaugeMetricFamily("dicomnode_store_free_bytes", "free space where the store is", value=usage.free)
        yield GaugeMetricFamily("dicomnode_store_size_bytes", "size of the store's file system", value=usage.total)


def metrics_registry(services: NodeServices) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(services))
    return registry
