"""Temperature scaling: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

One scalar T > 0 divides the logits; it is fitted on a held-out split by minimising the negative
log-likelihood, and changes confidence without changing the predicted class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 100, multilabel: bool = False
) -> float:
    """The T minimising mean NLL of softmax(logits / T) (or, `multilabel`, of sigmoid(logits / T) per label).

    Args:
        logits: (N, K) logits of a held-out split (never the test split).
        labels: (N,) long true classes; (N, K) 0/1 presence when `multilabel`.

    Returns:
        T as a float (> 0).
    """
    logits = logits.detach().double()
    labels = labels.detach().double() if multilabel else labels.detach().long()
    # Optimising log T keeps T positive without constraints; LBFGS suits this smooth 1-D problem.
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scaled = logits / log_t.exp()
        loss = F.binary_cross_entropy_with_logits(scaled, labels) if multilabel else F.cross_entropy(scaled, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
