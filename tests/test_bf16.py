"""bf16: rewards and log-probs are accumulated in fp32, and training keeps fp32 master weights.

Rewards are checked on CPU two ways: a model whose weights are bf16 (dtype="bfloat16", inference only)
and an fp32 model under bf16 autocast (precision "bf16-mixed", accelerate's mixed_precision="bf16"). A
sum of hundreds of token log-probs of about -10 each accumulated in bf16 would be off by whole units (bf16
keeps 8 bits of mantissa: spacing 16 at 3000); in fp32 it agrees with a float64 sum to ~1e-6 relative.

Training: at the paper's lr 1e-6, bf16-mixed moves every weight that has a gradient, while plain Adam on
bf16 weights moves almost none (why rmlib refuses it). bf16 compute is slow on CPUs without native bf16
(AVX2: ~1 GFLOP/s), so these run on the tiny model and three short pairs."""

import contextlib
import math

import pytest
import torch

from rmlib.models import load_model
from rmlib.precision import PrecisionError
from rmlib.rewards import build_reward_model, response_token_logprobs, sequence_logprobs
from rmlib.runconfig import RunConfig
from rmlib.scoring import encode_pairs, reference_logps
from rmlib.training import make_accelerator, train

LONG = "alpha beta gamma delta epsilon zeta eta theta " * 30  # ~240 response tokens


def _rm_and_batch(rm_type, lm, tok):
    rm = build_reward_model(rm_type, lm, tok, seed=0)
    sequences = [rm.encode("Recite.", LONG), rm.encode("Say hi.", "Hi!")]
    ref_logps = reference_logps(rm, sequences) if rm.needs_reference() else None
    return rm, rm.collate(sequences, ref_logps=ref_logps)


@pytest.fixture(scope="module")
def bf16_model():
    return load_model("tiny-random", dtype="bfloat16", seed=0)


@pytest.mark.parametrize("setting", ["bf16 weights", "bf16 autocast"])
def test_sequence_logprobs_are_summed_in_fp32(setting, bf16_model, tiny):
    lm, tok = bf16_model if setting == "bf16 weights" else tiny
    assert lm.dtype == (torch.bfloat16 if setting == "bf16 weights" else torch.float32)
    _, batch = _rm_and_batch("im", lm, tok)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if setting == "bf16 autocast" else contextlib.nullcontext()
    with torch.no_grad(), context:
        token_logps, rows = response_token_logprobs(lm, batch)
        sums = sequence_logprobs(lm, batch)
    assert token_logps.dtype == torch.float32 and sums.dtype == torch.float32
    exact = torch.zeros(2, dtype=torch.float64).index_add(0, rows, token_logps.double())
    assert int((rows == 0).sum()) > 200 and float(exact[0]) < -1000  # a long, large-magnitude sum
    torch.testing.assert_close(sums.double(), exact, rtol=1e-5, atol=1e-5)  # bf16 spacing here: 16


@pytest.mark.parametrize("rm_type", ["ex", "im", "grm"])
def test_rewards_are_fp32_with_bf16_weights(rm_type, bf16_model):
    rm, batch = _rm_and_batch(rm_type, *bf16_model)
    with torch.no_grad():
        rewards = rm.rewards_from_outputs(rm(batch))
    assert rewards.dtype == torch.float32
    if rm_type == "ex":
        assert rm.head.weight.dtype == torch.float32  # the head stays fp32 on a bf16 backbone


@pytest.mark.parametrize("rm_type", ["ex", "im", "grm"])
def test_rewards_are_fp32_under_bf16_autocast(rm_type, tiny):
    rm, batch = _rm_and_batch(rm_type, *tiny)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        rewards = rm.rewards_from_outputs(rm(batch))
    assert rewards.dtype == torch.float32


PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris is the capital of France.",
     "rejected": "I think it is Lyon, but I am not sure at all."},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
    {"prompt": "Add 2 and 3.", "chosen": "2 + 3 = 5", "rejected": "2 + 3 = 6, obviously, since addition is hard."},
]
ONE_STEP = RunConfig(epochs=1, lr=1e-6, batch_size=3, micro_batch_size=3, max_steps=1, progress=False)


