"""The `dicomnode` command: serve, worker, run, pipelines, route explain, jobs, status, send, train, import.

A user error (bad flag, missing path, invalid configuration, unreachable database) is one line on stderr and
exit status 2; a traceback means a bug."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from dicomnode import __version__
from dicomnode.config import Settings, find_config, load_settings, parse_address
from dicomnode.errors import DicomNodeError
from dicomnode.log import configure_logging
from dicomnode.runner.supervisor import DATABASE_URL_ENV


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file (see conf/dicomnode.toml); default $DICOMNODE_CONFIG, else ./dicomnode.toml",
    )
    parser.add_argument("--data-dir", type=Path, help="data directory (store, database, outputs)")
    parser.add_argument("--database-url", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity (stderr)")
    parser.add_argument("--log-format", choices=["text", "json"], help="json: one object a line, ids as fields")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="DICOM port to listen on (default 11112)")
    parser.add_argument("--ae-title", help="our AE title (default DICOMNODE)")
    parser.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="AET@HOST:PORT",
        help="forward every received instance unchanged to this AE (repeatable)",
    )
    parser.add_argument(
        "--destination",
        action="append",
        default=[],
        metavar="AET@HOST:PORT",
        help="send results (SR, SEG, summary) to this AE (repeatable)",
    )
    parser.add_argument("--series-quiet-seconds", type=float, help="a series is complete after this quiet period")
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    node: dict[str, Any] = {}
    for flag, key in (("data_dir", "data_dir"), ("port", "port"), ("ae_title", "ae_title"), ("log_level", "log_level")):
        value = getattr(args, flag, None)
        if value is not None:
            node[key] = str(value) if isinstance(value, Path) else value
    if getattr(args, "log_format", None):
        node["log_format"] = args.log_format
    if node:
        overrides["node"] = node
    if getattr(args, "database_url", None):
        overrides["database"] = {"url": args.database_url}
    if getattr(args, "series_quiet_seconds", None) is not None:
        overrides["completion"] = {"series_quiet_seconds": args.series_quiet_seconds}
    if getattr(args, "workers", None) is not None:
        overrides["worker"] = {"processes": args.workers}
    destinations = [parse_address(a, results=True).model_dump() for a in getattr(args, "destination", [])]
    destinations += [parse_address(a, results=False, forward=True).model_dump() for a in getattr(args, "forward", [])]
    if destinations:
        overrides["destinations"] = destinations
    settings_json = getattr(args, "settings_json", None)
    if settings_json:
        # A supervised worker child: settings without secrets on disk, the database URL from its environment.
        data = json.loads(Path(settings_json).read_text(encoding="utf-8"))
        url = os.environ.get(DATABASE_URL_ENV)
        if url:
            data["database"]["url"] = url
        return Settings.model_validate(data)
    return load_settings(find_config(getattr(args, "config", None)), overrides)


# ------------------------------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace) -> int:
    from dicomnode.node import Node
    from dicomnode.startup import startup_lines

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level, settings.node.log_format)
    node = Node(settings)

    def _announce() -> None:
        print("\n".join(startup_lines(settings, node.scp.port, node.registry.active())), flush=True)
        if node.http is not None:
            print(f"dashboard and HTTP API: http://{node.http.host}:{node.http.port}/ (API reference at /docs)")

    from dicomnode.profiling import profile_from_env

    with profile_from_env():
        node.serve_forever(on_started=_announce)
    return 0


def cmd_scp(args: argparse.Namespace) -> int:
    """The receiving part alone: SCP, assembler/router (and retention) on the shared database and store."""
    from dicomnode.node import RECEIVE, Node
    from dicomnode.startup import startup_lines

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level, settings.node.log_format)
    node = Node(settings, roles=frozenset({RECEIVE}))

    def _announce() -> None:
        lines = startup_lines(settings, node.scp.port, node.registry.active(), workers=False, destinations=False)
        print("\n".join(lines), flush=True)

    node.serve_forever(on_started=_announce)
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    """The delivering part alone: claims due deliveries from the shared database and sends them."""
    from dicomnode.node import DISPATCH, Node
    from dicomnode.startup import destination_lines

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level, settings.node.log_format)
    node = Node(settings, roles=frozenset({DISPATCH}))

    def _announce() -> None:
        lines = [f"dicomnode dispatching as {settings.dispatch_calling_ae}", *destination_lines(settings)]
        print("\n".join(lines), flush=True)

    node.serve_forever(on_started=_announce)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from dicomnode.node import run_worker_child, run_workers

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level, settings.node.log_format)
    if args.child:
        run_worker_child(settings)
    else:
        run_workers(settings)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Load, validate (rules against the installed pipelines too) and print the effective configuration."""
    from dicomnode.node import check_rules
    from dicomnode.runner.host import build_registry

    settings = settings_from_args(args)
    configure_logging("ERROR")
    check_rules(settings, build_registry(settings))
    source = find_config(getattr(args, "config", None))
    print(f"# configuration: {source or 'embedded defaults'} (valid)")
    print(json.dumps(settings.masked(), indent=2, default=str))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dicomnode.runner.standalone import run_standalone

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level if args.log_level else "WARNING")
    if not args.input_dir.is_dir():
        raise DicomNodeError(f"{args.input_dir}: no such directory")
    params = dict(_key_values(args.param))
    started = time.monotonic()
    _stage(f"{args.pipeline}: running on {args.input_dir}")
    document = run_standalone(
        settings, args.pipeline, args.input_dir, args.prior, args.output, params, prior_results=args.prior_result
    )
    _stage(f"{args.pipeline}: done in {time.monotonic() - started:.1f} s")
    name, version = document["pipeline"]["name"], document["pipeline"]["version"]
    print(f"{name} {version} ({document['produced_by']} path, {time.monotonic() - started:.1f} s)")
    if document["outcome"] != "assessed":
        reason = (document.get("not_assessable_reason") or {}).get("meaning", "")
        print(f"  NOT ASSESSABLE: {reason}. {document['text']}".rstrip())
    for item in document["files"]:
        print(f"  {item['kind']:<8} {item['path']}")
    print(f"  result   {args.output / 'result.json'}")
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    from dicomnode.runner.host import build_registry

    settings = settings_from_args(args)
    configure_logging("ERROR")
    registry = build_registry(settings)
    if not registry.entries:
        print("no pipelines installed")
    for name, entry in sorted(registry.entries.items()):
        print(f"{name:<22} {entry.version:<10} {entry.status:<12} {entry.reason}")
    return 0


