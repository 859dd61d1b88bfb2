"""rmlib.analysis.dynamics and .gradient_step: rho (Eq. 5), predicted vs measured reward changes (Eqs. 4, 5, 8)."""

import numpy as np
import pytest
import torch

from rmlib.analysis import dynamics as dyn
from rmlib.analysis import gradient_step as step
from rmlib.analysis.theorem2 import single_token_id
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
    rows = step.measure_fixed_hidden("ex", u, bar, plus, minus, etas=[1e-2, 1e-3])
    for row in rows:
        assert row["predicted"] != 0
        assert abs(row["error"]) <= 1e-9 * abs(row["predicted"])


@pytest.mark.parametrize("kind", ["im", "grm"])
def test_im_and_grm_error_shrinks_like_eta_squared(tiny, states, kind):
    lm, tok = tiny
    bar, plus, minus, U = states
    etas = [4e-3, 2e-3, 1e-3, 5e-4]
    if kind == "im":  # a sharper random model (20 U), so that the second-order term is well above rounding
        rows = step.measure_fixed_hidden("im", 20 * U, bar, plus, minus, etas=etas, beta=1.0)
    else:
        fmt = ChatFormatter(tok)
        h = [dyn.sequence_hidden(lm, fmt.encode_prompt(grm_prompt(x, y)))[-1] for x, y in
             [("Is it sunny?", "Certainly"), ("Do you like tea?", "Yes"), ("Do you like tea?", "No")]]
        yes, no = (single_token_id(tok, w) for w in ("Yes", "No"))
        rows = step.measure_fixed_hidden("grm", U, *h, etas=etas, yes=yes, no=no)
    for row in rows:  # first order agreement
        assert abs(row["error"]) < 0.2 * abs(row["predicted"])
    assert 1.7 < step.error_order(rows) < 2.3


def test_measure_fixed_hidden_rejects_unknown_kind(states):
    bar, plus, minus, U = states
    with pytest.raises(ValueError, match="kind"):
        step.measure_fixed_hidden("dpo", U, bar, plus, minus, etas=[1e-3])
    with pytest.raises(ValueError, match="yes and no"):
        step.measure_fixed_hidden("grm", U, bar.last, plus.last, minus.last, etas=[1e-3])


def test_all_parameter_step_restores_the_model(fresh_tiny):
    lm, tok = fresh_tiny
    rm = build_reward_model("im", lm, tok, beta=1.0)
    plus, minus = rm.encode("Do you like tea?", "Yes, a lot"), rm.encode("Do you like tea?", "No")
    evaluated = [rm.encode("Do you like coffee?", "Yes, a lot"), rm.encode("Do you like coffee?", "Never")]
    ref_logps = reference_logps(rm, evaluated)
    before = score(rm, evaluated, ref_logps=ref_logps)
    small = step.measure_all_parameters(rm, plus, minus, evaluated, eta=1e-5)
    large = step.measure_all_parameters(rm, plus, minus, evaluated, eta=1e-4)
    torch.testing.assert_close(score(rm, evaluated, ref_logps=ref_logps), before, rtol=0, atol=0)
    assert np.all(np.isfinite(large)) and np.abs(large).max() > 0
    # first order in eta: 10x the step gives about 10x the change
    np.testing.assert_allclose(large, 10 * small, rtol=0.25)
