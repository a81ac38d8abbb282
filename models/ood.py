"""Input-domain (out-of-distribution) gates: refuse an image that does not look like a model's training data.

A gate scores the image as served (after `models.preprocessing.prepare`: crop, windowing, resize,
normalisation); higher means less like the training data, and a score above the gate's threshold refuses the
image. Two scores, both on one forward pass of the model:

- "mahalanobis": the smallest Mahalanobis distance of the penultimate-layer embedding (the pooled features the
  head's linear classifier reads, before its dropout) to the class means of the training embeddings, with one
  covariance shared by the classes (Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution
  Samples and Adversarial Attacks", NeurIPS 2018). Training sets here are small (12 to 1080 images against
  48 to 192 features), so the covariance is the Ledoit-Wolf shrinkage estimate (Ledoit and Wolf, J. Multivariate
  Analysis 2004; scikit-learn's `LedoitWolf`), which stays invertible when samples are fewer than features.
- "energy": the free energy of the logits, -logsumexp(f(x)) (Liu et al., "Energy-based Out-of-distribution
  Detection", NeurIPS 2020); for a multi-label head the joint energy -sum_k log(1 + exp(f_k(x))) (Wang et al.,
  "Can multi-label classification networks know what they don't know?", NeurIPS 2021). It needs no fitting
  beyond the threshold.

The threshold is the (1 - target false-rejection) quantile of the scores of in-domain validation images
(`fit_gate`), so that about that fraction of in-domain images is refused. A gate is saved as an .npz next to
the weights (`save_gate`) and named, with its sha256, in the card's `ood` block (`models.card.OodSpec`);
`load_gate` checks the sha256 as `ModelCard.verify_weights` does for the weights.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from models import evaluation
from models.card import CardError, ModelCard, OodMethod, file_sha256
from models.preprocessing import prepare

GATE_FILE = "ood.npz"
METHODS: tuple[OodMethod, ...] = ("mahalanobis", "energy")
CITATIONS: dict[str, str] = {
    "mahalanobis": "Lee et al., NeurIPS 2018 (Mahalanobis distance to class means, tied covariance), with "
    "Ledoit-Wolf shrinkage (Ledoit and Wolf, J. Multivariate Analysis 2004)",
    "energy": "Liu et al., NeurIPS 2020 (energy score); joint energy for multi-label heads: Wang et al., NeurIPS 2021",
}
DEFAULT_TARGET_FALSE_REJECTION = 0.05
_BATCH = 16


@dataclass(frozen=True)
class Image:
    """A decoded image as the worker reads it: `pixels` (H, W) grayscale in modality units or (H, W, 3) RGB,
    with the file's photometric interpretation (for MONOCHROME1) and VOI LUT Module (for windowing "dicom")."""

    pixels: np.ndarray
    photometric: str = ""
    voi: Any = None


ImageLike = np.ndarray | Image | torch.Tensor
"""An image: pixels as decoded (prepared here as the card says), an `Image`, or a (C, *spatial) or
(1, C, *spatial) tensor already prepared."""


@dataclass(frozen=True)
class Verdict:
    """One image's gate result: its score, the threshold, and whether the image is inside the domain."""

    score: float
    threshold: float
    method: str

    @property
    def in_domain(self) -> bool:
        return self.score <= self.threshold

    def reason(self) -> str:
        """The outcome in words, for the job's record and the reading room."""
        return f"outside this model's domain: {self.method} score {self.score:.4g} above threshold {self.threshold:.4g}"


