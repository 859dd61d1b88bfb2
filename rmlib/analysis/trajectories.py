"""Rewards of held-out responses during a real training run (the training-step view of notebook 02).

No assumption here: all parameters move under :func:`rmlib.training.train` (Adam, Eq. 3), and the
held-out sequences are scored before training and after every optimizer step.
"""

from __future__ import annotations

import numpy as np

from ..formatting import Encoded
from ..scoring import reference_logps, score


def train_with_trajectories(rm, chosen: list[Encoded], rejected: list[Encoded], config, heldout: list[Encoded]):
    """Train ``rm`` with :func:`rmlib.training.train` and score ``heldout`` sequences before training and
    after every optimizer step. Returns (history, steps [0..S], rewards as an [S+1, len(heldout)] array)."""
    from ..training import train

    ref = reference_logps(rm, list(chosen) + list(rejected) + list(heldout)) if rm.needs_reference() else None
    trajectory = [score(rm, heldout, ref_logps=ref).double().numpy()]
    steps = [0]

    def on_step(record):
        steps.append(int(record["step"]))
        trajectory.append(score(rm, heldout, ref_logps=ref).double().numpy())

    history = train(rm, chosen, rejected, config, reference_sequences=heldout, on_step=on_step, ref_logps=ref)
    return history, steps, np.stack(trajectory)
