"""Theorem 2 (Section 4.2): one-token responses, fixed hidden states, gradient descent on u and on U.

Full-batch gradient descent on the EX-RM head u and on the IM-RM unembedding U with
``eta < 2 B^-2 min(beta^-2, 1)`` (:func:`theorem2_eta_bound`). Training accuracy goes to 1 for both; the
IM-RM's rows of unseen tokens get exactly zero gradient, so their rewards stay exactly tied (accuracy 1/2,
Definition 1, at every step); the EX-RM's head converges in direction to the max-margin separator u* of
Eq. 6 (:mod:`rmlib.analysis.maxmargin`). The hidden states come from a real model (:func:`one_token_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..batching import collate
from ..formatting import Encoded
from ..metrics import accuracy
from ..rewards import backbone_hidden
from ..models import eval_mode
from .maxmargin import max_margin_separator, separator_accuracy


@dataclass
class OneTokenPairs:
    """Preference pairs with one-token responses (Assumption 2), as fixed hidden states of a real model:
    ``h_prompt`` = h_x [N, D] (predicts the response token), ``h_chosen``/``h_rejected`` = h_{x,y+}, h_{x,y-}
    [N, D] (EX-RM features), ``chosen``/``rejected`` token ids [N]."""

    h_prompt: torch.Tensor
    h_chosen: torch.Tensor
    h_rejected: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor

    def __len__(self) -> int:
        return self.chosen.shape[0]


def single_token_id(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"response {word!r} is {len(ids)} tokens for this tokenizer ({ids}); Theorem 2 "
                         "needs one-token responses (Assumption 2)")
    return ids[0]


def one_token_pairs(lm, prompt_encodings: list[Encoded], chosen: list[int], rejected: list[int],
                    batch_size: int = 16) -> OneTokenPairs:
    """Hidden states for pairs (x_i, chosen[i], rejected[i]); x_i = prompt_encodings[i] (e.g.
    ``ChatFormatter.encode_prompt``), each response is the single token appended to the prompt (no
    end-of-turn token, so that responses have length one)."""
    if not (len(prompt_encodings) == len(chosen) == len(rejected)) or not chosen:
        raise ValueError("need equal, non-zero numbers of prompts, chosen and rejected tokens")
    if any(yc == yr for yc, yr in zip(chosen, rejected)):
        raise ValueError("a chosen and a rejected token are the same")
    wanted = [Encoded(tuple(enc.input_ids) + (int(token),), len(enc.input_ids))
              for enc, yc, yr in zip(prompt_encodings, chosen, rejected) for token in (yc, yr)]
    unique = list(dict.fromkeys(wanted))  # a prompt evaluated with several token pairs is run once per token
    last, prompt = {}, {}
    with eval_mode(lm):
        with torch.no_grad():
            for start in range(0, len(unique), batch_size):
                chunk = unique[start:start + batch_size]
                batch = collate(chunk, pad_id=0).to(next(lm.parameters()).device)  # right padding, causal
                hidden = backbone_hidden(lm, batch).to(torch.float64).cpu()
                ends = batch.last_index.cpu()
                for i, seq in enumerate(chunk):
                    last[seq], prompt[seq] = hidden[i, ends[i]], hidden[i, ends[i] - 1]
    return OneTokenPairs(torch.stack([prompt[s] for s in wanted[0::2]]), torch.stack([last[s] for s in wanted[0::2]]),
                         torch.stack([last[s] for s in wanted[1::2]]),
                         torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long))


def theorem2_eta_bound(train: OneTokenPairs, beta: float) -> tuple[float, float]:
    """(B, 2 B^-2 min(beta^-2, 1)) with B the largest norm of h_x, h_{x,y+}, h_{x,y-} over the training set."""
    B = float(torch.cat([train.h_prompt, train.h_chosen, train.h_rejected]).double().norm(dim=1).max())
    return B, 2.0 / B ** 2 * min(beta ** -2, 1.0)


def simulate_theorem2(train: OneTokenPairs, evaluation: OneTokenPairs, U0: torch.Tensor, u0: torch.Tensor,
                      beta: float, eta: float, steps_ex: int, steps_im: int, record: list[int] | None = None) -> dict:
    """Full-batch gradient descent on the EX-RM head u and on the IM-RM unembedding U (Theorem 2).

    Losses are Eq. 3 averaged over the training pairs, computed in float64; the IM-RM's pi_ref is
    pi_{U0}. IM-RM rewards are ``beta * (ln pi_U(y|x) - ln pi_U0(y|x))``, evaluated as
    ``beta * (<U_y - U0_y, h_x> - (lse(U h_x) - lse(U0 h_x)))`` (the same number, rearranged), so that
    when the row U_y of an unseen token is untouched, as the theorem proves, two unseen tokens get
    bit-identical rewards. ``eta`` must satisfy the theorem's bound (checked).

    Returns a dict with per-recorded-step lists for both models (train/eval accuracy, loss; for the
    EX-RM the cosine between u(t) and u*, and between u* and the part of u(t) in the span of the training
    differences -- the rest is u(0)'s and never changes, it only fades as ||u(t)|| grows like log t),
    u*, its evaluation accuracy, B, the bound, and the largest
    change of any unseen token's row of U (0.0 when the theorem's argument holds exactly)."""
    B, bound = theorem2_eta_bound(train, beta)
    if not 0 < eta < bound:
        raise ValueError(f"eta = {eta:g} violates Theorem 2's bound 0 < eta < 2 B^-2 min(beta^-2, 1) = {bound:g} "
                         f"(B = {B:.4g}, beta = {beta:g})")
    seen = set(train.chosen.tolist()) | set(train.rejected.tolist())
    unseen_eval = sorted((set(evaluation.chosen.tolist()) | set(evaluation.rejected.tolist())) - seen)
    if len(unseen_eval) < len(set(evaluation.chosen.tolist()) | set(evaluation.rejected.tolist())):
        raise ValueError("evaluation responses must not appear in the training set (Theorem 2)")
    # EX-RM: logistic regression on phi_EX = h_{x,y+} - h_{x,y-} (Eq. 10).
    d_train = (train.h_chosen - train.h_rejected).double()
    d_eval = (evaluation.h_chosen - evaluation.h_rejected).double()
    u_star = torch.from_numpy(max_margin_separator(d_train.numpy()))
    record = set(record) if record else set(range(max(steps_ex, steps_im) + 1))
    out = {"B": B, "eta_bound": bound, "eta": eta, "beta": beta, "u_star": u_star.numpy(),
           "u_star_eval_accuracy": separator_accuracy(u_star.numpy(), d_eval.numpy()),
           "u_star_train_accuracy": separator_accuracy(u_star.numpy(), d_train.numpy()),
           "ex": {k: [] for k in ("step", "train_accuracy", "eval_accuracy", "loss", "cosine", "cosine_span")},
           "im": {k: [] for k in ("step", "train_accuracy", "eval_accuracy", "loss")}}
    u = u0.detach().double().clone()
    span, _ = torch.linalg.qr(d_train.T)  # GD moves u only inside the span of the training differences
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    for t in range(steps_ex + 1):
        margins = d_train @ u
        if t in record:
            ex = out["ex"]
            ex["step"].append(t)
            ex["train_accuracy"].append(accuracy(margins.numpy(), torch.zeros_like(margins).numpy()))
            m_eval = d_eval @ u
            ex["eval_accuracy"].append(accuracy(m_eval.numpy(), torch.zeros_like(m_eval).numpy()))
            ex["loss"].append(float(F.softplus(-margins).mean()))
            ex["cosine"].append(cos(u, u_star))
            ex["cosine_span"].append(cos(span @ (span.T @ u), u_star))
        if t < steps_ex:  # grad of mean softplus(-<u, d_i>) = -mean sigma(-m_i) d_i
            u = u + eta * (torch.sigmoid(-margins)[:, None] * d_train).mean(0)
    out["u_final"] = u.numpy()

    # IM-RM: gradient descent on U through log-softmax (autograd), one-token responses.
    U0 = U0.detach().double()
    U = U0.clone().requires_grad_(True)
    h_train, h_eval = train.h_prompt.double(), evaluation.h_prompt.double()
    lse0_train = torch.logsumexp(h_train @ U0.T, dim=-1)
    lse0_eval = torch.logsumexp(h_eval @ U0.T, dim=-1)

    def im_rewards(Ut, h, chosen, rejected, lse0):
        common = torch.logsumexp(h @ Ut.T, dim=-1) - lse0  # ln Z_t(x) - ln Z_0(x), shared by y+ and y-
        r_plus = beta * (((Ut[chosen] - U0[chosen]) * h).sum(-1) - common)
        r_minus = beta * (((Ut[rejected] - U0[rejected]) * h).sum(-1) - common)
        return r_plus, r_minus

    for t in range(steps_im + 1):
        r_plus, r_minus = im_rewards(U, h_train, train.chosen, train.rejected, lse0_train)
        loss = F.softplus(-(r_plus - r_minus)).mean()
        if t in record:
            im = out["im"]
            with torch.no_grad():
                e_plus, e_minus = im_rewards(U, h_eval, evaluation.chosen, evaluation.rejected, lse0_eval)
            im["step"].append(t)
            im["train_accuracy"].append(accuracy(r_plus.detach().numpy(), r_minus.detach().numpy()))
            im["eval_accuracy"].append(accuracy(e_plus.numpy(), e_minus.numpy()))
            im["loss"].append(float(loss.detach()))
        if t < steps_im:
            (grad,) = torch.autograd.grad(loss, U)
            with torch.no_grad():
                U -= eta * grad
    with torch.no_grad():
        moved = (U - U0)[torch.tensor(unseen_eval, dtype=torch.long)].abs().max() if unseen_eval else torch.tensor(0.0)
    out["im_unseen_row_change"] = float(moved)
    return out