@dataclass(frozen=True)
class Gate:
    """A fitted gate. `means` (C, D) and `precision` (D, D) are the Mahalanobis parameters (empty for "energy");
    `multilabel` selects the joint energy."""

    method: OodMethod
    threshold: float
    means: np.ndarray
    precision: np.ndarray
    multilabel: bool = False

    def scores(self, embeddings: torch.Tensor, logits: torch.Tensor) -> np.ndarray:
        """(N,) scores of (N, D) embeddings and (N, K) logits; higher = less like the training data."""
        if self.method == "energy":
            return energy_score(logits, multilabel=self.multilabel)
        return mahalanobis_score(embeddings.double().cpu().numpy(), self.means, self.precision)

    def check(self, model: nn.Module, x: torch.Tensor) -> list[Verdict]:
        """The verdict on each of (B, C, *spatial) prepared inputs (one forward pass of `model`). The energy gate
        reads the logits only, so it also serves a model without an embedding (TorchScript)."""
        if self.method == "energy":
            with torch.no_grad():
                logits = model(x).float()
            return [Verdict(float(s), self.threshold, self.method) for s in self.scores(logits[:, :0], logits)]
        embeddings, logits = embed(model, x)
        return [Verdict(float(s), self.threshold, self.method) for s in self.scores(embeddings, logits)]


def embed(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The penultimate-layer embedding and the logits of (B, C, *spatial) inputs, in eval mode, no gradients.

    The embedding is the input of `head.classifier` (the pooled, flattened features; dropout is the identity
    in eval mode) or, in a network without one (a MONAI or timm network), the input of the last `nn.Linear`
    run in the forward pass: the features the classifier reads. It is caught by forward pre-hooks released in
    `finally`.

    Returns:
        (B, D) float32 embeddings, (B, K) float32 logits.

    Raises:
        ValueError: the model is TorchScript (it takes no Python hooks) or runs no `nn.Linear`; such a model
            gets the "energy" gate, which needs the logits only.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("a TorchScript model takes no Python hooks, so it has no embedding for a Mahalanobis gate")
    try:
        readers = [model.get_submodule("head.classifier")]
    except AttributeError:
        readers = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not readers:
        raise ValueError("the model has no nn.Linear classifier, so it has no embedding for a Mahalanobis gate")
    caught: list[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _module, args: caught.append(args[0].detach())) for m in readers]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    if not caught:
        raise ValueError("no nn.Linear of the model ran in its forward pass: no embedding for a Mahalanobis gate")
    return caught[-1].flatten(1).float(), logits.float()


