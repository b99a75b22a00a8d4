"""What `dicomnode serve` says when it starts: where its data is, who it is, where results go (each
destination checked by C-ECHO), and a warning when results would stay on this host."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from dicomnode.addresses import Destination
from dicomnode.config import DestinationSettings, Settings, mask_url
from dicomnode.dispatch.echo import echo


def _roles(dest: DestinationSettings) -> str:
    return "+".join(role for role, on in (("results", dest.results), ("forward", dest.forward)) if on) or "none"


def destination_lines(settings: Settings, *, timeout: float = 3.0) -> list[str]:
    """One line per destination with its C-ECHO result (all echoed at once: start-up waits one timeout)."""
    dests = list(settings.destinations)
    if not dests:
        return []

    def check(dest: DestinationSettings) -> str:
        address = Destination(dest.name, dest.ae_title, dest.host, dest.port)
        return echo(address, settings.dispatch_calling_ae, timeout=timeout)

    with ThreadPoolExecutor(max_workers=min(8, len(dests))) as pool:
        results = list(pool.map(check, dests))
    return [
        f"  destination {d.name}: {d.ae_title}@{d.host}:{d.port} ({_roles(d)}), C-ECHO {r}"
        for d, r in zip(dests, results, strict=True)
    ]


def startup_lines(
    settings: Settings, port: int, pipelines: Iterable[str], *, workers: bool = True, destinations: bool = True
) -> list[str]:
    node = settings.node
    data_dir = node.data_dir.resolve()
    lines = [
        f"dicomnode serving as {node.ae_title} on {node.host}:{port}",
        f"  data:        {data_dir} (store {data_dir / 'store'}, results {data_dir / 'outputs'})",
        f"  database:    {mask_url(settings.database_url)}",
        f"  calling AEs: {', '.join(node.allowed_calling_aes) or 'any'}",
        f"  pipelines:   {', '.join(sorted(pipelines)) or 'none'}",
    ]
    if workers:
        lines.append(f"  workers:     {settings.worker.processes} on this host")
    if not destinations:  # a receiver alone: `dicomnode dispatch` reports them
        return lines
    lines += destination_lines(settings)
    if not any(d.results for d in settings.destinations):
        lines.append(
            "WARNING: no destination for results is configured: results stay in "
            f"{data_dir / 'outputs'} (add --destination AET@HOST:PORT or a [[destinations]] entry)"
        )
    return lines
