"""Measured reward changes after one plain gradient step, to check Eqs. 4, 5, 8 (Section 4.1, Appendix A.1).

* :func:`measure_fixed_hidden`: one gradient-descent step (not Adam: the equations are about gradient
  descent) on a float64 copy of the EX-RM head u or the unembedding U, with the hidden states held fixed
  (Assumption 1), against the first-order prediction of :mod:`rmlib.analysis.dynamics`. Models such as
  SmolLM2 tie U to the input embedding matrix; updating the tied matrix in the model would also move the
  input embeddings and hence the hidden states, breaking Assumption 1. The copy of U here is used only as
  the output layer, which is exactly the untied model of the assumption. The error is exactly 0 for the
  EX-RM (its reward is linear in u) and O(eta^2) for the IM-RM and EX-GRM (:func:`error_order`).
* :func:`measure_all_parameters`: the step on every parameter of a real reward model (tied weights and
  all), to see how far the fixed-representation picture carries.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..formatting import Encoded
from ..models import eval_mode
from ..scoring import reference_logps, score
from .dynamics import ResponseStates, predict_ex, predict_grm, predict_im, sigmoid


def _ex_reward(u, states: ResponseStates):
    return u @ states.last.double()


def _im_logp(U, states: ResponseStates):
    logp = torch.log_softmax(states.hidden.double() @ U.T, dim=-1)
    return logp.gather(1, states.tokens[:, None]).sum()


def _grm_logp(U, h: torch.Tensor, token: int):
    return torch.log_softmax(U @ h.double(), dim=-1)[token]


def measure_fixed_hidden(kind: str, theta0: torch.Tensor, bar, plus, minus, etas, beta: float = 0.01,
                         yes: int | None = None, no: int | None = None) -> list[dict]:
    """Predicted (Eq. 4/5/8) vs measured reward change of (xb, yb) after one GD step on (x, y+, y-).

    ``kind``: "ex" (theta0 = u [D]; bar/plus/minus are :class:`ResponseStates`, their ``last`` is used),
    "im" (theta0 = U [V, D]; ResponseStates) or "grm" (theta0 = U; bar/plus/minus are hidden states [D]
    at the last token of I[., .], and ``yes``/``no`` the token ids). The step is
    ``theta1 = theta0 - eta * grad loss(theta0)`` on a float64 copy; hidden states never change
    (Assumption 1). For the IM-RM pi_ref = pi_theta0, so the training pair's rewards start at 0.

    Returns one dict per eta: eta, predicted, measured, error = measured - predicted."""
    if kind not in ("ex", "im", "grm"):
        raise ValueError(f"kind must be 'ex', 'im' or 'grm', got {kind!r}")
    if kind == "grm" and (yes is None or no is None):
        raise ValueError("kind='grm' needs the token ids yes and no")
    theta = theta0.detach().to(torch.float64).clone().requires_grad_(True)
    with torch.no_grad():
        ref = {id(s): _im_logp(theta, s) for s in (bar, plus, minus)} if kind == "im" else {}

    def reward(params, s):
        if kind == "ex":
            return _ex_reward(params, s)
        if kind == "im":
            return beta * (_im_logp(params, s) - ref[id(s)])
        return _grm_logp(params, s, yes).exp()

    if kind == "grm":
        loss = -_grm_logp(theta, plus, yes) - _grm_logp(theta, minus, no)
    else:
        r_plus, r_minus = reward(theta, plus), reward(theta, minus)
        loss = -F.logsigmoid(r_plus - r_minus)
    (grad,) = torch.autograd.grad(loss, theta)
    with torch.no_grad():
        r0 = float(reward(theta, bar))
        if kind == "ex":  # first-order changes per unit step size
            per_eta = predict_ex(bar.last, plus.last, minus.last, sigmoid(float(r_minus - r_plus)), 1.0)
        elif kind == "im":
            per_eta = predict_im(bar, plus, minus, theta.detach(), sigmoid(float(r_minus - r_plus)), beta, 1.0).delta
        else:
            per_eta = predict_grm(bar, plus, minus, theta.detach(), yes, no, 1.0)
        rows = []
        for eta in etas:
            measured = float(reward(theta - eta * grad, bar)) - r0
            predicted = per_eta * eta
            rows.append({"eta": float(eta), "predicted": predicted, "measured": measured,
                         "error": measured - predicted})
    return rows


def error_order(rows: list[dict]) -> float:
    """Slope of log|error| against log(eta) (least squares): about 2 when the error is O(eta^2)."""
    etas = np.array([r["eta"] for r in rows])
    errors = np.abs(np.array([r["error"] for r in rows]))
    if len(rows) < 2 or np.any(errors == 0):
        return float("nan")
    return float(np.polyfit(np.log(etas), np.log(errors), 1)[0])


# ------------------------------------------------------------------ measured: one GD step on all parameters

def measure_all_parameters(rm, plus: Encoded, minus: Encoded, evaluated: list[Encoded], eta: float) -> np.ndarray:
    """Reward changes of the ``evaluated`` sequences after one plain gradient step
    ``theta <- theta - eta * grad loss(x, y+, y-)`` on **every** parameter of ``rm`` (backbone, tied
    embeddings, head); loss Eq. 3 (EX/IM) or Eq. 7 (EX-GRM). The parameters are restored afterwards.
    For an IM-RM the reference log-probs are the current model's, as at the start of training."""
    sequences = [plus, minus] + list(evaluated)
    ref = reference_logps(rm, sequences) if rm.needs_reference() else None
    before = score(rm, list(evaluated), ref_logps=ref)
    params = [p for p in rm.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    with eval_mode(rm):
        rm.zero_grad(set_to_none=True)
        batch = rm.collate([plus, minus], ref_logps=ref).to(rm.device)
        loss, _, _ = rm.loss(rm(batch))
        loss.backward()
        try:
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-eta)
            after = score(rm, list(evaluated), ref_logps=ref)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            rm.zero_grad(set_to_none=True)
    return (after - before).double().numpy()
