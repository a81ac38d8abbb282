"""Benchmark of the explainers on a model's evaluation images: `lumen evaluate-explanations MODEL`.

For each method: seconds per image, deletion and insertion AUC (Petsiuk 2018; target probability),
sensitivity-n over superpixels (Ancona 2018), completeness |delta| relative to f(x) - f(0), sparsity (Gini),
the model-parameter randomisation Spearman (Adebayo 2018; lower is better), repeatability across seeds for
stochastic methods, and, where the samples carry lesion masks, pointing game, relevance mass and relevance
rank accuracy (Arras 2022). Methods are ranked by their mean rank over insertion (high), deletion (low),
sensitivity-n (high) and randomisation (low), those of them computed. Writes report.json and report.html
(tables and inline PNG curves, matplotlib).

Cost: randomisation runs each method again on a re-initialised model and repeatability runs stochastic
methods again, so they double or triple the cost of the slow methods (perturbation at 512 px);
deletion, insertion and sensitivity-n cost about 67 forwards per image. `skip` leaves any of `METRICS` out
(absent from the rows, recorded in the report), and `settings` overrides an explainer's attributes after
`from_card` (e.g. {"shapley_sampling": {"n_permutations": 5}}); both are recorded in the report.

Samples contract (how a model says what to evaluate on): a *sample source* is a function
`(card: ModelCard, limit: int) -> Samples` returning normalised inputs `x` (N, C, *spatial) as the network
takes them, labels `labels` (N,) long, and optionally `masks` (N, 1, *spatial) bool lesion masks on the
same grid (localisation is reported only then). Sources are found by the card's name in `SAMPLE_SOURCES`,
or, first, by a card attribute `evaluation` (a dict, e.g. from a future card.json field) whose "samples"
entry is "module:function". The explained class is the model's predicted class (what a reader is shown).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.card import CardError, ModelCard, load_card, scan_cards
from models.datasets import idrid_heldout, load_medmnist
from models.explain import metrics
from models.explain.base import Explainer
from models.explain.registry import EXPLAINERS, get_explainer
from models.explain.replicas import replica_repeatability
from models.explain.superpixels import feature_masks
from models.preprocessing import InputRegion, prepare_with_region
from models.registry import load_model

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"
# What `skip` can leave out; each names the row keys it fills.
METRICS: dict[str, tuple[str, ...]] = {
    "deletion": ("deletion_auc",),
    "insertion": ("insertion_auc",),
    "sensitivity_n": ("sensitivity_n",),
    "randomisation": ("randomisation_spearman",),
    "completeness": ("completeness_rel",),
    "sparsity": ("sparsity_gini",),
    "repeatability": ("repeatability_l2",),
    "localisation": ("pointing_game", "relevance_mass", "relevance_rank_accuracy"),
    "replicas": ("replica_l2_per_image", "replica_l2_average_map"),
}
STOCHASTIC = (
    "smoothgrad",
    "vargrad",
    "gradient_shap",
    "deeplift_shap",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    "expressive_gradients",
)


@dataclass(frozen=True)
class Samples:
    """x (N, C, *spatial) normalised; labels (N,) long; masks (N, 1, *spatial) bool or None."""

    x: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None


def retinamnist_test(card: ModelCard, limit: int) -> Samples:
    """The first `limit` RetinaMNIST test images (data/retinamnist.npz), normalised as the card says."""
    split = load_medmnist(ROOT / "data" / "retinamnist.npz", num_classes=card.num_classes)["test"].head(limit)
    x = torch.from_numpy(split.images).permute(0, 3, 1, 2).float().div(255.0)
    mean, std = torch.tensor(card.input.mean).view(1, -1, 1, 1), torch.tensor(card.input.std).view(1, -1, 1, 1)
    return Samples(x=(x - mean) / std, labels=torch.from_numpy(split.labels))


def idrid_heldout_exudates(card: ModelCard, limit: int) -> Samples:
    """Held-out IDRiD photographs (17-24, 55) prepared as the card says, with their hard-exudate masks
    carried through the same fundus crop, padding and resize (the only lesion annotated on all nine)."""
    label = card.labels.index("hard exudates")
    xs, masks = [], []
    for image, lesions, _name in idrid_heldout(size=max(card.input.size))[:limit]:
        x, region = prepare_with_region(image, card)
        xs.append(x)
        masks.append(_mask_on_input(lesions["hard_exudates"], region, tuple(card.input.size)))
    return Samples(x=torch.cat(xs), labels=torch.full((len(xs),), label), masks=torch.cat(masks))


def _mask_on_input(mask: np.ndarray, region: InputRegion, size: tuple[int, ...]) -> torch.Tensor:
    """(H, W) bool on the image -> (1, 1, h, w) bool on the network input (any lesion pixel counts)."""
    canvas = torch.zeros(region.height, region.width)
    rows, cols = mask.shape
    y0, x0 = max(0, region.top), max(0, region.left)
    y1, x1 = min(rows, region.top + region.height), min(cols, region.left + region.width)
    canvas[y0 - region.top : y1 - region.top, x0 - region.left : x1 - region.left] = torch.from_numpy(
        mask[y0:y1, x0:x1].astype(np.float32)
    )
    return torch.nn.functional.adaptive_max_pool2d(canvas[None, None], size) > 0


def cxr_synthetic_nodules(card: ModelCard, limit: int) -> Samples:
    """Held-out synthetic nodules (test radiograph only, the card's test seed) with their known masks; only
    samples that carry a nodule, since localisation needs something to find."""
    from models.recipes import cxr  # the recipe synthesises the test set exactly as the card's metrics use it

    samples = cxr.test_samples(n=max(4 * limit, 8))
    keep = torch.nonzero(samples.y == 1).flatten()[:limit]
    mean, std = torch.tensor(card.input.mean).view(1, -1, 1, 1), torch.tensor(card.input.std).view(1, -1, 1, 1)
    label = card.labels.index("nodule")
    return Samples(
        x=(samples.x[keep] - mean) / std, labels=torch.full((len(keep),), label), masks=samples.masks[keep][:, None]
    )


SAMPLE_SOURCES: dict[str, Callable[[ModelCard, int], Samples]] = {
    "dr-grading-retinamnist": retinamnist_test,
    "fundus-lesions-idrid": idrid_heldout_exudates,
    "cxr-demo": cxr_synthetic_nodules,
}


def sample_source(card: ModelCard) -> Callable[[ModelCard, int], Samples]:
    spec = (getattr(card, "evaluation", None) or {}).get("samples")
    if spec:
        module, function = spec.split(":")
        return getattr(import_module(module), function)
    if card.name not in SAMPLE_SOURCES:
        raise ValueError(f"model {card.name!r} has no evaluation samples (see models.explain.evaluate)")
    return SAMPLE_SOURCES[card.name]


def find_card(name: str, zoo: Path = ZOO) -> ModelCard:
    cards = [c for c in scan_cards([zoo]).cards if c.name == name]
    if not cards:
        raise ValueError(f"no valid model {name!r} in {zoo}")
    return cards[-1]


def make_explainer(
    name: str, model: nn.Module, card: ModelCard, settings: dict[str, dict[str, Any]] | None = None
) -> Explainer:
    """`get_explainer`, then the attributes in `settings[name]` set on it. Raises ValueError for an
    attribute the explainer does not have (a misspelt setting must not be silently ignored)."""
    explainer = get_explainer(name, model, card)
    for key, value in (settings or {}).get(name, {}).items():
        if key.startswith("_") or not hasattr(explainer, key):
            raise ValueError(f"{name} has no setting {key!r}")
        setattr(explainer, key, value)
    return explainer


def _method_scores(
    name: str,
    model: nn.Module,
    card: ModelCard,
    samples: Samples,
    target: torch.Tensor,
    seed: int,
    skip: frozenset[str] = frozenset(),
    settings: dict[str, dict[str, Any]] | None = None,
    replicas: tuple[nn.Module, ...] = (),
) -> dict[str, Any]:
    x = samples.x
    explainer = make_explainer(name, model, card, settings)
    started = time.perf_counter()
    maps = explainer.explain(x, target)
    row: dict[str, Any] = {"seconds_per_image": (time.perf_counter() - started) / x.shape[0], "curves": {}}
    if "deletion" not in skip:
        deletion, curve = metrics.deletion_auc(model, x, target, maps)
        row["deletion_auc"], row["curves"]["deletion"] = float(deletion.mean()), curve.mean(0).tolist()
    if "insertion" not in skip:
        insertion, curve = metrics.insertion_auc(model, x, target, maps)
        row["insertion_auc"], row["curves"]["insertion"] = float(insertion.mean()), curve.mean(0).tolist()
    if "sensitivity_n" not in skip:
        segments = feature_masks(x, 49, "grid")
        sens = metrics.sensitivity_n(model, x, target, maps, n=8, feature_mask=segments, seed=seed)
        row["sensitivity_n"] = float(torch.nan_to_num(sens).mean())
    if "randomisation" not in skip:
        rand = metrics.randomisation_rank_correlation(
            lambda m: make_explainer(name, m, card, settings), model, x, target, seed=seed
        )
        row["randomisation_spearman"] = float(rand["all"].mean())
    if "completeness" not in skip:
        delta = metrics.completeness_delta(model, x, target, maps)
        gap = metrics.target_logits(model, x, target) - metrics.target_logits(model, torch.zeros_like(x), target)
        row["completeness_rel"] = float((delta.abs() / gap.abs().clamp(min=1e-12)).median())
    if "sparsity" not in skip:
        row["sparsity_gini"] = float(metrics.sparsity(maps).mean())
    if "repeatability" not in skip and name in STOCHASTIC and hasattr(explainer, "seed"):
        explainer.seed = seed + 1
        row["repeatability_l2"] = float(metrics.repeatability([maps, explainer.explain(x, target)]).mean())
    if "replicas" not in skip and replicas:
        # Same class, same seed in every replica: the distances come from the trained weights alone.
        row.update(
            replica_repeatability(lambda m: make_explainer(name, m, card, settings), [model, *replicas], x, target)
        )
    if "localisation" not in skip and samples.masks is not None:
        row["pointing_game"] = float(metrics.pointing_game(maps, samples.masks).mean())
        row["relevance_mass"] = float(metrics.relevance_mass(maps, samples.masks).mean())
        row["relevance_rank_accuracy"] = float(metrics.relevance_rank_accuracy(maps, samples.masks).mean())
    return row


def _rank(results: dict[str, dict[str, Any]]) -> list[str]:
    """Methods by mean rank over insertion (high), deletion (low), sensitivity-n (high) and randomisation
    (low), those computed; in run order, without a mean rank, when none was."""
    names = list(results)
    keys = [("insertion_auc", -1), ("deletion_auc", 1), ("sensitivity_n", -1), ("randomisation_spearman", 1)]
    keys = [(key, sign) for key, sign in keys if all(key in row for row in results.values())]
    if not keys:
        return names
    mean_rank = {n: 0.0 for n in names}
    for key, sign in keys:
        for position, n in enumerate(sorted(names, key=lambda m: sign * results[m][key])):
            mean_rank[n] += position / len(keys)
    for n in names:
        results[n]["mean_rank"] = mean_rank[n] + 1
    return sorted(names, key=mean_rank.__getitem__)


def evaluate_explanations(
    model_name: str,
    *,
    out_dir: Path | None = None,
    methods: list[str] | None = None,
    limit: int = 16,
    zoo: Path = ZOO,
    seed: int = 0,
    skip: Collection[str] = (),
    settings: dict[str, dict[str, Any]] | None = None,
    replicas: Collection[Path] = (),
) -> dict[str, Any]:
    """Run `methods` (default: every registered one) on `limit` evaluation samples of the model, without the
    metrics in `skip` (names of `METRICS`) and with the explainer `settings` ({method: {attribute: value}});
    write report.json and report.html to `out_dir` (default reports/explanations/<model>) and return the
    report. `replicas`: folders of the same model trained again by its recipe with other seeds (`lumen train
    MODEL --seed S --out DIR`); with them each method also gets its repeatability across models (replicas.py).
    Raises ValueError for an unknown metric or model, or a replica of another model."""
    unknown = set(skip) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {list(METRICS)}")
    card = find_card(model_name, zoo)
    model = load_model(card)
    replica_models = tuple(load_model(replica) for replica in _replica_cards(card, replicas))
    samples = sample_source(card)(card, limit)
    if samples.masks is not None:
        # Localisation: explain the finding whose mask we have, whatever the model ranks first.
        target = samples.labels
    else:
        with torch.no_grad():
            target = model(samples.x).argmax(1)
    results, failed = {}, {}
    for name in methods or list(EXPLAINERS):
        try:
            results[name] = _method_scores(
                name, model, card, samples, target, seed, frozenset(skip), settings, replica_models
            )
            logger.info("method %s: %.2f s per image", name, results[name]["seconds_per_image"])
        except (ImportError, AttributeError, NotImplementedError, RuntimeError, ValueError) as exc:
            # One method failing (e.g. not implemented yet) must not lose the others' numbers.
            logger.warning("method %s failed: %s", name, exc)
            failed[name] = f"{type(exc).__name__}: {exc}"
    report = {
        "model": card.name,
        "version": card.version,
        "n_images": int(samples.x.shape[0]),
        "torch_threads": torch.get_num_threads(),
        "ranking": _rank(results) if results else [],
        "skipped_metrics": [m for m in METRICS if m in skip],
        "settings": settings or {},
        "replicas": [str(folder) for folder in replicas],
        "methods": results,
        "failed": failed,
    }
    out = Path(out_dir) if out_dir is not None else ROOT / "reports" / "explanations" / card.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    return report


def _replica_cards(card: ModelCard, folders: Collection[Path]) -> list[ModelCard]:
    """The replicas' cards, checked to be the same model (name, labels, input) as `card`."""
    cards = []
    for folder in folders:
        try:
            replica = load_card(Path(folder))
        except CardError as exc:
            raise ValueError(f"replica {folder}: {exc}") from exc
        if (replica.name, replica.labels, replica.input) != (card.name, card.labels, card.input):
            raise ValueError(
                f"replica {folder} is {replica.name!r} with other labels or input, not a replica of {card.name!r}"
            )
        cards.append(replica)
    return cards


def _curves_png(report: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    kinds = [k for k in ("deletion", "insertion") if k not in report.get("skipped_metrics", [])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name in report["ranking"]:
            curve = report["methods"][name]["curves"][kind]
            ax.plot(np.linspace(0, 1, len(curve)), curve, label=name, linewidth=1)
        ax.set_title(f"{kind} (mean target probability)")
        ax.set_xlabel("fraction of pixels")
    axes[0, -1].legend(fontsize=6, ncol=2)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f'<img alt="curves" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def render_html(report: dict[str, Any]) -> str:
    """A standalone page: the ranking table, failed methods, and the mean deletion / insertion curves."""
    columns = [
        "mean_rank",
        "insertion_auc",
        "deletion_auc",
        "sensitivity_n",
        "randomisation_spearman",
        "completeness_rel",
        "sparsity_gini",
        "repeatability_l2",
        "replica_l2_per_image",
        "replica_l2_average_map",
        "pointing_game",
        "relevance_mass",
        "relevance_rank_accuracy",
        "seconds_per_image",
    ]
    columns = [c for c in columns if any(c in r for r in report["methods"].values())]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *columns])
    rows = "".join(
        "<tr><td>"
        + html.escape(name)
        + "</td>"
        + "".join(
            f"<td>{report['methods'][name][c]:.4g}</td>" if c in report["methods"][name] else "<td></td>"
            for c in columns
        )
        + "</tr>"
        for name in report["ranking"]
    )
    failed = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in report["failed"].items())
    curves = {"deletion", "insertion"} - set(report.get("skipped_metrics", []))
    plot = _curves_png(report) if report["ranking"] and curves else ""
    skipped = ", ".join(report.get("skipped_metrics", [])) or "none"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Explanations: {html.escape(report['model'])}"
        "</title><style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(report['model'])} {html.escape(report['version'])}: explanation methods</h1>"
        f"<p>{report['n_images']} images; ranked by mean rank over insertion, deletion, sensitivity-n and "
        f"randomisation (those computed). Metrics skipped: {html.escape(skipped)}. Explainer settings: "
        f"{html.escape(json.dumps(report.get('settings', {})))}.</p><table><tr>{head}</tr>{rows}</table>"
        f"{'<h2>Failed</h2><ul>' + failed + '</ul>' if failed else ''}{plot}</body></html>\n"
    )
