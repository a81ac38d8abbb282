"""Benchmark: how long a clinician waits, from the upload of a study to the first prediction, the first heatmap
and all the default maps on screen, with an idle worker and behind a 40-job demo backlog.

It starts a real Lumen of one shape (bench/stack.py: `embedded` as `make run`, or `production` with Postgres,
Redis and a separate worker), signs in as a user, and uploads distinct real images one at a time through the
API as a browser does: IDRiD fundus photographs (the full 4288 px original and 1024 px copies, graded by the DR
model) and chest radiographs (NIH ChestX-ray14 PNGs and the CR DICOM, read by the chest model). After each
upload it asks the API every 50 ms what a reader's page would show (the job, the prediction and its heatmaps)
and notes when each first appears. With `--backlog N`, N demo-priority jobs (RetinaMNIST photographs, as the
demo's reader study queues) are queued just before each upload.

Then it reads each job's own stage timings (workers/stages.py): compute (gate, prediction, maps, scores) and
overhead (decode, preprocessing, stores, progress), and the wait before a worker took the job.

    .venv/bin/python bench/first_answer.py [--shape embedded|production] [--backlog 0 40]
        [--data ../shared/data] [--out reports/first_answer.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import drop_database, environment, lumen, python, token, up  # noqa: E402
from tests.e2e.helpers import free_port, wait_for  # noqa: E402
from tests.processes import start_lumen  # noqa: E402

PASSWORD = "first answer benchmark 42"
EMAIL = "radiologist@bench.test"
POLL_SECONDS = 0.05
STAGES = ("decode_s", "prepare_s", "ood_s", "predict_s", "explain_s", "resample_s", "scores_s", "store_s")


@dataclass(frozen=True)
class Case:
    path: Path
    kind: str  # "fundus" or "chest"
    form: dict[str, str] = field(default_factory=dict)  # modality and body part of a PNG/JPEG


@dataclass
class Seen:
    """Seconds from the start of the upload to what a reader's page would show."""

    case: Case
    model: str = ""
    started: float | None = None
    prediction: float | None = None
    first_map: float | None = None
    all_maps: float | None = None
    refused: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    queued_before: int = 0


def _cases(data: Path) -> list[Case]:
    fundus = [data / "idrid" / "pristine" / "IDRiD_01.jpg"] + [ROOT / "data" / "idrid" / f"IDRiD_{n:02d}.jpg"
                                                              for n in (3, 5, 6)]
    nih = sorted((data / "nih-cxr14-621" / "images").glob("*.png"))[:3]
    chest = [Case(path, "chest", {"modality": "DX", "body_part": "CHEST"}) for path in nih]
    chest.append(Case(ROOT / "demo" / "RG1_J2KI.dcm", "chest"))
    missing = [case.path for case in chest if not case.path.exists()] + [p for p in fundus if not p.exists()]
    if missing:
        raise SystemExit(f"missing images (is --data the shared data folder?): {missing}")
    return [Case(path, "fundus") for path in fundus] + chest


BACKLOG_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
from sqlalchemy import func, select
from app.ai_models import sync
from app.db import session_scope
from app.ingest import service
from app.tables import Job, JobPriority, JobState
count, round_number = map(int, sys.stdin.read().split())
sync.sync_now()
images = np.load("data/retinamnist.npz")["test_images"]
with session_scope() as session:
    for n in range(count):
        image = images[(round_number * count + n) % len(images)].copy()
        image[0, 0, 0] = round_number % 256  # a distinct file each round: not a duplicate of an earlier one
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        service.ingest(session, uploads=[service.Upload(f"backlog-{round_number}-{n}.png", buffer.getvalue())],
                       user_id=None, origin=service.ImageOrigin("OP", "EYE"), priority=JobPriority.demo)
with session_scope() as session:
    print(session.scalar(select(func.count(Job.id)).where(Job.state == JobState.queued)))
"""


def _queue_backlog(env: dict[str, str], count: int, round_number: int) -> int:
    """Queue `count` demo-priority jobs; how many jobs are queued in all just after."""
    return int(python(env, BACKLOG_SCRIPT, stdin=f"{count} {round_number}").strip().splitlines()[-1])


IDLE_SCRIPT = """
import time
from sqlalchemy import func, select
from app.db import session_scope
from app.tables import Job, JobState
for _ in range(1200):
    with session_scope() as session:
        if not session.scalar(select(func.count(Job.id)).where(Job.state.in_([JobState.queued, JobState.running]))):
            break
    time.sleep(0.25)