def mahalanobis_score(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min_c (z - mu_c)^T P (z - mu_c) of (N, D) embeddings against (C, D) means and a (D, D) precision: (N,)."""
    diff = z[:, None, :] - means[None, :, :]
    return np.einsum("ncd,de,nce->nc", diff, precision, diff).min(axis=1)


def energy_score(logits: torch.Tensor, *, multilabel: bool = False) -> np.ndarray:
    """(N,) energy of (N, K) logits: -logsumexp (softmax heads) or -sum softplus (multi-label heads)."""
    logits = logits.double()
    energy = -torch.nn.functional.softplus(logits).sum(1) if multilabel else -torch.logsumexp(logits, 1)
    return energy.cpu().numpy()


def fit_mahalanobis(embeddings: np.ndarray, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, D) and the shrunk shared precision (D, D) of (N, D) training embeddings.

    `classes` (N,) ints gives class-conditional means (Lee et al.); a class with fewer than 2 images has no
    mean of its own and is left out; without classes (or without a class of 2 images), one mean of all.
    """
    z = np.asarray(embeddings, dtype=np.float64)
    groups = _groups(classes, len(z))
    means = np.stack([z[g].mean(0) for g in groups])
    residuals = np.concatenate([z[g] - z[g].mean(0) for g in groups])
    precision = LedoitWolf(assume_centered=True).fit(residuals).precision_
    return means, precision


def _groups(classes: np.ndarray | None, n: int) -> list[np.ndarray]:
    if classes is None:
        return [np.arange(n)]
    classes = np.asarray(classes).reshape(-1)
    groups = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    kept = [g for g in groups if g.size >= 2]
    return kept if kept else [np.arange(n)]


def threshold_for(val_scores: np.ndarray, target_false_rejection: float) -> float:
    """The (1 - target) quantile of in-domain validation scores, taken at an observed score ("higher"), so
    that at most the target fraction of the validation images lies above it."""
    if not 0.0 < target_false_rejection < 1.0:
        raise ValueError(f"target_false_rejection must be in (0, 1), got {target_false_rejection}")
    return float(np.quantile(np.asarray(val_scores, dtype=np.float64), 1.0 - target_false_rejection, method="higher"))


def prepared_batches(images: Iterable[ImageLike], card: ModelCard, device: torch.device) -> Iterator[torch.Tensor]:
    """(b, C, *spatial) batches of the images as served (`prepare`), a few at a time: a foreign set of
    hundreds of 512-px images is never held in memory at once."""
    batch: list[torch.Tensor] = []
    for image in images:
        batch.append(_prepared(image, card, device))
        if len(batch) == _BATCH:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


def _prepared(image: ImageLike, card: ModelCard, device: torch.device) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == len(card.input.size) + 2 else image[None]
        return x.to(device)
    if isinstance(image, Image):
        return prepare(image.pixels, card, device=device, photometric=image.photometric, voi=image.voi)
    return prepare(image, card, device=device)


def embed_images(model: nn.Module, card: ModelCard, images: Iterable[ImageLike]) -> tuple[torch.Tensor, torch.Tensor]:
    """`embed` of every image, prepared as served: (N, D) embeddings and (N, K) logits on the CPU."""
    device = next(model.parameters()).device
    parts = [embed(model, x) for x in prepared_batches(images, card, device)]
    if not parts:
        raise ValueError("no images to embed")
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


@dataclass(frozen=True)
class Embedded:
    """A set of images as the gate sees them: (N, D) embeddings and (N, K) logits."""

    embeddings: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


def embedded(model: nn.Module, card: ModelCard, images: Iterable[ImageLike]) -> Embedded:
    return Embedded(*embed_images(model, card, images))


@dataclass(frozen=True)
class FittedGate:
    """The gate kept, and the card's `ood` block measurements for it and for the other method."""

    gate: Gate
    report: dict[str, Any]


def fit_gate(
    model: nn.Module,
    card: ModelCard,
    train_images: Iterable[ImageLike] | Embedded,
    val_images: Iterable[ImageLike] | Embedded,
    *,
    train_classes: Sequence[int] | np.ndarray | None = None,
    test_images: Iterable[ImageLike] | Embedded | None = None,
    foreign: Mapping[str, Iterable[ImageLike] | Embedded] | None = None,
    target_false_rejection: float = DEFAULT_TARGET_FALSE_REJECTION,
    methods: Sequence[OodMethod] = METHODS,
) -> FittedGate:
    """Fit each method's gate on the training images, set its threshold on the validation images, measure
    it, and keep the best.

    Args:
        model: the card's model (eval mode), on any device.
        card: its card (input spec for `prepare`; task for the energy's form).
        train_images, val_images, test_images: in-domain images (decoded pixels, `Image`s or prepared tensors;
            or `Embedded` sets already computed), never the foreign sets.
        train_classes: (N,) class of each training image, for class-conditional means (None: one mean).
        foreign: named sets of images from outside the domain (other modalities, body parts).
        target_false_rejection: the fraction of in-domain validation images the threshold may refuse.
        methods: the scores compared.

    Returns:
        The kept gate (highest mean AUROC of the foreign sets against the in-domain validation images, the
        first method on ties; the only one without foreign sets) and its report: per method the threshold,
        false-rejection on val/test and per foreign set the AUROC (against the test split, else val) and the
        fraction rejected.
    """
    train, val = _as_embedded(model, card, train_images), _as_embedded(model, card, val_images)
    test = _as_embedded(model, card, test_images) if test_images is not None else None
    others = {name: _as_embedded(model, card, images) for name, images in (foreign or {}).items()}
    multilabel = card.task == "multilabel"
    results = {}
    for method in methods:
        means, precision = np.zeros((0, 0)), np.zeros((0, 0))
        if method == "mahalanobis":
            classes = None if train_classes is None else np.asarray(train_classes)
            means, precision = fit_mahalanobis(train.embeddings.double().numpy(), classes)
        draft = Gate(method, 0.0, means, precision, multilabel)
        # Not rounded: a threshold rounded down would refuse the validation image it was taken at.
        threshold = threshold_for(_scores(draft, val), target_false_rejection)
        gate = Gate(method, threshold, means, precision, multilabel)
        results[method] = (gate, _measure(gate, val, test, others, target_false_rejection))
    kept = max(methods, key=lambda m: (results[m][1]["selection_auroc"], -methods.index(m)))
    gate, report = results[kept]
    comparison = {m: {k: v for k, v in results[m][1].items() if k != "citation"} for m in methods if m != kept}
    return FittedGate(gate, {**report, "comparison": comparison})


def _as_embedded(model: nn.Module, card: ModelCard, images: Iterable[ImageLike] | Embedded) -> Embedded:
    return images if isinstance(images, Embedded) else embedded(model, card, images)


def _scores(gate: Gate, images: Embedded) -> np.ndarray:
    return gate.scores(images.embeddings, images.logits)


def _measure(
    gate: Gate, val: Embedded, test: Embedded | None, foreign: dict[str, Embedded], target: float
) -> dict[str, Any]:
    val_scores = _scores(gate, val)
    reference = _scores(gate, test) if test is not None else val_scores
    report: dict[str, Any] = {
        "method": gate.method,
        "citation": CITATIONS[gate.method],
        "threshold": gate.threshold,
        "target_false_rejection": target,
        "false_rejection": {"val": _rate(val_scores > gate.threshold)},
        "foreign": {},
    }
    if test is not None:
        report["false_rejection"]["test"] = _rate(reference > gate.threshold)
    selection = []
    for name, images in foreign.items():
        scores = _scores(gate, images)
        report["foreign"][name] = {
            "auroc": round(_auroc(reference, scores), 6),
            "rejected": round(float((scores > gate.threshold).mean()), 6),
            "n": len(images),
        }
        selection.append(_auroc(val_scores, scores))
    report["selection_auroc"] = round(float(np.mean(selection)), 6) if selection else 0.0
    return report


def _rate(rejected: np.ndarray) -> dict[str, float | int]:
    return {"rate": round(float(rejected.mean()), 6), "n": int(rejected.size)}


def _auroc(in_domain: np.ndarray, foreign: np.ndarray) -> float:
    scores = np.concatenate([in_domain, foreign])
    positive = np.concatenate([np.zeros(len(in_domain), bool), np.ones(len(foreign), bool)])
    return evaluation.binary_auc(scores, positive)


def save_gate(gate: Gate, path: Path) -> str:
    """Write the gate as an .npz (no pickles); its sha256, for the card."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        method=np.array(gate.method),
        threshold=np.array(gate.threshold, dtype=np.float64),
        means=gate.means.astype(np.float64),
        precision=gate.precision.astype(np.float64),
        multilabel=np.array(gate.multilabel),
    )
    data = buffer.getvalue()
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_gate(card: ModelCard) -> Gate | None:
    """The card's gate, or None when the card has none (the model then runs on every routed image).

    Raises:
        CardError: the file's sha256 differs from the card's, the file is not a gate, or its method or
            threshold disagree with the card.
    """
    spec, path = card.ood, card.ood_path
    if spec is None or path is None:
        return None
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise CardError(
            f"model {card.name!r} ({card.folder}): sha256 of {spec.file} is {actual}, the card says {spec.sha256}; "
            "the gate file was changed or replaced"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            gate = Gate(
                method=str(data["method"]),  # type: ignore[arg-type]  # checked against the card just below
                threshold=float(data["threshold"]),
                means=data["means"],
                precision=data["precision"],
                multilabel=bool(data["multilabel"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise CardError(f"model {card.name!r}: {spec.file} is not a readable gate ({exc})") from exc
    if gate.method != spec.method or gate.threshold != spec.threshold:
        raise CardError(
            f"model {card.name!r}: {spec.file} holds a {gate.method} gate at {gate.threshold:.6g}, "
            f"the card says {spec.method} at {spec.threshold:.6g}"
        )
    return gate
