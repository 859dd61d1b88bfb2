"""rmlib.analysis.theorem2: one-token pairs, the step-size bound and the simulation of Theorem 2."""

import numpy as np
import pytest
import torch

from rmlib.analysis import dynamics as dyn
from rmlib.analysis import theorem2 as thm
from rmlib.formatting import ChatFormatter


def _synthetic_pairs(h_prompt, h_chosen, h_rejected, chosen, rejected):
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    return thm.OneTokenPairs(t(h_prompt), t(h_chosen), t(h_rejected), torch.tensor(chosen), torch.tensor(rejected))


def test_theorem2_constructed_case():
    """Small constructed case: 2-d hidden states, 6-token vocabulary. Train on tokens 0 (chosen) and
    1 (rejected); evaluate on the unseen tokens 2..5. The EX-RM reaches the accuracy of u*; the
    IM-RM stays at exactly 1/2 on unseen tokens at every step."""
    rng = np.random.default_rng(0)
    prompts = np.abs(rng.normal(size=(4, 2))) + 0.2  # in one half-plane: the IM-RM can fit (Assumption 3)
    train = _synthetic_pairs(prompts, prompts + [1.0, 0.3], prompts + [-1.0, 0.1], [0] * 4, [1] * 4)
    e_prompts = rng.normal(size=(6, 2))
    offsets_plus = np.array([[0.8, -0.9], [0.6, 0.9], [-0.2, 0.9], [0.9, 0.0], [0.5, -0.4], [0.7, 0.2]])
    offsets_minus = np.array([[-0.8, 0.5], [-0.6, -0.9], [0.1, -0.9], [-0.7, 0.3], [-0.5, 0.9], [-0.4, 0.0]])
    evaluation = _synthetic_pairs(e_prompts, e_prompts + offsets_plus, e_prompts + offsets_minus,
                                  [2, 3, 2, 3, 4, 4], [5, 5, 4, 5, 5, 5])
    U0 = torch.tensor(rng.normal(size=(6, 2)))
    u0 = torch.tensor([0.0, -1.0], dtype=torch.float64)  # starts far from u*
    B, bound = thm.theorem2_eta_bound(train, beta=1.0)
    out = thm.simulate_theorem2(train, evaluation, U0, u0, beta=1.0, eta=0.9 * bound,
                                steps_ex=20000, steps_im=300, record=[0, 1, 10, 100, 300, 20000])
    assert out["ex"]["train_accuracy"][-1] == 1.0 and out["im"]["train_accuracy"][-1] == 1.0
    assert out["im"]["eval_accuracy"] == [0.5] * len(out["im"]["step"])
    assert out["im_unseen_row_change"] == 0.0
    cosine = out["ex"]["cosine"]  # converges in direction to u* (slowly: like 1 / log t)
    assert cosine[-1] > 0.95 and cosine[-1] > cosine[-2] > cosine[0]
    assert out["u_star_eval_accuracy"] > 0.5
    assert out["ex"]["eval_accuracy"][-1] >= out["u_star_eval_accuracy"]
    assert out["ex"]["eval_accuracy"][0] < out["u_star_eval_accuracy"]  # it was learned, not given


def test_theorem2_real_hidden_states(tiny):
    lm, tok = tiny
    fmt = ChatFormatter(tok)
    yes, sure, no, never, certainly, nope = (thm.single_token_id(tok, w) for w in
                                             ("Yes", "Sure", "No", "Never", "Certainly", "Not"))
    prompts = [fmt.encode_prompt(f"Is the following statement something you would say? I like item {i}.")
               for i in range(8)]
    train = thm.one_token_pairs(lm, prompts[:6], [yes, sure] * 3, [no, never, never, no, no, never])
    evaluation = thm.one_token_pairs(lm, prompts[6:], [certainly] * 2, [nope] * 2)
    U0 = dyn.unembedding(lm)
    u0 = torch.zeros(U0.shape[1], dtype=torch.float64)
    B, bound = thm.theorem2_eta_bound(train, beta=1.0)
    with pytest.raises(ValueError, match="bound"):
        thm.simulate_theorem2(train, evaluation, U0, u0, beta=1.0, eta=1.01 * bound, steps_ex=1, steps_im=1)
    out = thm.simulate_theorem2(train, evaluation, U0, u0, beta=1.0, eta=0.9 * bound, steps_ex=200, steps_im=20)
    assert out["im"]["eval_accuracy"] == [0.5] * 21
    assert out["im_unseen_row_change"] == 0.0
    assert out["im"]["train_accuracy"][-1] == 1.0 and out["ex"]["train_accuracy"][-1] == 1.0
    with pytest.raises(ValueError, match="must not appear"):
        thm.simulate_theorem2(train, train, U0, u0, beta=1.0, eta=0.5 * bound, steps_ex=1, steps_im=1)


def test_single_token_check(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="one-token"):
        thm.single_token_id(tok, "Absolutely")