def cmd_route_explain(args: argparse.Namespace) -> int:
    from dicomnode.assembly import effective_rules
    from dicomnode.routing.explain import explain_folder
    from dicomnode.runner.host import build_registry

    settings = settings_from_args(args)
    configure_logging("ERROR")
    if not args.folder.is_dir():
        raise DicomNodeError(f"{args.folder}: no such directory")
    print(explain_folder(args.folder, effective_rules(settings), build_registry(settings).active()))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from dicomnode.jobs_cli import jobs_command

    settings = settings_from_args(args)
    configure_logging("ERROR")
    return jobs_command(settings, args.action, args.job_id, state=args.state, limit=args.limit, rerun=args.rerun)


def cmd_destinations(args: argparse.Namespace) -> int:
    from dicomnode.jobs_cli import destinations_command

    settings = settings_from_args(args)
    configure_logging("ERROR")
    return destinations_command(settings, args.action, args.name)


def cmd_status(args: argparse.Namespace) -> int:
    from dicomnode.jobs_cli import status_command

    settings = settings_from_args(args)
    configure_logging("ERROR")
    return status_command(settings)


def cmd_retention(args: argparse.Namespace) -> int:
    from dicomnode.db.queries import open_node_database
    from dicomnode.retention import has_limits, run_retention

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level if args.log_level else "WARNING")
    db = open_node_database(settings)
    try:
        candidates = run_retention(db, settings, dry_run=args.dry_run)
    finally:
        db.dispose()
    for c in candidates:
        print(("would delete " if args.dry_run else "deleted ") + c.describe())
    total = sum(c.bytes for c in candidates)
    verb = "would free" if args.dry_run else "freed"
    note = "" if has_limits(settings) else " (no [retention] limit is configured)"
    print(f"retention: {len(candidates)} item(s), {verb} {total / 1e6:.1f} MB{note}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dicomnode.plugins.api import TrainablePipeline
    from dicomnode.runner.host import build_registry

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level)
    pipeline = build_registry(settings).get(args.pipeline)
    if not isinstance(pipeline, TrainablePipeline):
        raise DicomNodeError(f"pipeline {args.pipeline!r} has no learned part to train")
    if not args.data.exists():
        raise DicomNodeError(f"{args.data}: no such file or directory")
    started = time.monotonic()
    _stage(f"{args.pipeline}: training on {args.data} (its own log lines show the epochs)")
    weights = pipeline.train(args.data, args.output, dict(_key_values(args.option)))
    _stage(f"{args.pipeline}: trained in {time.monotonic() - started:.1f} s")
    from dicomnode.plugins.weights import sha256_of

    print(f"weights: {weights}\nsha256:  {sha256_of(weights)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dicomnode.plugins.api import EvaluablePipeline
    from dicomnode.runner.host import PipelineHost, build_registry

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level if args.log_level else "WARNING")
    registry = build_registry(settings)
    pipeline = registry.get(args.pipeline)
    if not isinstance(pipeline, EvaluablePipeline):
        raise DicomNodeError(f"pipeline {args.pipeline!r} has no evaluate command")
    if not args.data.is_dir():
        raise DicomNodeError(f"{args.data}: no such directory")
    work_dir = args.output.parent if args.output else None
    ctx = PipelineHost(settings, registry).context(
        pipeline, work_dir=work_dir, extra_params=dict(_key_values(args.param))
    )
    report = pipeline.evaluate(args.data, dict(_key_values(args.option)), ctx)
    text = json.dumps(report, indent=2, default=str)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _pipeline_command(argv: Sequence[str]) -> int | None:
    """``dicomnode <command> ...`` for a pipeline that offers a tool under that name (CommandPipeline)."""
    from dicomnode.plugins.api import CommandPipeline
    from dicomnode.plugins.registry import Registry

    registry = Registry.discover()
    for entry in registry.entries.values():
        pipeline = entry.pipeline
        if isinstance(pipeline, CommandPipeline) and pipeline.command_name == argv[0]:
            return int(pipeline.command(list(argv[1:])))
    return None


