"""The `lumen` command: serve, worker, worker-ping, migrate, create-user, import, train, evaluate-explanations,
fit-ood, models, sweep, load-demo."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from app.config import get_settings

logger = logging.getLogger("lumen")

SHUTDOWN_GRACE_SECONDS = 5
DEMO_EMAIL = "demo@lumen.local"
# Passes the password policy (app/auth/passwords.py); shown by `lumen serve` in development only.
DEMO_PASSWORD = "lumen-reading-room"
# The demo files are not in the installed package: a checkout has them next to app/, the image (pip install .)
# in its working directory, /srv/lumen.
_CHECKOUT = Path(__file__).resolve().parent.parent
_DEMO_ROOT = _CHECKOUT if (_CHECKOUT / "demo").is_dir() else Path.cwd()
DEMO_DIR = _DEMO_ROOT / "demo"
DEMO_STUDY_DATA = _DEMO_ROOT / "data" / "retinamnist.npz"
DEMO_CHEST_DATA = _DEMO_ROOT / "data" / "nih_cxr14_demo"
WORKER_APP = "workers.celery_app"  # Celery's -A: the module whose `app` is the worker's Celery app


def _cmd_migrate(_args: argparse.Namespace) -> int:
    from app.ai_models import sync as models_sync
    from app.migrations import upgrade
    from app.storage import BlobStoreError, get_blob_store

    upgrade("head")
    print(f"database at {get_settings().sqlalchemy_url.split('@')[-1]} is up to date")
    try:
        print(get_blob_store().prepare())
    except BlobStoreError as exc:
        print(f"lumen migrate: {exc}", file=sys.stderr)
        return 2
    print(f"active models: {models_sync.sync_now()}")
    return 0


def _cmd_create_user(args: argparse.Namespace) -> int:
    from app.auth import service as auth_service
    from app.db import session_scope
    from app.tables import Role

    password = os.environ.get("LUMEN_PASSWORD") or getpass.getpass(f"password for {args.email}: ")
    try:
        with session_scope() as session:
            user = auth_service.create_user(
                session, email=args.email, password=password, role=Role(args.role), full_name=args.name
            )
            print(f"created {user.role} {user.email} (id {user.id})")
    except ValueError as exc:  # not an email, a taken email (Conflict) or a weak password (WeakPassword)
        print(f"lumen create-user: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from app.ingest import service as ingest_service

    origin = ingest_service.ImageOrigin(modality=args.modality, body_part=args.body_part)
    paths = [p for raw in args.paths for p in _expand(Path(raw))]
    if not paths:
        print("lumen import: no files found in the given paths", file=sys.stderr)
        return 2
    failures = 0
    for path in paths:
        outcome = ingest_service.import_path(path, origin=origin)
        print(f"{path}: {outcome}")
        failures += outcome.startswith("refused")
    return 1 if failures else 0


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if path.is_file():
        return [path]
    print(f"lumen import: {path} does not exist", file=sys.stderr)
    return []


def _cmd_models(args: argparse.Namespace) -> int:
    from app.ai_models import sync as models_sync

    if args.action == "sync":
        print(f"active models: {models_sync.sync_now()}")
        return 0
    if args.action == "list":
        for line in models_sync.describe_models():
            print(line)
        return 0
    if args.action == "add":
        return _add_model(args)
    problems = models_sync.validate_models(args.path)
    for line in problems:
        print(line)
    return 1 if any(line.startswith("INVALID") for line in problems) else 0


def _add_model(args: argparse.Namespace) -> int:
    """`lumen models add PATH`: the onboarding of the pages, run in this process: inspect, propose the target
    layer (taken as proposed unless --target-layer names another), check, install if the checks pass."""
    from pydantic import ValidationError

    from app.db import session_scope
    from app.errors import AppError
    from app.onboarding import service as onboarding
    from app.onboarding.schemas import CardAnswers, Confirmation
    from app.tables import OnboardingState
    from workers import onboarding as onboarding_worker  # torch is imported only by this subcommand

    if args.path is None:
        print("lumen models add: give the model file or MONAI bundle folder", file=sys.stderr)
        return 2
    fields = {
        "name": args.name, "version": args.version, "task": args.task, "labels": _listed(args.labels),
        "modalities": _listed(args.modalities, upper=True), "body_parts": _listed(args.body_parts, upper=True),
        "body_part": args.body_part, "photometric": args.photometric, "colour": args.colour, "size": args.size or [],
        "mean": args.mean or [], "std": args.std or [], "crop": args.crop, "windowing": args.windowing,
        "architecture": args.architecture, "target_layer": args.target_layer or "", "uncertainty": args.uncertainty,
        "uncertainty_samples": args.uncertainty_samples, "training_data": args.training_data,
        "licence": args.licence, "intended_use": args.intended_use,
    }
    try:
        answers = CardAnswers.model_validate(fields)
        with session_scope() as session:
            row = onboarding.start(session, answers=answers, model=args.path, validation=args.validation,
                                   test=args.test, user_id=None, send=False)
            onboarding_id = row.id
    except ValidationError as exc:
        for error in exc.errors():
            print(f"lumen models add: --{'.'.join(map(str, error['loc'])).replace('_', '-')}: {error['msg']}",
                  file=sys.stderr)
        return 2
    except AppError as exc:
        print(f"lumen models add: {exc}", file=sys.stderr)
        return 1

    def echo(percent: int, stage: str) -> None:
        print(f"[{percent:3d}%] {stage}", flush=True)

    state = onboarding_worker.run(onboarding_id, worker="cli", echo=echo)
    if state == OnboardingState.proposed:
        with session_scope() as session:
            row = onboarding.get(session, onboarding_id=onboarding_id)
            layer = row.proposal.get("layer", "")
            onboarding.confirm(session, onboarding_id=onboarding_id, confirmation=Confirmation(target_layer=layer),
                               send=False)
        state = onboarding_worker.run(onboarding_id, worker="cli", echo=echo)
    with session_scope(writes=False) as session:
        row = onboarding.get(session, onboarding_id=onboarding_id)
        for method, result in (row.report.get("methods") or {}).items():
            verdict = "offered" if result.get("passed") else f"FLAGGED ({result.get('reason') or result.get('error')})"
            print(f"  {method}: rank correlation with a randomised model {result.get('spearman')}: {verdict}")
        if state != OnboardingState.installed:
            print(f"lumen models add: onboarding {onboarding_id} failed: {row.error}", file=sys.stderr)
            return 1
        print(f"installed {row.name} {row.version} (model {row.model_id}); {row.stage}")
    return 0


def _listed(text: str | None, *, upper: bool = False) -> list[str]:
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    return [item.upper() for item in items] if upper else items


def _cmd_train(args: argparse.Namespace) -> int:
    from models import training  # torch is imported only by this subcommand

    # Never over the shipped model (models/zoo is tracked): a new folder under the data folder unless --out says.
    out = args.out or get_settings().data_dir / "trained" / args.recipe
    try:
        report = training.run_recipe(args.recipe, out_dir=out, data=args.data, seed=args.seed)
    except (training.TrainingDataError, ValueError) as exc:
        print(f"lumen train: {exc}", file=sys.stderr)
        return 2
    print(report)
    print(f"wrote {out}; to serve it: LUMEN_MODELS_DIR={out.parent} lumen models sync")
    return 0


def _explainer_settings(items: list[str]) -> dict[str, dict[str, Any]]:
    """["shapley_sampling.n_permutations=5", ...] -> {"shapley_sampling": {"n_permutations": 5}}; values are
    JSON (numbers, lists, true/false) or else strings. Raises ValueError for an item not METHOD.NAME=VALUE."""
    settings: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"--set expects METHOD.NAME=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        settings.setdefault(method, {})[name] = value
    return settings


def _cmd_evaluate_explanations(args: argparse.Namespace) -> int:
    from models.explain import evaluate  # torch is imported only by this subcommand

    try:
        settings = _explainer_settings(args.set)
        report = evaluate.evaluate_explanations(
            args.model,
            out_dir=args.out,
            methods=args.methods,
            limit=args.limit,
            skip=args.skip,
            settings=settings,
            replicas=args.replicas,
        )
    except ValueError as exc:
        print(f"lumen evaluate-explanations: {exc}", file=sys.stderr)
        return 2
    shown = [
        ("insertion_auc", "insertion"),
        ("deletion_auc", "deletion"),
        ("sensitivity_n", "sensitivity-n"),
        ("randomisation_spearman", "randomisation"),
        ("relevance_mass", "relevance mass"),
        ("replica_l2_average_map", "replica L2"),
    ]
    for rank, name in enumerate(report["ranking"], start=1):
        row = report["methods"][name]
        print(f"{rank:2d}. {name:22s} " + "  ".join(f"{label} {row[key]:.3f}" for key, label in shown if key in row))
    for name, reason in report["failed"].items():
        print(f"    {name}: failed ({reason})")
    return 0


def _cmd_fit_ood(args: argparse.Namespace) -> int:
    from models.recipes import ood as ood_recipe  # torch is imported only by this subcommand

    try:
        foreign = {name: ood_recipe.as_images(_decoded(paths)) for name, paths in _foreign_sets(args).items()}
        report = ood_recipe.fit_folder(args.model_dir, foreign=foreign, target_false_rejection=args.target_frr)
    except ValueError as exc:  # a bad --foreign, an unknown recipe, a broken model folder (CardError)
        print(f"lumen fit-ood: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


def _foreign_sets(args: argparse.Namespace) -> dict[str, list[Path]]:
    """--foreign NAME=PATH (repeatable; one NAME gathers its PATHs): a file, or a folder's files; a folder with a
    labels.csv (columns file, split) gives the files of --foreign-split."""
    import csv

    sets: dict[str, list[Path]] = {}
    for item in args.foreign:
        name, sep, raw = item.partition("=")
        path = Path(raw)
        if not (sep and name and path.exists()):
            raise ValueError(f"--foreign expects NAME=PATH of an existing file or folder, got {item!r}")
        if (path / "labels.csv").is_file():
            with (path / "labels.csv").open(newline="") as handle:
                files = [path / row["file"] for row in csv.DictReader(handle) if row["split"] == args.foreign_split]
        else:
            files = _expand(path)
        sets.setdefault(name, []).extend(f for f in files if f.suffix.lower() in (".dcm", ".png", ".jpg", ".jpeg"))
    return sets


def _decoded(paths: list[Path]) -> Iterator[tuple[Any, str, Any]]:
    """(pixels, photometric, VOI) of frame 0 of each file, decoded as the worker decodes it; files that do not
    decode are left out with a warning."""
    from app.ingest import pixels

    for path in paths:
        data = path.read_bytes()
        source_format = {".dcm": "dicom", ".png": "png"}.get(path.suffix.lower(), "jpeg")
        try:
            image, voi = pixels.load_frame_and_voi(data, source_format, 0)
            header: Any = pixels.read_dicom(data, stop_before_pixels=True) if source_format == "dicom" else {}
        except ValueError as exc:
            print(f"lumen fit-ood: {path} left out: {exc}", file=sys.stderr)
            continue
        yield image, str(header.get("PhotometricInterpretation", "")), voi


def _cmd_dicom_listener(args: argparse.Namespace) -> int:
    from app.dimse import listener

    try:
        listener.serve(port=args.port, host=args.host)
    except listener.ListenerNotConfigured as exc:
        print(f"lumen dicom-listener: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_sweep(_args: argparse.Namespace) -> int:
    from app.jobs.sweeper import sweep_once

    sweep = sweep_once()
    print(f"re-sent lost jobs: {sweep.resent}")
    print(f"requeued jobs of silent workers: {sweep.requeued}")
    print(f"failed jobs of silent workers on their last attempt: {sweep.failed}")
    return 0


def _cmd_load_demo(_args: argparse.Namespace) -> int:
    from app import demo
    from app.reader_studies import demo as study_demo

    if get_settings().environment == "production":
        print("lumen load-demo: refused with LUMEN_ENV=production: the demo adds an admin and readers whose "
              "password is published; add accounts with lumen create-user", file=sys.stderr)
        return 2
    for line in demo.load(demo_dir=DEMO_DIR, email=DEMO_EMAIL, password=DEMO_PASSWORD):
        print(line)
    for line in study_demo.load(chest_dir=DEMO_CHEST_DATA, npz=DEMO_STUDY_DATA, coordinator_email=DEMO_EMAIL,
                                password=DEMO_PASSWORD):
        print(line)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    """`celery -A workers.celery_app worker ...`: the worker's app is named, not imported (the web app never
    imports the workers; docs/architecture.md)."""
    from celery.bin.celery import celery as celery_command
    from click.exceptions import Exit

    argv = ["worker", "--queues", args.queues, "--concurrency", str(args.concurrency), "--loglevel", "INFO"]
    if args.name:
        argv += ["--hostname", args.name]
    if get_settings().embedded:
        # The filesystem transport has no remote control; solo pool keeps the one process real and simple.
        argv += ["--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    try:
        celery_command.main(args=["--app", WORKER_APP, *argv], standalone_mode=False)
    except Exit as exc:
        return int(exc.exit_code)
    return 0


def _cmd_worker_ping(args: argparse.Namespace) -> int:
    """Exit 0 if this host's worker answers a ping: the healthcheck of a worker container."""
    from kombu.exceptions import OperationalError

    from app import queue

    if get_settings().embedded:
        print("lumen worker-ping: the embedded filesystem broker has no remote control", file=sys.stderr)
        return 2
    try:
        node, answered = queue.ping_worker(name=args.name, timeout=args.timeout)
    except OperationalError as exc:
        print(f"lumen worker-ping: broker not reachable: {exc}", file=sys.stderr)
        return 1
    if not answered:
        print(f"lumen worker-ping: no answer from {node} within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    log_dir = None
    if settings.embedded:
        # The embedded default keeps the terminal for what a user needs (where Lumen is, how to sign in); the
        # server's and the worker's logs go to files. Deployed, everything logs to stdout for the platform.
        log_dir = settings.data_dir.resolve() / "logs"
        _log_to_file(log_dir / "server.log")
    worker = None
    if settings.embedded and not args.no_worker:
        from app.migrations import upgrade

        upgrade("head")
        worker = _start_embedded_worker(log_dir / "worker.log" if log_dir else None)
    # uvicorn re-raises SIGTERM after its graceful shutdown with the handler it found; the default handler
    # would end the process before `finally` and leave the embedded worker running on its own.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": "info",
        # On SIGTERM, requests still running get this long to finish; then the server stops regardless.
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS,
        **({"log_config": None} if log_dir else {}),
    }
    welcome = _welcome(args.host, args.port, log_dir)
    try:
        if args.workers > 1:
            _serve_processes(uvicorn.Config("app.main:create_app", factory=True, workers=args.workers, **common),
                             welcome)
        else:
            _announcing_server(uvicorn.Config(create_app(), **common), welcome).run()
    finally:
        if worker is not None:
            _stop(worker)
    return 0


