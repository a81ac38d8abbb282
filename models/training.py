"""Training recipes for the reference models: `lumen train RECIPE` calls `run_recipe`.

One module per recipe in `models.recipes`, each with `run(out_dir=, data=, seed=, epochs=, limit=) -> report`:

- "dr-grading-retinamnist" (`models.recipes.retinamnist`): DR grade 0-4 on RetinaMNIST (MedMNIST v2);
- "fundus-lesions-idrid" (`models.recipes.idrid`): lesion presence on IDRiD photographs (01-16 only);
- "cxr-demo" (`models.recipes.cxr`): synthetic nodules inserted into real chest radiographs (a demonstration);
- "cxr-nih14" (`models.recipes.cxr_nih`): findings on 621 real NIH ChestX-ray14 radiographs (multilabel).

All are seeded and deterministic on CPU (2 threads), write weights.pt + card.json + evaluation.json into
models/zoo/<recipe>, and report on a test split never used to train or tune.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from models.datasets import TrainingDataError
from models.recipes.common import logits_of, normalise, to_tensor
from models.recipes.retinamnist import Recipe

__all__ = ["RECIPES", "Recipe", "TrainingDataError", "logits_of", "normalise", "run_recipe", "to_tensor"]

RECIPES: dict[str, str] = {
    "dr-grading-retinamnist": "models.recipes.retinamnist",
    "fundus-lesions-idrid": "models.recipes.idrid",
    "cxr-demo": "models.recipes.cxr",
    "cxr-nih14": "models.recipes.cxr_nih",
}


def run_recipe(
    recipe: str,
    *,
    out_dir: Path | None,
    data: Path | None,
    seed: int,
    epochs: int | None = None,
    limit: int | None = None,
) -> str:
    """Train the recipe's model, write its folder (weights.pt + card.json + evaluation.json) and return a
    text report.

    Args:
        recipe: a name in `RECIPES`.
        out_dir: the model folder to write (default: models/zoo/<recipe>).
        data: the dataset file or folder (default: the recipe's, under data/ in the repository).
        seed: seeds model initialisation, shuffling, augmentation and dropout.
        epochs: override the recipe's epochs (for quick runs and tests).
        limit: use only the first `limit` samples (or images) of each split (smoke tests; metrics are then
            not comparable).

    Raises:
        ValueError: unknown recipe. TrainingDataError: the data is missing or broken.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    module = importlib.import_module(RECIPES[recipe])
    return module.run(out_dir=out_dir, data=data, seed=seed, epochs=epochs, limit=limit)
