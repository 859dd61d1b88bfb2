"""rmlib.analysis.dynamics: rho (Eq. 5), predicted vs measured reward changes (Eqs. 4, 5, 8), Theorem 2."""

import numpy as np
import pytest
import torch

from rmlib.analysis import dynamics as dyn
from rmlib.formatting import ChatFormatter, grm_prompt
from rmlib.rewards import build_reward_model
from rmlib.scoring import reference_logps, score


@pytest.fixture(scope="module")
def states(tiny):
    lm, tok = tiny
    fmt = ChatFormatter(tok)
    bar = dyn.response_states(lm, fmt.encode("Is it sunny today?", "My response would be certainly"))
    plus = dyn.response_states(lm, fmt.encode("Do you like tea?", "A truthful reply is yes"))
    minus = dyn.response_states(lm, fmt.encode("Do you like tea?", "My judgement: no"))
    return bar, plus, minus, dyn.unembedding(lm)


def test_rho_matches_loop_and_inner_product_identity(states):
    bar, plus, _, U = states
    p_bar, p_v = dyn.next_token_probs(bar.hidden, U), dyn.next_token_probs(plus.hidden, U)
    fast = dyn.rho(p_bar, bar.tokens, p_v, plus.tokens)
    assert fast.shape == (len(bar), len(plus))
    loop = torch.empty_like(fast)
    for k in range(len(bar)):
        for l in range(len(plus)):
            yk, vl = int(bar.tokens[k]), int(plus.tokens[l])
            loop[k, l] = float(yk == vl) - p_v[l, yk] - p_bar[k, vl] + p_bar[k] @ p_v[l]
    torch.testing.assert_close(fast, loop, rtol=0, atol=1e-12)
    e_bar = torch.nn.functional.one_hot(bar.tokens, U.shape[0]).double() - p_bar
    e_v = torch.nn.functional.one_hot(plus.tokens, U.shape[0]).double() - p_v
    torch.testing.assert_close(fast, e_bar @ e_v.T, rtol=0, atol=1e-12)
    assert fast.abs().max() <= 2
    # the responses share tokens (the chat template's end of turn): there rho > 0 (footnote 2)
    same = bar.tokens[:, None] == plus.tokens[None, :]
    assert same.any() and (fast[same] > 0).all()


def test_rho_rejects_mismatched_shapes(states):
    bar, plus, _, U = states
    p_bar = dyn.next_token_probs(bar.hidden, U)
    with pytest.raises(ValueError, match="distributions"):
        dyn.rho(p_bar, bar.tokens, p_bar[:, :10], plus.tokens[:1])
    with pytest.raises(ValueError, match="one token per"):
        dyn.rho(p_bar, bar.tokens[:-1], p_bar, bar.tokens)


def test_rho_saturates_at_extremes():
    # one-hot next-token distributions on different tokens: rho = 1[same] - ... reaches the bounds
    p = torch.eye(3, dtype=torch.float64)
    r = dyn.rho(p[[0]], torch.tensor([1]), p[[1]], torch.tensor([0]))  # pi_k puts mass on v_l, pi_l on yb_k
    assert float(r) == -2.0
    r_same = dyn.rho(p[[0]], torch.tensor([1]), p[[0]], torch.tensor([1]))
    assert float(r_same) == 2.0