def _serve_processes(config: Any, welcome: list[str]) -> None:
    """uvicorn's worker processes on one socket (one Python process per core: the API's own work is CPU-bound).
    Each runs the sweeper; on Postgres one pass at a time (app.jobs.sweeper)."""
    from uvicorn.supervisors import Multiprocess

    socket = config.bind_socket()
    print("\n".join(welcome), flush=True)
    Multiprocess(config, sockets=[socket]).run()


def _log_to_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def _start_embedded_worker(log_path: Path | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "app.cli", "worker", "--queues", "gpu,cpu"]
    if log_path is None:
        worker = subprocess.Popen(command)
    else:
        with log_path.open("ab") as log:
            worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    logger.info("embedded worker started (pid %s)", worker.pid)
    return worker


def _welcome(host: str, port: int, log_dir: Path | None) -> list[str]:
    """What `lumen serve` prints once it answers: the logs, then the address and the sign-in as last lines."""
    from app import demo

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    lines = [f"Logs: {log_dir / 'server.log'} and {log_dir / 'worker.log'}. Stop with Ctrl+C."] if log_dir else []
    lines.append(f"Lumen is running at http://{shown_host}:{port}/")
    if get_settings().environment == "development" and demo.login_works(email=DEMO_EMAIL, password=DEMO_PASSWORD):
        lines.append(f"Sign in as {DEMO_EMAIL} with the password {DEMO_PASSWORD}")
    else:
        lines.append("Sign in with your account (lumen create-user EMAIL --role admin adds one)")
    return lines


