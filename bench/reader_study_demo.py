"""The demo reader study end to end, as a coordinator would run it, with simulated readers.

Starts Lumen's embedded default in a fresh data folder (`lumen migrate`, `lumen load-demo`, `lumen serve`
with its worker), waits until the worker has explained the 24 NIH chest radiographs of the demo study, opens
it through the API, lets the three demo readers read their whole queues through the API, and prints the
dashboard's numbers and the export's size. The readers are simulated: each gives the reference answer to
"Effusion present?" with a fixed probability, the same in every condition, so the numbers check the machinery,
not the value of assistance.

    .venv/bin/python bench/reader_study_demo.py [--out docs/reader-study-demo.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
P_CORRECT = 0.8  # a simulated reader's chance of giving the reference answer, in every condition
PASSWORD = "lumen-reading-room"  # app.cli.DEMO_PASSWORD

# What the demo holds, where it comes from and why; kept here so that regenerating the report keeps it.
ABOUT = """## What `lumen load-demo` puts in the reader studies

**The demo: "Is there a pleural effusion?" on 24 NIH chest radiographs at their shipped resolution** (task
binary_finding, finding `effusion`, three readers, three counterbalanced arms).

- Images: 24 frontal radiographs of NIH ChestX-ray14, 512 x 512 px 8-bit PNG, shipped unchanged in
  `data/nih_cxr14_demo/` (2.6 MB) and uploaded as they are, as DX / CHEST, so that `cxr-nih14` serves them.
  They come from `nih-cxr14-621` (621 radiographs, one per patient, resized there from NIH's 1024 px originals).
- Split: all 24 are of the test split of nih-cxr14-621 (patient-level, seeded), on which no model was
  trained, tuned or calibrated; `labels.csv` beside them is their rows of nih-cxr14-621's labels.csv, split
  column included. The tests check every file against the test sample in `data/nih_cxr14_test.npz`.
- Selection (`python -m models.recipes.cxr_nih_demo`, seed 2017): 12 of the 20 accepted test radiographs
  labelled Effusion, and 12 of the 108 without; 3 of these 12 are No Finding, 9 carry other findings (6 of them
  Nodule). Only among the 128 test radiographs that the input-domain gate of cxr-nih14 accepts: the worker
  stores no prediction for a refused image, and a study whose case lacks the prediction its arms show cannot
  open. The 9 refused (00000404, 00000797, 00004648, 00007099, 00014618, 00017625, 00021163, 00022084, 00030102,
  all `_000.png`) are left out, so the cases are not a random sample of the test split. The radiographs of the
  earlier nodule demo were kept where they fit: its 4 labelled Effusion, and 12 of its 20 without (drawn with
  the seed); 8 radiographs labelled Effusion were added and its 8 others removed.
- Reference: `present` where NIH labels the image Effusion, else `absent`. NIH's labels were mined from the
  radiology reports by NLP (NIH estimates over 90 % accurate); they are not a radiologist's read of the image.
- Arms: unassisted; the AI's effusion probability; the AI's effusion probability + integrated-gradients
  heatmap. The reader is asked "Effusion present?" (present / absent, confidence); the assisted arms show
  cxr-nih14's calibrated probability of effusion (its label `effusion`, not its top label), with its
  uncertainty and referral. cxr-nih14 is a weak aid for this question: on its 137 test patients it separates
  effusion from none with an AUROC of 0.64 (95% CI 0.52-0.77, 21 positives; `docs/models.md`); on these 24
  radiographs (the run below) its probabilities of effusion lie between 10% and 38%, AUROC 0.60 against the NIH
  labels. Effusion is its top label on all 24, so the heatmaps (which explain the top label) explain effusion.
- Licence: NIH places no restrictions on the images; it asks for the link https://nihcc.app.box.com/v/ChestXray-NIHCC,
  the citation (Wang et al., ChestX-ray8, IEEE CVPR 2017) and the acknowledgement "data provided by the NIH
  Clinical Center" (data/DATA_LICENSES.md).
- Until this version the chest demo asked "Is there a lung nodule?", which cxr-nih14 does not report. A database
  that holds that study keeps it as it is (its reads stay scored with the nodule form); `lumen load-demo` adds the
  effusion study beside it under its own name and says so.

**An exercise, not a clinical grading: DR grading on 28 x 28 px RetinaMNIST thumbnails** (task dr_grading,
the three arms of Sayres et al., Ophthalmology 2019, the same three readers). Lumen's data holds no fundus
photograph at real resolution with a DR grade: the 25 IDRiD photographs come from IDRiD's segmentation set,
with lesion masks and no grades, and RetinaMNIST's graded photographs are 28 x 28 px, too small for an
ophthalmologist to grade. The exercise keeps the DR grading form and its model (dr-grading-retinamnist, which
reads 28 px) demonstrable and says what it is in its name and description: 40 test-split thumbnails (8 per
ICDR grade, seed 2019), reference = the RetinaMNIST test grade. RetinaMNIST: MedMNIST v2, CC BY 4.0 (cite
Yang et al., Sci Data 2023, and Liu et al., Patterns 2022). The model's input-domain gate would refuse most
real photographs anyway: of the 25 IDRiD photographs in data/idrid it accepts 7 (IDRiD_01, 03, 05, 06, 22, 23,
24) and refuses 18.

Both studies are created as drafts with their jobs at demo priority (behind any user's upload); the
coordinator opens each once the worker has explained its cases. Running `lumen load-demo` again adds nothing.
"""


def _lumen(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"lumen {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _token(client: httpx.Client, email: str) -> dict[str, str]:
    response = client.post("/api/auth/token", data={"username": email, "password": PASSWORD})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _wait_until_open(client: httpx.Client, headers: dict[str, str], study_id: int, timeout: float) -> float:
    """Open the study as soon as every case has its prediction and heatmap; returns the seconds waited."""
    started = time.perf_counter()
    while True:
        response = client.post(f"/api/reader-studies/{study_id}/open", json={}, headers=headers)
        if response.status_code == 200:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"the study did not open: {response.text}")
        time.sleep(2)


def _read_queue(client: httpx.Client, headers: dict[str, str], study: dict, rng: np.random.Generator) -> int:
    reference = {case["pseudonym"]: case for case in study["case_list"]}
    queue = client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
    for item in queue["assignments"]:
        view = client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        case = reference[item["case"]]
        truth = case["reference"]["finding"]
        finding = truth if rng.random() < P_CORRECT else {"present": "absent", "absent": "present"}[truth]
        heatmaps = (view["instances"][0]["assistance"] or {}).get("heatmaps", [])
        if heatmaps:
            rating = {
                "client_id": str(uuid.uuid4()),
                "heatmap_id": heatmaps[0]["id"],
                "answers": {
                    "relevant": int(rng.integers(2, 6)),
                    "trust": int(rng.integers(1, 6)),
                    "misleading": int(rng.integers(1, 5)),
                },
            }
            client.post(f"/api/assignments/{item['id']}/ratings", json=rating, headers=headers).raise_for_status()
        body = {
            "study_id": case["study_id"],
            "time_spent_seconds": round(float(rng.uniform(8, 40)), 1),
            "answers": {"finding": finding, "confidence": int(rng.integers(2, 6))},
            "assistance": {"visible": item["condition"] != "unassisted"},
        }
        url = f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit"
        client.post(url, json=body, headers=headers).raise_for_status()
    return len(queue["assignments"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write a report here (Markdown, with the statistics as JSON)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="lumen-demo-study-"))
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROKER_URL"}}
    env |= {"LUMEN_DATA_DIR": str(data_dir), "LUMEN_ENV": "development"}
    started = time.perf_counter()
    _lumen(env, "migrate")
    print(_lumen(env, "load-demo").strip())
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(args.port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=60) as client:
            for _ in range(120):
                try:
                    client.get("/login")
                    break
                except httpx.HTTPError:
                    time.sleep(1)
            coordinator = _token(client, "demo@lumen.local")
            study_id = next(
                s["id"]
                for s in client.get("/api/reader-studies", headers=coordinator).json()
                if s["name"].startswith("Demo:")
            )
            waited = _wait_until_open(client, coordinator, study_id, timeout=900)
            print(f"worker explained the demo cases; study opened after {waited:.0f} s of waiting")
            study = client.get(f"/api/reader-studies/{study_id}", headers=coordinator).json()
            rng = np.random.default_rng(2019)
            reads = sum(_read_queue(client, _token(client, f"reader{n}@lumen.local"), study, rng) for n in (1, 2, 3))
            csv_text = client.get(f"/api/reader-studies/{study_id}/export.csv", headers=coordinator).text
            stats = client.get(f"/api/reader-studies/{study_id}/statistics", headers=coordinator).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(
        f"{reads} reads by 3 simulated readers; export: {csv_text.count(chr(10)) - 1} rows; "
        f"total {time.perf_counter() - started:.0f} s"
    )
    for condition in stats["conditions"]:
        print(
            f"  {condition['key']:15s} reads {condition['reads']:3d}  accuracy {condition['accuracy']:.3f}  "
            f"sens {condition['sensitivity']:.3f}  spec {condition['specificity']:.3f}  "
            f"QWK vs ref {condition['kappa_vs_reference_mean']:.3f}"
        )
    if args.out:
        args.out.write_text(
            _report(
                stats, reads=reads, rows=csv_text.count("\n") - 1, waited=waited, total=time.perf_counter() - started
            )
        )
    return 0


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _report(stats: dict, *, reads: int, rows: int, waited: float, total: float) -> str:
    load = os.getloadavg()
    lines = [
        "# The demo reader studies",
        "",
        ABOUT,
        "## The chest study end to end, with simulated readers",
        "",
        f"Generated by `bench/reader_study_demo.py` on {time.strftime('%Y-%m-%d')} (2 CPUs; load average at the end "
        f"{load[0]:.2f}). Embedded default: SQLite, filesystem broker, the worker started by `lumen serve`.",
        "",
        f"- `lumen load-demo` imported 24 NIH ChestX-ray14 test radiographs at 512 px (12 labelled Effusion) and the "
        f"40 RetinaMNIST thumbnails of the DR exercise, and made two draft studies; the worker explained the "
        f"radiographs (8 methods each, cxr-nih14) and the chest study opened after {waited:.0f} s of waiting.",
        f"- 3 simulated readers read their queues through the API: {reads} reads; the CSV export has {rows} rows.",
        f"- Total, from an empty data folder: {total:.0f} s.",
        "",
        f"The readers are simulated (each gives the reference answer with probability {P_CORRECT}, in every "
        "condition: the differences between arms are chance), so these numbers check the machinery, not the value of "
        "assistance.",
        "",
        "| condition | reads | accuracy | sensitivity | specificity | QWK vs reference | mean confidence |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in stats["conditions"]:
        lines.append(
            f"| {c['label']} | {c['reads']} | {_fmt(c['accuracy'])} | {_fmt(c['sensitivity'])} | "
            f"{_fmt(c['specificity'])} | {_fmt(c['kappa_vs_reference_mean'])} | "
            f"{_fmt(c['mean_confidence'], 2)} |"
        )
    pooled = stats.get("agreement_pooled") or {}
    lines += [
        "",
        f"Agreement between readers, conditions pooled: QWK {_fmt(pooled.get('kappa_between_readers'))}, "
        f"Fleiss' kappa {_fmt(pooled.get('fleiss_kappa'))}, Krippendorff's alpha (ordinal) "
        f"{_fmt(pooled.get('krippendorff_alpha_ordinal'))}.",
        "",
    ]
    for item in stats["ratings"]["by_method"]:
        lines.append(
            f"- rating `{item['question']}` of {item['method']}: mean {_fmt(item['mean'], 2)} "
            f"(95% bootstrap CI {_fmt(item['ci_low'], 2)}-{_fmt(item['ci_high'], 2)}, n {item['n']})"
        )
    lines += ["", "## The dashboard's statistics", "", "```json", json.dumps(stats, indent=1), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
