"""Rewards on GPUs in bf16: rewards and log-probs are accumulated in fp32.

Checked on CPU two ways: a model whose weights are bf16 (dtype="bfloat16", what dtype="auto" gives on a
bf16 GPU) and an fp32 model under bf16 autocast (what accelerate's mixed_precision="bf16" does). A sum of
hundreds of token log-probs of about -10 each accumulated in bf16 would be off by whole units (bf16 keeps
8 bits of mantissa: spacing 16 at 3000); in fp32 it agrees with a float64 sum to ~1e-6 relative."""

import contextlib

import pytest
import torch

from rmlib.models import load_model
from rmlib.rewards import build_reward_model, response_token_logprobs, sequence_logprobs

LONG = "alpha beta gamma delta epsilon zeta eta theta " * 30  # ~240 response tokens


def _rm_and_batch(rm_type, lm, tok):
    rm = build_reward_model(rm_type, lm, tok, seed=0)
    sequences = [rm.encode("Recite.", LONG), rm.encode("Say hi.", "Hi!")]
    if rm.needs_reference():
        rm.cache_reference(sequences)
    ref = rm.reference_logps(sequences) if rm.needs_reference() else None
    return rm, rm.collate(sequences), ref


@pytest.fixture(scope="module")
def bf16_model():
    return load_model("tiny-random", dtype="bfloat16", seed=0)


@pytest.mark.parametrize("setting", ["bf16 weights", "bf16 autocast"])
def test_sequence_logprobs_are_summed_in_fp32(setting, bf16_model, tiny):
    lm, tok = bf16_model if setting == "bf16 weights" else tiny
    assert lm.dtype == (torch.bfloat16 if setting == "bf16 weights" else torch.float32)
    _, batch, _ = _rm_and_batch("im", lm, tok)
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
    rm, batch, ref = _rm_and_batch(rm_type, *bf16_model)
    with torch.no_grad():
        rewards = rm.rewards_from_outputs(rm(batch, ref))
    assert rewards.dtype == torch.float32
    if rm_type == "ex":
        assert rm.head.weight.dtype == torch.float32  # the head stays fp32 on a bf16 backbone


@pytest.mark.parametrize("rm_type", ["ex", "im", "grm"])
def test_rewards_are_fp32_under_bf16_autocast(rm_type, tiny):
    rm, batch, ref = _rm_and_batch(rm_type, *tiny)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        rewards = rm.rewards_from_outputs(rm(batch, ref))
    assert rewards.dtype == torch.float32
