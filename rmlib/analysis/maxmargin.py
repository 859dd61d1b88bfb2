"""The max-margin separator of Eq. 6, solved as a convex quadratic program (cvxpy, CLARABEL solver):

    u* = argmin_u ||u||^2   s.t.   <u, h_{x,y+} - h_{x,y-}> >= 1   for every training pair.

Theorem 2: with fixed hidden representations, gradient descent on an EX-RM's head converges in direction
to u*, so the EX-RM eventually ranks correctly every evaluation pair that u* ranks correctly.

Footnote 3 (Section 5.1) applies it to the initial model: :func:`hidden_differences` gives h+ - h- of an
EX-RM's features, :func:`separator_fraction` the share of evaluation pairs that u* ranks correctly.
"""

from __future__ import annotations

import numpy as np
from ..models import eval_mode


class NotSeparable(ValueError):
    """No u satisfies the margin constraints: the training pairs are not linearly separable."""


def max_margin_separator(differences: np.ndarray) -> np.ndarray:
    """``differences``: [n, D] rows h_{x,y+} - h_{x,y-}. Returns u* in R^D (float64).

    The problem is solved in its dual-friendly form over the span of the rows when D > n (u* lies in
    that span), which keeps it small for D in the thousands."""
    import cvxpy as cp

    diffs = np.asarray(differences, dtype=np.float64)
    if diffs.ndim != 2 or diffs.shape[0] == 0:
        raise ValueError(f"need a non-empty [n, D] array of differences, got shape {diffs.shape}")
    scale = np.abs(diffs).max() or 1.0
    scaled = diffs / scale  # better conditioned; u* scales by 1/scale
    n, d = scaled.shape
    if d > n:
        # u = scaled.T @ a, so ||u||^2 = a^T G a and constraints G a >= 1, with G the Gram matrix.
        q, r = np.linalg.qr(scaled.T)  # scaled.T = q r, u = q z
        z = cp.Variable(q.shape[1])
        problem = cp.Problem(cp.Minimize(cp.sum_squares(z)), [r.T @ z >= 1])
        _solve(problem)
        u = q @ z.value
    else:
        u_var = cp.Variable(d)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(u_var)), [scaled @ u_var >= 1])
        _solve(problem)
        u = u_var.value
    return u / scale


def _solve(problem) -> None:
    import cvxpy as cp

    problem.solve(solver=cp.CLARABEL)
    if problem.status in ("infeasible", "infeasible_inaccurate"):
        raise NotSeparable("the training pairs are not linearly separable in the hidden-representation space")
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"max-margin QP ended with status {problem.status!r}")


def separator_accuracy(u: np.ndarray, differences: np.ndarray) -> float:
    """Share of pairs with <u, h+ - h-> > 0 (the lower bound of Theorem 2 on EX-RM accuracy)."""
    return float(np.mean(np.asarray(differences, dtype=np.float64) @ u > 0))


def hidden_differences(rm, rows: list[dict], batch_size: int = 16) -> np.ndarray:
    """h_{x,y+} - h_{x,y-} [n, D] (fp64) for every row, with ``rm.features`` (an EX-RM: the hidden state
    of the last token, Eq. 1). Each distinct sequence is computed once."""
    import torch

    sequences = [rm.encode(r["prompt"], r[key]) for key in ("chosen", "rejected") for r in rows]
    unique = sorted(set(sequences), key=len)
    feats = {}
    with eval_mode(rm):
        with torch.no_grad():
            for start in range(0, len(unique), batch_size):
                chunk = unique[start:start + batch_size]
                out = rm.features(rm.collate(chunk).to(rm.device)).double().cpu().numpy()
                feats.update(zip(chunk, out))
    h = np.stack([feats[s] for s in sequences])
    n = len(rows)
    return h[:n] - h[n:]


def separator_fraction(train_differences: np.ndarray, eval_differences: dict[str, np.ndarray]) -> dict:
    """Footnote 3: u* of Eq. 6 over the training differences, and per evaluation set the fraction of pairs
    with <u*, h+ - h-> > 0. Also the training margin check (every training pair has <u*, d> >= 1).
    Raises :class:`NotSeparable` when u* does not exist."""
    u = max_margin_separator(train_differences)
    margins = train_differences @ u
    return {"u_norm": float(np.linalg.norm(u)), "train_min_margin": float(margins.min()),
            "fractions": {name: separator_accuracy(u, d) for name, d in eval_differences.items()}}
