"""Evaluation samples of the reference models: what `lumen evaluate-explanations` localises against."""

from __future__ import annotations

from models.explain import evaluate


def test_cxr_source_gives_held_out_nodules_with_their_masks():
    card = evaluate.find_card("cxr-demo")
    samples = evaluate.sample_source(card)(card, 5)
    assert samples.x.shape == (5, 1, 128, 128)
    assert samples.masks.shape == (5, 1, 128, 128) and samples.masks.dtype.is_floating_point is False
    assert all(mask.any() for mask in samples.masks)  # every sample carries a nodule to find
    assert (samples.labels == card.labels.index("nodule")).all()
    # Normalised as the card says: the raw [0, 1] radiograph minus mean over std.
    assert abs(float(samples.x.mean()) * card.input.std[0] + card.input.mean[0] - 0.5) < 0.3
