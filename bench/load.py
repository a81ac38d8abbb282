"""Many readers at once against a real Lumen: requests per second, latency percentiles, errors, hangs.

A benchmark, not a timed test. It starts Lumen in a fresh world of its own, in one of two shapes:
- `production`: a fresh Postgres database, Redis (a key namespace of its own), a separate `lumen worker` and
  `lumen serve --no-worker` (one uvicorn process, the sweeper on);
- `embedded`: no settings, as `make run` starts it (SQLite, the filesystem broker, `lumen serve` with its
  worker).
It imports real cases (fundus photographs and a chest radiograph), waits until the worker has explained
them, creates N readers, each signed in with its own token, and lets them loop for a fixed time over what a
reader's browser asks for: the worklist, the study page, the prediction JSON, the heatmap's data and the
image's pixels (raw values for grayscale, the display PNG for colour, as the viewer does). Then it stops
the load and measures how long the server takes to answer again.

    .venv/bin/python bench/load.py [--shape production|embedded] [--readers 50] [--seconds 60]
        [--think 0] [--api-workers 1] [--no-cache] [--out reports/load.md]

`--think S` waits S seconds between a reader's requests (0: every reader asks again at once, a closed loop:
far harsher than people reading). Each reader revalidates what it already holds with If-None-Match, as a
browser does on a reload (the server answers 304 without the pixels); `--no-cache` sends everything again.
Several runs append to the same report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import drop_database, environment, lumen, token, up  # noqa: E402
from tests.e2e.helpers import free_port, wait_for  # noqa: E402
from tests.processes import start_lumen  # noqa: E402

PASSWORD = "load-test-password"
METADATA_ROUTES = ("worklist", "study page", "prediction")
CASE_FILES = [ROOT / "demo" / "RG1_J2KI.dcm", ROOT / "demo" / "IDRiD_02.jpg"] + sorted(
    (ROOT / "data" / "idrid").glob("IDRiD_0[1-6].jpg")
)


@dataclass(frozen=True)
class Case:
    study_id: int
    instance_id: int
    heatmap_id: int | None
    grayscale: bool


@dataclass
class Tally:
    """What the readers saw, per route."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    unanswered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    without_retry_after: dict[str, int] = field(default_factory=lambda: defaultdict(int))


# ---- the world: a shape of Lumen with cases and readers ------------------------------------------------


def _create_users(env: dict[str, str], readers: int) -> list[str]:
    emails = [f"reader{n:03d}@load.test" for n in range(readers)]
    lumen({**env, "LUMEN_PASSWORD": PASSWORD}, "create-user", "coordinator@load.test", "--role", "admin")
    script = (
        "import sys\n"
        "from app.auth import service\nfrom app.db import session_scope\nfrom app.tables import Role\n"
        "with session_scope() as s:\n"
        "    for email in sys.stdin.read().split():\n"
        f"        service.create_user(s, email=email, password={PASSWORD!r}, role=Role.reader)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, input="\n".join(emails), text=True, cwd=ROOT,
                          capture_output=True, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"creating readers failed:\n{done.stderr[-2000:]}")
    return emails


def _cases(client: httpx.Client, headers: dict[str, str], timeout: float) -> list[Case]:
    """Every imported study's first instance, its heatmap once the worker has finished the study."""
    def finished() -> list[dict] | None:
        rows = client.get("/api/worklist", headers=headers).json()["studies"]
        done = all(row["ai_state"] in ("done", "no_model", "failed") for row in rows)
        return rows if rows and done else None

    rows = wait_for(finished, timeout=timeout, what="the worker to explain the imported cases", interval=2)
    cases = []
    for row in rows:
        study = client.get(f"/api/studies/{row['id']}", headers=headers).json()
        instance = study["instances"][0]
        prediction = client.get(f"/api/instances/{instance['id']}/prediction", headers=headers)
        heatmaps = prediction.json()["heatmaps"] if prediction.status_code == 200 else []
        grayscale = instance["photometric"].startswith("MONOCHROME")
        cases.append(Case(row["id"], instance["id"], heatmaps[0]["id"] if heatmaps else None, grayscale))
    return cases


# ---- the readers ----------------------------------------------------------------------------------------


def _requests(case: Case) -> list[tuple[str, str]]:
    """What a reader's browser asks for to read one case, as (route name, path)."""
    asked = [("worklist", "/api/worklist"), ("study page", f"/studies/{case.study_id}")]
    if case.heatmap_id is not None:
        asked += [("prediction", f"/api/instances/{case.instance_id}/prediction"),
                  ("heatmap data", f"/api/heatmaps/{case.heatmap_id}/data")]
    image = f"/api/instances/{case.instance_id}/pixels" if case.grayscale else \
        f"/api/instances/{case.instance_id}/image.png"
    return asked + [("pixels" if case.grayscale else "image", image)]


async def _reader(base: str, token: str, cases: list[Case], start: int, until: float, think: float,
                  tally: Tally, timeout: float, revalidate: bool) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    etags: dict[str, str] = {}  # this reader's browser cache: what it has, by path
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout) as client:
        turn = start
        while time.monotonic() < until:
            for name, path in _requests(cases[turn % len(cases)]):
                if time.monotonic() >= until:
                    return
                await _ask(client, name, path, tally, etags if revalidate else None)
                if think:
                    await asyncio.sleep(think)
            turn += 1


