"""Learning dynamics of reward models (Section 4.1, Appendix A.1) and the Theorem 2 simulation (Section 4.2).

One gradient step on a training example (x, y+, y-) changes the reward of an unseen pair (xb, yb) by
``Delta r = -eta <grad r(xb, yb), grad loss(x, y+, y-)> + O(eta^2)``. Under **Assumption 1** (hidden
representations fixed, only the EX-RM head u / the unembedding matrix U trained) the first-order term is:

* EX-RM, Eq. 4:   ``Delta r = <h_{xb,yb}, h_{x,y+} - h_{x,y-}> * eta * g``, with
  ``g = sigma(r(x,y-) - r(x,y+))``. The reward is linear in u, so this is exact (no O(eta^2) term).
* IM-RM, Eq. 5:   ``Delta r = (sum_{k,l} rho_{k,l}(y+) <h_{xb,yb<k}, h_{x,y+<l}>
  - sum_{k,l} rho_{k,l}(y-) <h_{xb,yb<k}, h_{x,y-<l}>) * eta * g * beta^2 + O(eta^2)`` with
  ``rho_{k,l}(v) = 1[yb_k = v_l] - pi(yb_k | x, v_<l) - pi(v_l | xb, yb_<k) + <pi(.|xb, yb_<k), pi(.|x, v_<l)>``
  ``= <e_{yb_k} - pi(.|xb, yb_<k), e_{v_l} - pi(.|x, v_<l)>`` in [-2, 2] (:func:`rho`).
* EX-GRM, Eq. 8:  ``Delta r = pi(Yes|I[xb,yb]) (gamma(y+) <h_{I[xb,yb]}, h_{I[x,y+]}> + gamma(y-) <h_{I[xb,yb]},
  h_{I[x,y-]}>) * eta + O(eta^2)``, ``gamma(y+) = <e_Yes - pi(.|I[xb,yb]), e_Yes - pi(.|I[x,y+])>``,
  ``gamma(y-) = <e_Yes - pi(.|I[xb,yb]), e_No - pi(.|I[x,y-])>``.

Here h_{x,y<k} is the last-layer hidden state (after the final norm) at the position that predicts the
response token y_k, and logits are ``U h``. The *measured* side takes one plain gradient-descent step
(not Adam: the equations are about gradient descent) on a float64 copy of u or U, with the hidden states
held fixed (:func:`measure_fixed_hidden`). Models such as SmolLM2 tie U to the input embedding matrix;
updating the tied matrix in the model would also move the input embeddings and hence the hidden states,
breaking Assumption 1. The copy of U here is used only as the output layer, which is exactly the untied
model of the assumption. :func:`measure_all_parameters` instead takes the step on every parameter of a
real reward model (tied weights and all), to see how far the fixed-representation picture carries.

Theorem 2 (:func:`simulate_theorem2`): fixed hidden states, one-token responses, full-batch gradient
descent on u and on U with ``eta < 2 B^-2 min(beta^-2, 1)``. Training accuracy goes to 1 for both; the
IM-RM's rows of unseen tokens get exactly zero gradient, so their rewards stay exactly tied (accuracy 1/2
at every step); the EX-RM's head converges in direction to the max-margin separator u* of Eq. 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import collate
from ..formatting import Encoded
from .maxmargin import max_margin_separator, separator_accuracy
from ..rewards import backbone_hidden
from ..scoring import reference_logps, score


# ------------------------------------------------------------------ hidden states and distributions

def unembedding(lm) -> torch.Tensor:
    """The output (unembedding) matrix U [V, D] of a causal LM as float64 (a detached copy).

    Logits must be exactly ``U h``: a bias or Gemma-2's logit soft-capping would change Eqs. 5 and 8,
    so they are refused with a clear error."""
    head = lm.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("the output layer has a bias; Eqs. 5 and 8 assume logits = U h")
    if getattr(lm.config, "final_logit_softcapping", None):
        raise ValueError("final_logit_softcapping is set (Gemma-2); Eqs. 5 and 8 assume logits = U h")
    return head.weight.detach().to(torch.float64).clone()


@torch.no_grad()
def sequence_hidden(lm, encoded: Encoded) -> torch.Tensor:
    """Last-layer hidden states [T, D] (float64) of one sequence, eval mode, no padding."""
    was_training = lm.training
    lm.eval()
    batch = collate([encoded], pad_id=0).to(next(lm.parameters()).device)
    hidden = backbone_hidden(lm, batch)[0].to(torch.float64).cpu()
    lm.train(was_training)
    return hidden


@dataclass
class ResponseStates:
    """One prompt-response sequence seen by Eq. 5: response tokens y_k [K], the hidden states
    h_{x,y<k} [K, D] that predict them, and h_{x,y} [D], the last token's state (Eq. 1's feature)."""

    tokens: torch.Tensor
    hidden: torch.Tensor
    last: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]


def response_states(lm, encoded: Encoded) -> ResponseStates:
    """Hidden states of a real model for one (x, y): position t-1 predicts the token at position t."""
    if encoded.response_start < 1 or len(encoded) <= encoded.response_start:
        raise ValueError("need a non-empty prompt and a non-empty response")
    hidden = sequence_hidden(lm, encoded)
    start = encoded.response_start
    tokens = torch.tensor(encoded.input_ids[start:], dtype=torch.long)
    return ResponseStates(tokens, hidden[start - 1:len(encoded) - 1], hidden[-1])


def next_token_probs(hidden: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """pi(.|context) = softmax(U h) for hidden states [M, D] -> [M, V], float64."""
    return torch.softmax(hidden.to(torch.float64) @ U.T, dim=-1)


# ------------------------------------------------------------------ rho (Eq. 5)

def rho(probs_bar: torch.Tensor, tokens_bar: torch.Tensor, probs_v: torch.Tensor,
        tokens_v: torch.Tensor) -> torch.Tensor:
    """The coefficients rho_{k,l}(v) of Eq. 5 as a [K, L] matrix.

    ``probs_bar[k] = pi(.|xb, yb_<k)`` [K, V], ``tokens_bar[k] = yb_k``; ``probs_v[l] = pi(.|x, v_<l)`` [L, V],
    ``tokens_v[l] = v_l``. ``rho = 1[yb_k = v_l] - pi(yb_k|x, v_<l) - pi(v_l|xb, yb_<k) + <pi_k, pi_l>``,
    the last term for all (k, l) at once as one matrix product."""
    if probs_bar.ndim != 2 or probs_v.ndim != 2 or probs_bar.shape[1] != probs_v.shape[1]:
        raise ValueError(f"need [K, V] and [L, V] distributions, got {tuple(probs_bar.shape)} and "
                         f"{tuple(probs_v.shape)}")
    if tokens_bar.shape != (probs_bar.shape[0],) or tokens_v.shape != (probs_v.shape[0],):
        raise ValueError("need one token per distribution row")
    same = (tokens_bar[:, None] == tokens_v[None, :]).to(probs_bar.dtype)
    return same - probs_v[:, tokens_bar].T - probs_bar[:, tokens_v] + probs_bar @ probs_v.T


def sigmoid(a: float) -> float:
    return float(torch.sigmoid(torch.tensor(a, dtype=torch.float64)))


# ------------------------------------------------------------------ predictions (Eqs. 4, 5, 8)

def predict_ex(h_bar: torch.Tensor, h_plus: torch.Tensor, h_minus: torch.Tensor, g: float, eta: float) -> float:
    """Eq. 4: <h_{xb,yb}, h_{x,y+} - h_{x,y-}> * eta * g."""
    return float(h_bar.double() @ (h_plus.double() - h_minus.double())) * eta * g


@dataclass
class IMPrediction:
    """Eq. 5 split into its terms. ``plus``/``minus``: sum_{k,l} rho_{k,l}(v) <h_{xb,yb<k}, h_{x,v<l}> for
    v = y+, y-; ``same``/``different``: the part of ``plus - minus`` from (k, l) with yb_k = v_l and the rest.
    ``delta`` = (plus - minus) * eta * g * beta^2, the first-order change of the reward."""

    plus: float
    minus: float
    same: float
    different: float
    scale: float  # eta * g * beta^2

    @property
    def total(self) -> float:
        return self.plus - self.minus

    @property
    def delta(self) -> float:
        return self.total * self.scale


def rho_terms(bar: ResponseStates, v: ResponseStates, U: torch.Tensor):
    """(rho [K, L], inner [K, L] = <h_{xb,yb<k}, h_{x,v<l}>, same-token mask [K, L]) for one v."""
    r = rho(next_token_probs(bar.hidden, U), bar.tokens, next_token_probs(v.hidden, U), v.tokens)
    inner = bar.hidden.double() @ v.hidden.double().T
    same = bar.tokens[:, None] == v.tokens[None, :]
    return r, inner, same


def predict_im(bar: ResponseStates, plus: ResponseStates, minus: ResponseStates, U: torch.Tensor,
               g: float, beta: float, eta: float) -> IMPrediction:
    """Eq. 5 for an IM-RM whose output layer is U (float64 [V, D])."""
    sums, same_total, diff_total = {}, 0.0, 0.0
    for name, v, sign in (("plus", plus, 1.0), ("minus", minus, -1.0)):
        r, inner, same = rho_terms(bar, v, U)
        contrib = r * inner
        sums[name] = float(contrib.sum())
        same_total += sign * float(contrib[same].sum())
        diff_total += sign * float(contrib[~same].sum())
    return IMPrediction(sums["plus"], sums["minus"], same_total, diff_total, eta * g * beta ** 2)


def gamma_coefficients(p_bar: torch.Tensor, p_plus: torch.Tensor, p_minus: torch.Tensor, yes: int, no: int):
    """gamma(y+), gamma(y-) of Eq. 8 from the three next-token distributions [V] at the last input token."""
    e_bar = -p_bar.clone()
    e_bar[yes] += 1
    e_plus = -p_plus.clone()
    e_plus[yes] += 1
    e_minus = -p_minus.clone()
    e_minus[no] += 1
    return float(e_bar @ e_plus), float(e_bar @ e_minus)


def predict_grm(h_bar: torch.Tensor, h_plus: torch.Tensor, h_minus: torch.Tensor, U: torch.Tensor,
                yes: int, no: int, eta: float) -> float:
    """Eq. 8, with h the hidden states at the last token of I[xb,yb], I[x,y+], I[x,y-]."""
    p_bar, p_plus, p_minus = next_token_probs(torch.stack([h_bar, h_plus, h_minus]), U)
    g_plus, g_minus = gamma_coefficients(p_bar, p_plus, p_minus, yes, no)
    hb = h_bar.double()
    return float(p_bar[yes]) * (g_plus * float(hb @ h_plus.double()) + g_minus * float(hb @ h_minus.double())) * eta


# ------------------------------------------------------------------ measured: one GD step, hidden fixed

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
    was_training = rm.training
    rm.eval()
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
        rm.train(was_training)
    return (after - before).double().numpy()


# ------------------------------------------------------------------ Theorem 2

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
    was_training = lm.training
    lm.eval()
    with torch.no_grad():
        for start in range(0, len(unique), batch_size):
            chunk = unique[start:start + batch_size]
            batch = collate(chunk, pad_id=0).to(next(lm.parameters()).device)  # right padding, causal
            hidden = backbone_hidden(lm, batch).to(torch.float64).cpu()
            ends = batch.last_index.cpu()
            for i, seq in enumerate(chunk):
                last[seq], prompt[seq] = hidden[i, ends[i]], hidden[i, ends[i] - 1]
    lm.train(was_training)
    return OneTokenPairs(torch.stack([prompt[s] for s in wanted[0::2]]), torch.stack([last[s] for s in wanted[0::2]]),
                         torch.stack([last[s] for s in wanted[1::2]]),
                         torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long))


def _accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Definition 1 (ties 1/2)."""
    return float(((r_chosen > r_rejected).double() + 0.5 * (r_chosen == r_rejected).double()).mean())


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
            ex["train_accuracy"].append(_accuracy(margins, torch.zeros_like(margins)))
            m_eval = d_eval @ u
            ex["eval_accuracy"].append(_accuracy(m_eval, torch.zeros_like(m_eval)))
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
            im["train_accuracy"].append(_accuracy(r_plus.detach(), r_minus.detach()))
            im["eval_accuracy"].append(_accuracy(e_plus, e_minus))
            im["loss"].append(float(loss.detach()))
        if t < steps_im:
            (grad,) = torch.autograd.grad(loss, U)
            with torch.no_grad():
                U -= eta * grad
    with torch.no_grad():
        moved = (U - U0)[torch.tensor(unseen_eval, dtype=torch.long)].abs().max() if unseen_eval else torch.tensor(0.0)
    out["im_unseen_row_change"] = float(moved)
    return out