"""


def _warm_up(env: dict[str, str]) -> None:
    """One demo job run to its end: the worker has started and taken work before the first measured upload."""
    _queue_backlog(env, 1, 9999)
    python(env, IDLE_SCRIPT)


def _upload(client: httpx.Client, case: Case) -> tuple[int, int]:
    with case.path.open("rb") as handle:
        response = client.post("/api/studies", files={"files": (case.path.name, handle)}, data=case.form)
    response.raise_for_status()
    study = response.json()
    if not study["job_ids"]:
        raise SystemExit(f"{case.path.name}: no model took the image")
    return study["job_ids"][0], study["instances"][0]["id"]


def _watch(client: httpx.Client, case: Case, timeout: float) -> Seen:
    """Upload the case and follow it as a reader's page would, until its job ends."""
    seen = Seen(case)
    began = time.perf_counter()
    job_id, instance_id = _upload(client, case)
    while time.perf_counter() - began < timeout:
        now = time.perf_counter() - began
        job = client.get(f"/api/jobs/{job_id}").json()
        if seen.started is None and job["state"] != "queued":
            seen.started = now
        prediction = client.get(f"/api/instances/{instance_id}/prediction")
        if prediction.status_code == 200:
            body = prediction.json()
            seen.model = body["model"]
            seen.prediction = seen.prediction or now
            if body["heatmaps"] and seen.first_map is None:
                seen.first_map = now
        if job["state"] in ("done", "failed"):
            seen.all_maps = now if job["state"] == "done" else None
            seen.timings = job["timings"]
            seen.refused = bool(job["timings"].get("out_of_domain"))
            if job["state"] == "failed":
                print(f"{case.path.name}: job failed: {job['error']}", flush=True)
            return seen
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"{case.path.name}: not done after {timeout:.0f} s")


def _run(shape: str, backlogs: list[int], data: Path) -> dict[int, list[Seen]]:
    results: dict[int, list[Seen]] = {}
    for backlog in backlogs:
        data_dir = Path(tempfile.mkdtemp(prefix="lumen-first-answer-"))
        env, database = environment(shape, data_dir)
        processes = []
        try:
            lumen(env, "migrate")
            lumen({**env, "LUMEN_PASSWORD": PASSWORD}, "create-user", EMAIL, "--role", "admin")
            port = free_port()
            if shape == "production":
                processes.append(start_lumen("first-answer-worker", "worker", "--queues", "gpu,cpu", env=env))
                processes.append(start_lumen("first-answer-serve", "serve", "--no-worker", "--port", str(port),
                                             env=env))
            else:
                processes.append(start_lumen("first-answer-serve", "serve", "--port", str(port), env=env))
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                wait_for(lambda: up(client), timeout=120, what="lumen serve to answer")
                client.headers["Authorization"] = f"Bearer {token(client, EMAIL, PASSWORD)}"
                _warm_up(env)
                seen_all = []
                for number, case in enumerate(_cases(data)):
                    queued = _queue_backlog(env, backlog, number) if backlog else 0
                    seen = _watch(client, case, timeout=600)
                    seen.queued_before = queued
                    seen_all.append(seen)
                    print(_row(seen), flush=True)
                results[backlog] = seen_all
        finally:
            for process in processes:
                process.stop(timeout=30)
            drop_database(database)
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(seen: Seen) -> str:
    t = seen.timings
    total = t.get("total_s", 0.0)
    overhead = t.get("overhead_s")
    share = f"{overhead / total:.0%}" if overhead is not None and total else "-"
    outcome = "outside the model's domain" if seen.refused else seen.model
    return (f"| {seen.case.path.name} | {seen.case.kind} | {outcome} | {seen.queued_before} | {_ms(seen.started)} | "
            f"{_ms(seen.prediction)} | {_ms(seen.first_map)} | {_ms(seen.all_maps)} | {_ms(total)} | "
            f"{_ms(t.get('compute_s'))} | {share} |")


def _report(shape: str, results: dict[int, list[Seen]], load: tuple[float, float]) -> str:
    lines = [f"## {shape} shape, {datetime.now():%Y-%m-%d %H:%M}",
             "",
             f"Load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}; {os.cpu_count()} CPUs.",
             ""]
    for backlog, seen_all in results.items():
        lines += [f"### {'idle worker' if not backlog else f'{backlog} demo jobs queued before each upload'}", "",
                  "Seconds from the start of the upload. Worker: the job's own total_s, its compute_s (gate, "
                  "prediction, maps, scores) and the share of overhead (everything else).", "",
                  "| image | kind | model | jobs queued | worker took it | prediction | first map | all maps "
                  "| worker total | compute | overhead |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [_row(seen) for seen in seen_all]
        answered = [s for s in seen_all if not s.refused and s.first_map is not None]
        for kind in ("fundus", "chest"):
            firsts = [s.first_map for s in answered if s.case.kind == kind and s.first_map is not None]
            if firsts:
                lines.append(f"\n{kind}: prediction + first map median {statistics.median(firsts):.2f} s, "
                             f"max {max(firsts):.2f} s over {len(firsts)} images.")
        lines += ["", "Per-stage shares of the worker's time (sum over the answered jobs):", "",
                  "| stage | seconds | share |", "|---|---:|---:|"]
        total = sum(s.timings.get("total_s", 0.0) - s.timings.get("urgent_s", 0.0) for s in answered)
        for stage in (*STAGES, "overhead_s"):
            seconds = sum(s.timings.get(stage, 0.0) for s in answered)
            lines.append(f"| {stage[:-2]} | {seconds:.2f} | {seconds / total:.0%} |" if total else "")
        lines += ["", "Each job's timings (seconds):", ""]
        for seen in seen_all:
            shown = {key: round(value, 3) for key, value in sorted(seen.timings.items())}
            lines.append(f"- {seen.case.path.name}: {json.dumps(shown)}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["embedded", "production"], default="embedded")
    parser.add_argument("--backlog", type=int, nargs="+", default=[0, 40])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "first_answer.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    results = _run(args.shape, args.backlog, args.data)
    text = _report(args.shape, results, (load_start, os.getloadavg()[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as report:
        report.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