def _announcing_server(config: Any, lines: list[str]) -> Any:
    """uvicorn's server, printing `lines` once it listens (after uvicorn's own start-up messages)."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                print("\n".join(lines), flush=True)

    return AnnouncingServer(config)


def _stop(worker: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Warm shutdown of the embedded worker (it finishes its task), killed if it takes longer than `grace`: the
    job it was running is then taken up again once its heartbeat is stale (docs/faults.md)."""
    worker.terminate()
    try:
        worker.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        logger.warning("embedded worker did not stop within %.0f s; killing it", grace)
        worker.kill()
        worker.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="API and pages (in the embedded default, also a worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="default 8000 (make run PORT=8080)")
    serve.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    serve.add_argument("--workers", type=int, default=1,
                       help="API processes on the one port (default 1; about one per core when deployed)")
    serve.set_defaults(func=_cmd_serve)

    worker = sub.add_parser("worker", help="a Celery worker")
    worker.add_argument("--queues", default="gpu,cpu")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument(
        "--name", default=None, help="Celery node name, e.g. gpu1@%%h (default celery@HOST); shown in each job's row"
    )
    worker.set_defaults(func=_cmd_worker)

    ping = sub.add_parser("worker-ping", help="exit 0 if this host's worker answers (a container healthcheck)")
    ping.add_argument("--name", default=None, help="the worker's node name as given to `lumen worker --name`")
    ping.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    ping.set_defaults(func=_cmd_worker_ping)

    sub.add_parser("migrate", help="upgrade the database to the newest schema").set_defaults(func=_cmd_migrate)

    create_user = sub.add_parser("create-user", help="add a user (password from LUMEN_PASSWORD or a prompt)")
    create_user.add_argument("email")
    create_user.add_argument("--role", choices=["admin", "coordinator", "reader"], required=True)
    create_user.add_argument("--name", default="")
    create_user.set_defaults(func=_cmd_create_user)

    importer = sub.add_parser("import", help="import DICOM / PNG / JPEG files or folders")
    importer.add_argument("paths", nargs="+")
    importer.add_argument("--modality", default=None,
                          help="DICOM modality of PNG/JPEG files, e.g. CR (colour photographs default to OP)")
    importer.add_argument("--body-part", default=None,
                          help="DICOM body part of PNG/JPEG files, e.g. CHEST (OP defaults to EYE)")
    importer.set_defaults(func=_cmd_import)

    train = sub.add_parser("train", help="train a reference model from its recipe")
    train.add_argument("recipe")
    train.add_argument("--out", type=Path, default=None,
                       help="model folder to write (default: LUMEN_DATA_DIR/trained/RECIPE; the shipped models are "
                       "in models/zoo/RECIPE)")
    train.add_argument("--data", type=Path, default=None, help="dataset file (default: the recipe's)")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_cmd_train)

    listen = sub.add_parser("dicom-listener", help="take studies by DICOM C-STORE from the allowed AE titles "
                            "(LUMEN_DICOM_ALLOWED_AES) and store them as uploads")
    listen.add_argument("--port", type=int, default=None, help="default LUMEN_DICOM_PORT (11112)")
    listen.add_argument("--host", default="0.0.0.0")
    listen.set_defaults(func=_cmd_dicom_listener)

    models = sub.add_parser(
        "models", help="list, validate or sync model folders; add (onboard) a model of your own",
        description="add PATH onboards a TorchScript file, a timm state dict (--architecture timm:NAME) or a MONAI "
        "bundle folder: it is inspected, checked (docs/onboarding.md) and installed only if the checks pass.",
    )
    models.add_argument("action", choices=["list", "validate", "sync", "add"])
    models.add_argument("path", nargs="?", type=Path, default=None)
    onboard = models.add_argument_group("add")
    onboard.add_argument("--name", help="model name (lower case, digits, . _ -)")
    onboard.add_argument("--version", help="its version; a version with predictions is never replaced")
    onboard.add_argument("--task", choices=["classification", "multilabel"], default="classification")
    onboard.add_argument("--labels", help="labels in output order, comma-separated (default: the bundle's)")
    onboard.add_argument("--modalities", help="DICOM modalities, comma-separated, e.g. OP or CR,DX")
    onboard.add_argument("--body-part", help="the body part in words, e.g. 'eye fundus'")
    onboard.add_argument("--body-parts", default="", help="DICOM body parts, comma-separated, e.g. EYE")
    onboard.add_argument("--photometric", default="", help="what its training images look like")
    onboard.add_argument("--colour", choices=["rgb", "grayscale"], default="rgb")
    onboard.add_argument("--size", type=int, nargs="+", help="input size H W (default: the bundle's)")
    onboard.add_argument("--mean", type=float, nargs="+", help="per-channel mean after scaling to [0, 1]")
    onboard.add_argument("--std", type=float, nargs="+", help="per-channel std")
    onboard.add_argument("--crop", choices=["fundus"], default=None)
    onboard.add_argument("--windowing", choices=["minmax", "percentile", "dicom"], default="minmax")
    onboard.add_argument("--architecture", default="", help="timm:NAME for a plain state dict of a timm network")
    onboard.add_argument("--target-layer", default="", help="the layer maps are drawn from (default: proposed)")
    onboard.add_argument("--uncertainty", choices=["none", "mc_dropout", "tta"], default="none")
    onboard.add_argument("--uncertainty-samples", type=int, default=1)
    onboard.add_argument("--validation", type=Path, help="folder with labels.csv (image,label) and its images")
    onboard.add_argument("--test", type=Path, help="folder with labels.csv (image,label) and its images")
    onboard.add_argument("--training-data", help="what it was trained on")
    onboard.add_argument("--licence", help="the weights' licence")
    onboard.add_argument("--intended-use", default="research, not for clinical use")
    models.set_defaults(func=_cmd_models)

    evaluate = sub.add_parser("evaluate-explanations", help="benchmark the explainers on a model's evaluation images")
    evaluate.add_argument("model", help="model name (its card in models/zoo)")
    evaluate.add_argument("--out", type=Path, default=None, help="report folder (default: reports/explanations/MODEL)")
    evaluate.add_argument("--methods", nargs="+", default=None, help="explainer names (default: all)")
    evaluate.add_argument("--limit", type=int, default=16, help="evaluation images")
    evaluate.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="METRIC",
        help="metrics to leave out, e.g. randomisation repeatability (they re-run the methods; "
        "known: deletion insertion sensitivity_n randomisation completeness sparsity "
        "repeatability localisation replicas)",
    )
    evaluate.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="METHOD.NAME=VALUE",
        help="explainer setting over the card's, e.g. shapley_sampling.n_permutations=5 (recorded in the report)",
    )
    evaluate.add_argument(
        "--replicas",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="the same model trained again with other seeds (lumen train MODEL --seed S --out DIR): adds each "
        "method's repeatability across models",
    )
    evaluate.set_defaults(func=_cmd_evaluate_explanations)

    fit_ood = sub.add_parser("fit-ood", help="fit a model folder's input-domain gate (ood.npz + the card's ood block)")
    fit_ood.add_argument("model_dir", type=Path, help="a reference model folder, e.g. models/zoo/cxr-demo")
    fit_ood.add_argument(
        "--foreign",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="images from outside the model's domain, measured only (AUROC, fraction rejected): a file or a folder "
        "(DICOM, PNG, JPEG); a folder with labels.csv gives the files of --foreign-split",
    )
    fit_ood.add_argument("--foreign-split", default="test", help="split of a labels.csv folder (default test)")
    fit_ood.add_argument(
        "--target-frr", type=float, default=0.05, help="false-rejection rate on in-domain val (default 0.05)"
    )
    fit_ood.set_defaults(func=_cmd_fit_ood)

    sweep = sub.add_parser("sweep", help="one pass of the sweeper: re-send lost jobs, take back silent ones")
    sweep.set_defaults(func=_cmd_sweep)
    demo = sub.add_parser("load-demo", help="demo models, users, studies and a draft reader study")
    demo.set_defaults(func=_cmd_load_demo)
    return parser


# Long-running commands log what they do; one-shot commands print their outcome and log only warnings.
_LOGGING_COMMANDS = {"serve", "worker"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.command in _LOGGING_COMMANDS else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic announces each of its plugins at INFO; only its warnings matter to a user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