def test_ex_prediction_is_exact_under_assumption_1(states):
    bar, plus, minus, _ = states
    u = torch.randn(bar.last.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = dyn.measure_fixed_hidden("ex", u, bar, plus, minus, etas=[1e-2, 1e-3])
    for row in rows:
        assert row["predicted"] != 0
        assert abs(row["error"]) <= 1e-9 * abs(row["predicted"])


@pytest.mark.parametrize("kind", ["im", "grm"])
def test_im_and_grm_error_shrinks_like_eta_squared(tiny, states, kind):
    lm, tok = tiny
    bar, plus, minus, U = states
    etas = [4e-3, 2e-3, 1e-3, 5e-4]
    if kind == "im":  # a sharper random model (20 U), so that the second-order term is well above rounding
        rows = dyn.measure_fixed_hidden("im", 20 * U, bar, plus, minus, etas=etas, beta=1.0)
    else:
        fmt = ChatFormatter(tok)
        h = [dyn.sequence_hidden(lm, fmt.encode_prompt(grm_prompt(x, y)))[-1] for x, y in
             [("Is it sunny?", "Certainly"), ("Do you like tea?", "Yes"), ("Do you like tea?", "No")]]
        yes, no = (dyn.single_token_id(tok, w) for w in ("Yes", "No"))
        rows = dyn.measure_fixed_hidden("grm", U, *h, etas=etas, yes=yes, no=no)
    for row in rows:  # first order agreement
        assert abs(row["error"]) < 0.2 * abs(row["predicted"])
    assert 1.7 < dyn.error_order(rows) < 2.3


def test_measure_fixed_hidden_rejects_unknown_kind(states):
    bar, plus, minus, U = states
    with pytest.raises(ValueError, match="kind"):
        dyn.measure_fixed_hidden("dpo", U, bar, plus, minus, etas=[1e-3])
    with pytest.raises(ValueError, match="yes and no"):
        dyn.measure_fixed_hidden("grm", U, bar.last, plus.last, minus.last, etas=[1e-3])


def test_all_parameter_step_restores_the_model(fresh_tiny):
    lm, tok = fresh_tiny
    rm = build_reward_model("im", lm, tok, beta=1.0)
    plus, minus = rm.encode("Do you like tea?", "Yes, a lot"), rm.encode("Do you like tea?", "No")
    evaluated = [rm.encode("Do you like coffee?", "Yes, a lot"), rm.encode("Do you like coffee?", "Never")]
    ref_logps = reference_logps(rm, evaluated)
    before = score(rm, evaluated, ref_logps=ref_logps)
    small = dyn.measure_all_parameters(rm, plus, minus, evaluated, eta=1e-5)
    large = dyn.measure_all_parameters(rm, plus, minus, evaluated, eta=1e-4)
    torch.testing.assert_close(score(rm, evaluated, ref_logps=ref_logps), before, rtol=0, atol=0)
    assert np.all(np.isfinite(large)) and np.abs(large).max() > 0
    # first order in eta: 10x the step gives about 10x the change
    np.testing.assert_allclose(large, 10 * small, rtol=0.25)


def _synthetic_pairs(h_prompt, h_chosen, h_rejected, chosen, rejected):
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    return dyn.OneTokenPairs(t(h_prompt), t(h_chosen), t(h_rejected), torch.tensor(chosen), torch.tensor(rejected))


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
    B, bound = dyn.theorem2_eta_bound(train, beta=1.0)
    out = dyn.simulate_theorem2(train, evaluation, U0, u0, beta=1.0, eta=0.9 * bound,
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
    yes, sure, no, never, certainly, nope = (dyn.single_token_id(tok, w) for w in
                                             ("Yes", "Sure", "No", "Never", "Certainly", "Not"))
    prompts = [fmt.encode_prompt(f"Is the following statement something you would say? I like item {i}.")
               for i in range(8)]
    train = dyn.one_token_pairs(lm, prompts[:6], [yes, sure] * 3, [no, never, never, no, no, never])
    evaluation = dyn.one_token_pairs(lm, prompts[6:], [certainly] * 2, [nope] * 2)
    U0 = dyn.unembedding(lm)
    u0 = torch.zeros(U0.shape[1], dtype=torch.float64)
    B, bound = dyn.theorem2_eta_bound(train, beta=1.0)
    with pytest.raises(ValueError, match="bound"):
        dyn.simulate_theorem2(train, evaluation, U0, u0, beta=1.0, eta=1.01 * bound, steps_ex=1, steps_im=1)
    out = dyn.simulate_theorem2(train, evaluation, U0, u0, beta=1.0, eta=0.9 * bound, steps_ex=200, steps_im=20)
    assert out["im"]["eval_accuracy"] == [0.5] * 21
    assert out["im_unseen_row_change"] == 0.0
    assert out["im"]["train_accuracy"][-1] == 1.0 and out["ex"]["train_accuracy"][-1] == 1.0
    with pytest.raises(ValueError, match="must not appear"):
        dyn.simulate_theorem2(train, train, U0, u0, beta=1.0, eta=0.5 * bound, steps_ex=1, steps_im=1)


def test_single_token_check(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="one-token"):
        dyn.single_token_id(tok, "Absolutely")


def test_same_token_sentence_follows_the_numbers():
    from rmlib.analysis.dynamics import same_token_sentence

    assert "carry Eq. 5 (same-token part 2 vs different-token part -0.5)" in same_token_sentence(2.0, -0.5)
    assert "do **not** carry" in same_token_sentence(0.1, -0.5)
