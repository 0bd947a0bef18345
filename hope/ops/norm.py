"""Unit vectors that stay finite in half precision.

`F.normalize(x)` divides by ``max(|x|, 1e-12)``, so the gradient through a zero vector is multiplied by 1e12: under
fp16 autocast that overflows in the backward of the projection in front of it (inf x 0 = NaN in its weight
gradient), whatever the loss scale. Zero vectors do occur: the episodic bank's first write key of a fresh stream is
K(0) = 0 (architecture.md, "Execution on accelerators").
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6  # representable in fp16 (smallest normal 6.1e-5; subnormals reach 6e-8)


def unit(x: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """``x / |x|`` along `dim`; a vector of norm <= `eps` maps to 0 with a zero gradient (not 1/eps times it)."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)  # its backward is 0 at a zero vector
    live = norm > eps
    return torch.where(live, x / torch.where(live, norm, 1.0), 0.0)
