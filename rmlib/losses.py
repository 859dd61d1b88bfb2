"""Training losses.

Bradley-Terry (Eq. 3), for EX-RMs and IM-RMs alike:
    L = mean over pairs of -ln sigma(r(x, y+) - r(x, y-)).
EX-GRM (Eq. 7):
    L = mean over pairs of -ln pi(Yes | I[x, y+]) - ln pi(No | I[x, y-]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 3, averaged over the pairs of the batch (numerically stable logsigmoid)."""
    return -F.logsigmoid(r_chosen.float() - r_rejected.float()).mean()


def generative_loss(logp_yes_chosen: torch.Tensor, logp_no_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 7, averaged over the pairs of the batch."""
    return -(logp_yes_chosen.float() + logp_no_rejected.float()).mean()