def cmd_import(args: argparse.Namespace) -> int:
    from pydicom.uid import generate_uid

    from dicomnode.addresses import validate_ae_title
    from dicomnode.importing import wrap_image_as_secondary_capture
    from dicomnode.progress import Progress

    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise DicomNodeError(f"{missing[0]}: no such file" + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
    for flag, value, limit in (("--patient-id", args.patient_id, 64), ("--accession", args.accession, 16)):
        if len(value) > limit:
            raise DicomNodeError(f"{flag}: at most {limit} characters")
    validate_ae_title(args.modality, "--modality")  # the same short code-string rules
    args.output.mkdir(parents=True, exist_ok=True)
    study_uid = args.study_uid or generate_uid()  # one study for the pictures of one import
    progress = Progress(len(args.images), "import")
    written = []
    for number, path in enumerate(args.images, start=1):
        ds = wrap_image_as_secondary_capture(
            path,
            patient_id=args.patient_id,
            patient_name=args.patient_name,
            study_instance_uid=study_uid,
            body_part=args.body_part or None,
            modality=args.modality,
            study_description=args.study_description,
            accession_number=args.accession,
            series_number=number,
        )
        target = args.output / f"{path.stem}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
        progress.advance(note=path.name)
    progress.done()
    for target in written:
        print(target)
    print(f"imported {len(written)} pictures into study {study_uid} under {args.output}", file=sys.stderr)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from dicomnode.send_cli import send_folder

    settings = settings_from_args(args)
    configure_logging(settings.node.log_level if args.log_level else "ERROR")
    if not args.log_level:  # the summary says what failed; pynetdicom's own ERROR lines would repeat it
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    return send_folder(args.folder, args.address, args.calling_ae or settings.dispatch_calling_ae)


def cmd_completion(args: argparse.Namespace) -> int:
    from dicomnode.completion import bash_script

    print(bash_script(build_parser()), end="")
    return 0


def _stage(text: str) -> None:
    """A progress line on a terminal for a long command whose inside reports nothing (stderr: stdout stays the
    result; scripts and logs get the command's summary only)."""
    if sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


def _key_values(items: Sequence[str]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise DicomNodeError(f"{item!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        pairs.append((key, value))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dicomnode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dicomnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the whole node (SCP, router, workers, dispatcher)")
    _add_config_options(p)
    _add_serve_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("scp", help="receive only: DICOM SCP and assembler/router (scale-out on Postgres)")
    _add_config_options(p)
    _add_serve_options(p)
    p.set_defaults(func=cmd_scp)

    p = sub.add_parser("dispatch", help="deliver only: send results and forwards (scale-out on Postgres)")
    _add_config_options(p)
    p.set_defaults(func=cmd_dispatch)

    p = sub.add_parser("worker", help="run supervised worker processes (claim jobs from the shared database)")
    _add_config_options(p)
    p.add_argument("--workers", type=int, help="worker processes on this host (default worker.processes)")
    p.add_argument("--settings-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("config", help="configuration tools")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    q = config_sub.add_parser("check", help="validate the configuration and print it (secrets masked)")
    _add_config_options(q)
    _add_serve_options(q)
    q.set_defaults(func=cmd_config_check)

    p = sub.add_parser("run", help="run one pipeline on a folder of DICOM files, without server or database")
    _add_config_options(p)
    p.add_argument("pipeline", help="pipeline name (see `dicomnode pipelines`)")
    p.add_argument("input_dir", type=Path, help="folder of DICOM files (and PNG/JPEG pictures)")
    p.add_argument("--prior", type=Path, action="append", default=[], help="folder of a prior study (repeatable)")
    p.add_argument(
        "--prior-result",
        type=Path,
        action="append",
        default=[],
        metavar="RESULT_JSON",
        help="an earlier result.json of a prior (reused: lesion identities stay the same); a result.json "
        "inside a --prior folder is used without this flag",
    )
    p.add_argument("--output", type=Path, required=True, help="folder for the result (SR, SEG, summary, JSON)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("pipelines", help="list installed pipelines, their versions and availability")
    _add_config_options(p)
    p.set_defaults(func=cmd_pipelines)

    p = sub.add_parser("route", help="routing tools")
    route_sub = p.add_subparsers(dest="route_command", required=True, metavar="ACTION")
    q = route_sub.add_parser("explain", help="show which rules and pipelines match each series of a folder")
    _add_config_options(q)
    q.add_argument("folder", type=Path, help="folder of DICOM files")
    q.set_defaults(func=cmd_route_explain)

    p = sub.add_parser("jobs", help="list, show and retry jobs")
    _add_config_options(p)
    p.add_argument(
        "action", choices=["list", "show", "retry"], nargs="?", default="list", help="what to do (default list)"
    )
    p.add_argument("job_id", type=int, nargs="?", help="the job (show, retry)")
    p.add_argument("--state", help="only jobs in this state (list)")
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs (list)")
    p.add_argument("--rerun", action="store_true", help="retry a DONE analysis as a new result version (retry)")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("destinations", help="list destinations with their state; pause or resume one")
    _add_config_options(p)
    p.add_argument(
        "action", choices=["list", "pause", "resume"], nargs="?", default="list", help="what to do (default: list)"
    )
    p.add_argument("name", nargs="?", help="the destination's name (pause, resume)")
    p.set_defaults(func=cmd_destinations)

    p = sub.add_parser("status", help="workers (and why one was restarted), queue, destinations")
    _add_config_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("retention", help="delete old instances and results as [retention] says (never what jobs need)")
    _add_config_options(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("send", help="send every DICOM file under a folder to a DICOM peer (C-STORE)")
    _add_config_options(p)
    p.add_argument("folder", type=Path, help="folder (searched recursively) or one DICOM file")
    p.add_argument("address", metavar="AET@HOST:PORT", help="the peer, e.g. ORTHANC@127.0.0.1:4242")
    p.add_argument("--calling-ae", help="our AE title on the association (default dispatch.calling_ae or node AE)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("train", help="train a pipeline's learned part")
    _add_config_options(p)
    p.add_argument("pipeline", help="pipeline name (see `dicomnode pipelines`)")
    p.add_argument("--data", type=Path, required=True, help="training data (layout: the pipeline's README)")
    p.add_argument("--output", type=Path, required=True, help="folder for the trained weights")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="training option")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="measure a pipeline on labelled data with its challenge's metrics")
    _add_config_options(p)
    p.add_argument("pipeline", help="pipeline name (see `dicomnode pipelines`)")
    p.add_argument("--data", type=Path, required=True, help="labelled data (layout: the pipeline's README)")
    p.add_argument("--output", type=Path, help="also write the report (JSON) here")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="evaluation option")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("import", help="wrap PNG/JPEG pictures as DICOM Secondary Capture (one study, one series each)")
    p.add_argument("images", type=Path, nargs="+", help="PNG or JPEG files (colour stays RGB)")
    p.add_argument("--output", type=Path, required=True, help="folder for the DICOM files")
    p.add_argument("--body-part", default="HAND", help="BodyPartExamined (default HAND; '' leaves it out)")
    p.add_argument("--modality", default="OT", help="Modality (default OT; e.g. CR, DX, XC)")
    p.add_argument("--patient-id", default="IMPORTED", help="PatientID (default IMPORTED)")
    p.add_argument("--patient-name", default="Imported^Image", help="PatientName as FAMILY^GIVEN")
    p.add_argument("--study-description", default="", help="StudyDescription")
    p.add_argument("--accession", default="", help="AccessionNumber (up to 16 characters)")
    p.add_argument("--study-uid", help="StudyInstanceUID to add the pictures to (default: a new study)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("completion", help="print a shell completion script (bash)")
    p.add_argument("shell", choices=["bash"], help="the shell (source the output, or copy it to bash_completion.d)")
    p.set_defaults(func=cmd_completion)
    return parser


def _user_error(exc: BaseException) -> str | None:
    """The one line for an error caused by the user's input or environment; None for a bug."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, DicomNodeError):
        return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, OperationalError | DBAPIError) and exc.connection_invalidated is False:
        first = (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines()
        return f"database error: {first[0] if first else type(exc).__name__}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    builtin = {name for action in parser._subparsers._actions if action.choices for name in action.choices}  # type: ignore[union-attr]
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in builtin:
            status = _pipeline_command(argv)
            if status is not None:
                return status
        args, extra = parser.parse_known_args(argv)
        if extra:  # named after the command it was given to, with that command's help
            hint = f"(see `dicomnode {args.command} --help`)"
            parser.exit(2, f"dicomnode {args.command}: error: unrecognized arguments: {' '.join(extra)} {hint}\n")
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _user_error(exc)
        if message is None:
            raise
        print(f"dicomnode: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
