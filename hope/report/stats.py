"""The summary numbers of the reports: forgetting and backward transfer of a continual-learning loss matrix, and
the mean and spread over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def compute_forgetting(loss_matrix: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Average forgetting and backward transfer from a matrix of validation LOSSES (lower is better).

    ``loss_matrix[i][j]`` is the validation loss on domain ``j`` after training stage ``i`` (stage ``i`` trains
    on domain ``i``). With ``T`` stages, ``last = T - 1``, and the average taken over the domains ``j < last``
    (those trained before the final stage; the final domain cannot have been forgotten yet):

    - forgetting of domain ``j`` = ``loss[last][j] - min(loss[i][j] for j <= i < last)``: how much worse the
      final model is than the best it ever was on ``j`` after learning it (Chaudhry et al., 2018, rewritten for
      losses: max accuracy becomes min loss and the difference changes sign). Positive = forgot; it is
      negative when later stages kept improving ``j``.
    - backward transfer ``BWT = mean_j (loss[last][j] - loss[j][j])`` (Lopez-Paz & Ranzato, 2017, for losses).
      SIGN CONVENTION: because these are losses, POSITIVE BWT means the later stages made the earlier domains
      WORSE (forgetting); negative BWT means they helped. (With accuracies the usual BWT has the opposite sign.)

    Returns ``(avg_forgetting, backward_transfer)`` in the loss's units (nats per byte).
    """
    rows = [list(map(float, r)) for r in loss_matrix]
    if len(rows) < 2:
        raise ValueError(f"forgetting needs at least 2 training stages, got a loss matrix with {len(rows)} row(s)")
    last = len(rows) - 1
    n_domains = len(rows[0])
    if any(len(r) != n_domains for r in rows):
        raise ValueError(f"loss matrix rows have different lengths: {[len(r) for r in rows]}")
    if n_domains < last:
        raise ValueError(f"loss matrix has {last + 1} stages but only {n_domains} domains; need one domain per stage")
    forgetting = []
    transfer = []
    for j in range(last):
        best = min(rows[i][j] for i in range(j, last))
        forgetting.append(rows[last][j] - best)
        transfer.append(rows[last][j] - rows[j][j])
    return sum(forgetting) / len(forgetting), sum(transfer) / len(transfer)


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0.0 for a single value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_spread needs at least one value")
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
