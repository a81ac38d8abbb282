"""A worker's start: the models it serves on studies are loaded (with their gates, and the batch sizes measured
or read back) and run once on a blank input before the first job, so that a newcomer's first upload does not
pay for the load and for torch's set-up of its first forward and backward passes."""

from __future__ import annotations

import logging
import time

import torch

from app.config import get_settings
from models import uncertainty
from models.card import scan_cards
from workers import model_cache

logger = logging.getLogger(__name__)


def warm_served_models() -> list[str]:
    """Load and run each model this worker serves automatically; the names of those warmed. A model that fails
    to load is logged and left for its jobs to fail with the reason."""
    warmed = []
    for card in scan_cards(get_settings().model_dirs).cards:
        if not card.serve_automatically or len(card.input.size) != 2:
            continue
        mark = time.perf_counter()
        try:
            model, card = model_cache.get_model(card.name, card.version)
            model_cache.get_gate(card.name, card.version)
            parameter = next(model.parameters())
            blank = torch.zeros(1, card.input.channels, *card.input.size, device=parameter.device)
            uncertainty.estimate_batch(model, blank, card)
            x = blank.clone().requires_grad_(True)
            model(x)[:, 0].sum().backward()
        except Exception:
            logger.exception("model %s %s could not be warmed; its jobs will say why", card.name, card.version)
            continue
        warmed.append(f"{card.name} {card.version}")
        logger.info("model %s %s ready in %.2f s", card.name, card.version, time.perf_counter() - mark)
    return warmed