# ------------------------------------------------------------------ one evaluated pair vs one training example

@dataclass
class PairAnalysis:
    """Everything Eqs. 4 and 5 say about one evaluated pair (xb, yb) and one training example (x, y+, y-)
    at the current parameters: the response states, rho and hidden-state inner products for v = y+, y-
    ([K, L+], [K, L-]), the IM-RM prediction (:class:`IMPrediction`) and the EX-RM term
    ``<h_{xb,yb}, h_{x,y+} - h_{x,y-}>`` (Eq. 4 without ``eta * g``)."""

    bar: ResponseStates
    plus: ResponseStates
    minus: ResponseStates
    rho_plus: torch.Tensor
    rho_minus: torch.Tensor
    inner_plus: torch.Tensor
    inner_minus: torch.Tensor
    im: IMPrediction
    ex_term: float


def analyze_pair(lm, encode, U: torch.Tensor, train: tuple[str, str, str], evaluated: tuple[str, str],
                 beta: float, eta: float, g: float = 0.5) -> PairAnalysis:
    """``encode(prompt, response) -> Encoded`` (e.g. ``ChatFormatter(tok).encode``); ``train`` = (x, y+, y-),
    ``evaluated`` = (xb, yb). ``g = sigma(r(x,y-) - r(x,y+))`` is 1/2 at initialization, where the IM-RM's
    rewards are 0 (pi = pi_ref)."""
    x, y_plus, y_minus = train
    plus = response_states(lm, encode(x, y_plus))
    minus = response_states(lm, encode(x, y_minus))
    bar = response_states(lm, encode(*evaluated))
    rho_p, inner_p, _ = rho_terms(bar, plus, U)
    rho_m, inner_m, _ = rho_terms(bar, minus, U)
    im = predict_im(bar, plus, minus, U, g, beta, eta)
    ex_term = float(bar.last.double() @ (plus.last.double() - minus.last.double()))
    return PairAnalysis(bar, plus, minus, rho_p, rho_m, inner_p, inner_m, im, ex_term)


# ------------------------------------------------------------------ rewards of held-out responses during training

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


def same_token_sentence(same: float, different: float) -> str:
    """Whether the same-token cells of Eq. 5 dominate for a response that repeats the training text
    (footnote 2: rho_{k,l} > 0 when the evaluated token equals the trained one), stated from the numbers."""
    parts = f"same-token part {same:.4g} vs different-token part {different:.4g}"
    if abs(same) > abs(different):
        return (f"For the evaluated response that repeats the training chosen text, the same-token cells carry Eq. 5 "
                f"({parts}), as footnote 2 leads one to expect.")
    return (f"For the evaluated response that repeats the training chosen text, the same-token cells do **not** carry "
            f"Eq. 5 here ({parts}): the different-token cells are larger in absolute value, unlike what footnote 2 "
            "suggests.")
