"""Temperature scaling: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

One scalar T > 0 divides the logits; it is fitted on a held-out split by minimising the negative
log-likelihood, and changes confidence without changing the predicted class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 100) -> float:
    """The T minimising mean NLL of softmax(logits / T).

    Args:
        logits: (N, K) logits of a held-out split (never the test split).
        labels: (N,) long true classes.

    Returns:
        T as a float (> 0).
    """
    logits = logits.detach().double()
    labels = labels.detach().long()
    # Optimising log T keeps T positive without constraints; LBFGS suits this smooth 1-D problem.
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