async def _ask(client: httpx.AsyncClient, name: str, path: str, tally: Tally, etags: dict[str, str] | None) -> None:
    # Like a browser reloading a page: what it holds is asked for again with If-None-Match (304 if unchanged).
    headers = {"If-None-Match": etags[path]} if etags is not None and path in etags else {}
    began = time.monotonic()
    try:
        response = await client.get(path, headers=headers)
    except httpx.TimeoutException:
        tally.unanswered[name] += 1
        return
    except httpx.TransportError:
        tally.statuses[name][0] += 1  # connection refused or reset: no HTTP status
        return
    tally.latencies[name].append(time.monotonic() - began)
    tally.statuses[name][response.status_code] += 1
    if etags is not None and "etag" in response.headers:
        etags[path] = response.headers["etag"]
    if response.status_code == 503 and "retry-after" not in response.headers:
        tally.without_retry_after[name] += 1


async def _load(base: str, tokens: list[str], cases: list[Case], args: argparse.Namespace) -> Tally:
    tally = Tally()
    until = time.monotonic() + args.seconds
    await asyncio.gather(*(_reader(base, token, cases, n, until, args.think, tally, args.timeout, not args.no_cache)
                           for n, token in enumerate(tokens)))
    return tally


def _recovery_seconds(base: str, token: str, limit: float = 60.0) -> float | None:
    """Seconds from the end of the load until the worklist answers 200 again (None: not within `limit`)."""
    began = time.monotonic()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=2) as client:
        while time.monotonic() - began < limit:
            try:
                if client.get("/api/worklist").status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    return None


# ---- the report -----------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def _report(args: argparse.Namespace, tally: Tally, seconds: float, load: tuple[float, float],
            recovery: float | None, cases: list[Case]) -> str:
    lines = [
        f"## {args.shape} ({args.api_workers if args.shape == 'production' else 1} API process(es)), "
        f"{args.readers} readers, {args.seconds:.0f} s, think {args.think:g} s, "
        f"{'no cache' if args.no_cache else 'revalidating'}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} CPUs; {len(cases)} cases; load average (1 min) "
        f"{load[0]:.2f} at the start, {load[1]:.2f} at the end; the readers run in this process on the same "
        f"machine. Answered again {recovery:.2f} s after the load stopped." if recovery is not None else
        f"Not answering {60} s after the load stopped.",
        "",
        "| route | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | not 2xx/304 | no answer in "
        f"{args.timeout:.0f} s | 503 without Retry-After |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    names = sorted(set(tally.statuses) | set(tally.unanswered), key=lambda n: (n not in METADATA_ROUTES, n))
    for name in names:
        lat = tally.latencies[name]
        count = sum(tally.statuses[name].values()) + tally.unanswered[name]
        bad = ", ".join(f"{n} x {code or 'reset'}" for code, n in sorted(tally.statuses[name].items())
                        if not (200 <= code < 300 or code == 304))
        lines.append(
            f"| {name} | {count} | {count / seconds:.1f} | {_percentile(lat, 50) * 1e3:.0f} | "
            f"{_percentile(lat, 95) * 1e3:.0f} | {_percentile(lat, 99) * 1e3:.0f} | "
            f"{(max(lat) if lat else float('nan')) * 1e3:.0f} | "
            f"{bad or '0'} | "
            f"{tally.unanswered[name]} | {tally.without_retry_after[name]} |"
        )
    total = sum(sum(s.values()) for s in tally.statuses.values())
    metadata = [v for n in METADATA_ROUTES for v in tally.latencies[n]]
    lines += ["", f"All routes: {total / seconds:.1f} req/s answered; metadata routes ({', '.join(METADATA_ROUTES)}) "
              f"p99 {_percentile(metadata, 99) * 1e3:.0f} ms.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["production", "embedded"], default="production")
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--api-workers", type=int, default=1, help="API processes (production shape)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--think", type=float, default=0.0, help="seconds between a reader's requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="a request unanswered this long is a hang")
    parser.add_argument("--no-cache", action="store_true",
                        help="readers keep nothing: every image and map is sent again (default: they revalidate "
                        "what they hold with If-None-Match, as a browser reloading a page)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "load.md")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="lumen-load-"))
    env, database = environment(args.shape, data_dir, args.postgres, args.redis)
    processes = []
    try:
        lumen(env, "migrate")
        lumen(env, "import", *map(str, CASE_FILES))
        emails = _create_users(env, args.readers)
        port = free_port()
        if args.shape == "production":
            processes.append(start_lumen("load-worker", "worker", "--queues", "gpu,cpu", env=env))
            processes.append(start_lumen("load-serve", "serve", "--no-worker", "--port", str(port),
                                         "--workers", str(args.api_workers), env=env))
        else:
            processes.append(start_lumen("load-serve", "serve", "--port", str(port), env=env))
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            wait_for(lambda: up(client), timeout=60, what="lumen serve to answer")
            admin = {"Authorization": f"Bearer {token(client, 'coordinator@load.test', PASSWORD)}"}
            cases = _cases(client, admin, timeout=900)
            tokens = [token(client, email, PASSWORD) for email in emails]
        print(f"{len(cases)} cases, {len(tokens)} readers; loading for {args.seconds:.0f} s", flush=True)
        load_start = os.getloadavg()[0]
        began = time.monotonic()
        tally = asyncio.run(_load(base, tokens, cases, args))
        elapsed = time.monotonic() - began
        load_end = os.getloadavg()[0]
        recovery = _recovery_seconds(base, tokens[0])
        text = _report(args, tally, elapsed, (load_start, load_end), recovery, cases)
    finally:
        for process in processes:
            stopped_in = time.monotonic()
            code = process.stop(timeout=30)
            print(f"{process.name} stopped with {code} in {time.monotonic() - stopped_in:.1f} s "
                  f"(log: {process.log_path})", flush=True)
        drop_database(database, args.postgres)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as report:
        report.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