def _watch(rm) -> tuple[dict, dict]:
    """The initial parameters, and (filled during backward) which entries received a non-zero gradient."""
    before = {n: p.detach().clone() for n, p in rm.named_parameters()}
    nonzero = {}
    for name, p in rm.named_parameters():
        p.register_post_accumulate_grad_hook(
            lambda p, name=name: nonzero.__setitem__(name, nonzero.get(name, False) | (p.grad != 0)))
    return before, nonzero


def _changed_fraction(rm, before: dict, nonzero: dict) -> float:
    moved = sum(int(((p.detach() != before[n]) & nonzero[n]).sum()) for n, p in rm.named_parameters())
    return moved / sum(int(m.sum()) for m in nonzero.values())


def _one_step(rm_type: str, precision: str):
    lm, tok = load_model("tiny-random", dtype="float32", seed=0)
    rm = build_reward_model(rm_type, lm, tok, seed=0)
    chosen, rejected = encode_pairs(rm, PAIRS)
    before, nonzero = _watch(rm)
    history = train(rm, chosen, rejected, ONE_STEP, accelerator=make_accelerator(precision))
    return rm, history.steps[0]["loss"], _changed_fraction(rm, before, nonzero)


@pytest.mark.parametrize("rm_type", ["ex", "im"])
def test_mixed_precision_updates_weights(rm_type):
    """bf16-mixed at lr 1e-6: after one step >= 99% of the weights with a gradient moved (fp32 masters),
    and the loss is the fp32 loss within bf16 resolution (2^-8 relative)."""
    rm, loss_mixed, changed = _one_step(rm_type, "bf16-mixed")
    assert all(p.dtype == torch.float32 for p in rm.parameters())
    assert changed >= 0.99, changed
    _, loss_fp32, changed_fp32 = _one_step(rm_type, "fp32")
    assert changed_fp32 >= 0.99
    assert loss_mixed == pytest.approx(loss_fp32, rel=2 ** -8)
    if rm_type == "im":  # reference and policy under the same autocast: the implicit reward starts at 0
        assert loss_mixed == pytest.approx(math.log(2), abs=1e-6)


def test_pure_bf16_weights_do_not_train_and_are_refused():
    """The same step on bf16 weights with plain Adam: Adam's first update is lr * sign(grad) = 1e-6, below
    half the bf16 spacing of almost every weight (2^-8 relative: 7.8e-5 at |w| = 0.02), so most weights
    do not change. rmlib.training.train refuses such parameters, naming that smallest update."""
    lm, tok = load_model("tiny-random", dtype="bfloat16", seed=0)
    rm = build_reward_model("im", lm, tok, seed=0)
    chosen, rejected = encode_pairs(rm, PAIRS)
    with pytest.raises(PrecisionError, match=r"2\^-8 = 0\.0039.*7\.8e-05.*bf16-mixed"):
        train(rm, chosen, rejected, ONE_STEP)
    ref_logps = reference_logps(rm, chosen + rejected)
    before, nonzero = _watch(rm)
    optimizer = torch.optim.Adam(rm.parameters(), lr=1e-6)
    batch = rm.collate_pairs(chosen, rejected, ref_logps)
    loss, _, _ = rm.loss(rm(batch))
    loss.backward()
    optimizer.step()
    changed = _changed_fraction(rm, before, nonzero)
    assert changed < 0.1, changed  # measured 1.5%: only weights within ~2.6e-4 of zero move


def test_reference_logprobs_use_the_training_precision():
    """The IM-RM's ln pi_ref computed by train() under bf16-mixed are bf16-autocast values, not fp32 ones."""
    refs = {}
    for precision in ("fp32", "bf16-mixed"):
        lm, tok = load_model("tiny-random", dtype="float32", seed=0)
        rm = build_reward_model("im", lm, tok, seed=0)
        chosen, rejected = encode_pairs(rm, PAIRS)
        refs[precision] = train(rm, chosen, rejected, ONE_STEP, accelerator=make_accelerator(precision)).ref_logps
    fp32, mixed = refs["fp32"], refs["bf16-mixed"]
    assert fp32.keys() == mixed.keys()
    assert max(abs(fp32[s] - mixed[s]) for s in fp32) > 1e-4  # bf16 rounding shows at this size
