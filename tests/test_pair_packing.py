"""Prefix-shared packing of preference pairs (rmlib.batching.collate_pairs) gives exactly the plain batch's
rewards and gradients, for every reward-model type and both attention implementations that take it."""

import copy

import pytest
import torch

from rmlib.batching import collate, collate_pairs, shared_prefix_length
from rmlib.formatting import Encoded
from rmlib.models import load_model
from rmlib.rewards import build_reward_model
from rmlib.scoring import reference_logps, score

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris is the capital of France.",
     "rejected": "I think it is Lyon, but I am not sure at all."},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hi! How are you today?"},  # chosen is a prefix
    {"prompt": "Add 2 and 3.", "chosen": "2 + 3 = 5", "rejected": "2 + 3 = 6, obviously."},
]


@pytest.fixture(scope="module")
def tiny_model():
    return load_model("tiny-random", dtype="float32", seed=0)


def _outputs_and_grads(rm, batch):
    rm.zero_grad(set_to_none=True)
    outputs = rm(batch)
    loss, _, _ = rm.loss(outputs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in rm.named_parameters() if p.grad is not None}
    return outputs.detach(), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("rm_type,variant", [("ex", "last"), ("ex", "mean"), ("im", "ref"), ("grm", "yes")])
def test_packed_pairs_match_plain_batch(tiny_model, rm_type, variant, attn):
    lm, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    lm.config._attn_implementation = attn
    rm = build_reward_model(rm_type, lm, tok, variant=variant, seed=0)
    chosen = [rm.encode(p["prompt"], p["chosen"]) for p in PAIRS]
    rejected = [rm.encode(p["prompt"], p["rejected"]) for p in PAIRS]
    ref_logps = None
    if rm.needs_reference():
        ref_logps = reference_logps(rm, chosen + rejected)
        with torch.no_grad():  # move the policy away from the reference so rewards are not all zero
            for p in lm.parameters():
                p.add_(0.02 * torch.randn_like(p))
    plain_out, plain_grads = _outputs_and_grads(rm, rm.collate(chosen + rejected, ref_logps=ref_logps))
    batch = rm.collate_pairs(chosen, rejected, ref_logps)
    assert batch.packed is not None
    # the packed rows are shorter than chosen + rejected side by side: the prompt is held once
    assert batch.packed.input_ids.shape[1] < 2 * batch.input_ids.shape[1]
    packed_out, packed_grads = _outputs_and_grads(rm, batch)
    torch.testing.assert_close(packed_out, plain_out, rtol=1e-5, atol=1e-6)
    assert packed_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(packed_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packing_layout():
    c = Encoded((1, 2, 3, 4, 5), 3)
    r = Encoded((1, 2, 3, 9), 3)
    assert shared_prefix_length(c, r) == 3
    batch = collate_pairs([c], [r], pad_id=0)
    assert batch.packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 9]]
    assert batch.packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]
    mask = batch.packed.attention_mask[0, 0]
    assert mask[5].tolist() == [True, True, True, False, False, True]  # rejected tail: prompt + itself
    assert mask[4].tolist() == [True, True, True, True, True, False]   # chosen tail: causal
    # the plain layout is recovered position by position
    plain = collate([c, r], 0)
    recovered = batch.packed.input_ids[batch.packed.rows, batch.packed.cols] * plain.attention_mask
    assert torch.equal(recovered, plain.input_ids * plain.attention_mask)


def test_collate_pairs_rejects_unequal_lists():
    with pytest.raises(ValueError, match="equal, non-zero"):
        collate_pairs([Encoded((1, 2), 1)], [], pad_id=0)


def test_recomputed_logits_give_the_same_log_probs_and_gradients(tiny_model, monkeypatch):
    """gather_logprobs with its chunks checkpointed (long vocabularies) equals the kept-logits path."""
    import rmlib.rewards as rewards

    lm, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    rm = build_reward_model("im", lm, tok, variant="no_ref")
    batch = collate([rm.encode(p["prompt"], p["chosen"]) for p in PAIRS], tok.pad_token_id)
    results = []
    for threshold in (rewards.RECOMPUTE_LOGITS_ABOVE, 0):
        monkeypatch.setattr(rewards, "RECOMPUTE_LOGITS_ABOVE", threshold)
        lm.zero_grad(set_to_none=True)
        logps = rewards.sequence_logprobs(lm, batch)
        logps.sum().backward()
        results.append((logps.detach(), {n: p.grad.clone() for n, p in lm.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0])
    for name in results[0][1]:
        torch.testing.assert_close(results[1][1][name], results[0][1][name], msg=name)


def test_pair_for_packing_groups_prompts_and_covers_every_sequence():
    from rmlib.batching import pair_for_packing

    a1, a2, a3 = Encoded((1, 2, 3, 7), 3), Encoded((1, 2, 3, 8, 9), 3), Encoded((1, 2, 3, 4), 3)
    b1 = Encoded((1, 5, 6, 7), 3)
    pairs = pair_for_packing([a1, b1, a2, a3])
    assert sorted(i for pair in pairs for i in pair) == [0, 1, 2, 3]
    assert any(set(pair) <= {0, 2, 3} and pair[0] != pair[1] for pair in pairs)  # two of prompt a together
    odd = pair_for_packing([a1, b1, a2])
    assert sorted({i for pair in odd for i in pair}) == [0, 1, 2] and len(odd) == 2
    assert any(pair[0] == pair[1] for pair in odd)  # the odd one out is paired with itself


@pytest.mark.parametrize("rm_type,variant", [("ex", "last"), ("ex", "mean"), ("im", "ref"), ("im", "no_ref"),
                                             ("grm", "yes")])
def test_score_and_reference_cache_equal_each_sequence_alone(tiny_model, rm_type, variant):
    """score() and reference_logps() run pairs packed; each value equals the sequence's own forward pass."""
    from rmlib.rewards import sequence_logprobs

    lm, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    rm = build_reward_model(rm_type, lm, tok, variant=variant, seed=0).eval()
    sequences = [rm.encode(p["prompt"], p[key]) for p in PAIRS for key in ("chosen", "rejected")]
    sequences.append(rm.encode(PAIRS[0]["prompt"], "Marseille."))  # three responses to one prompt: odd count
    sequences.append(sequences[1])                                  # a repeat
    with torch.no_grad():
        alone_logps = torch.stack([sequence_logprobs(lm, collate([s], tok.pad_token_id))[0] for s in sequences])
    ref_logps = None
    if rm.needs_reference():
        ref_logps = reference_logps(rm, sequences)
        assert len(ref_logps) == len(set(sequences))
        torch.testing.assert_close(torch.tensor([ref_logps[s] for s in sequences]), alone_logps, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            for p in lm.parameters():
                p.add_(0.02 * torch.randn_like(p))
    with torch.no_grad():
        alone = torch.stack([
            rm.rewards_from_outputs(rm(rm.collate([s], ref_logps=ref_logps)))[0] for s in sequences])
    torch.testing.assert_close(score(rm, sequences, batch_size=4, ref_logps=ref_logps), alone.float(),
                               rtol=1e-5, atol=1e-6)


def test_progress_counts_every_distinct_sequence_once_and_changes_no_reward(tiny_model):
    """The build console's evaluation bar: score() and reference_logps() advance it by the sequences they
    compute (a repeat once), and the rewards are those computed without a bar."""

    class Bar:
        def __init__(self):
            self.total, self.done = None, 0

        def reset(self, total=None):
            self.total, self.done = total, 0

        def update(self, n):
            self.done += n

    lm, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    rm = build_reward_model("im", lm, tok, seed=0).eval()
    sequences = [rm.encode(p["prompt"], p[key]) for p in PAIRS for key in ("chosen", "rejected")]
    sequences.append(sequences[2])
    reference = Bar()
    ref_logps = reference_logps(rm, sequences, batch_size=2, progress=reference)
    assert reference.total == reference.done == len(set(sequences)) == 6
    bar = Bar()
    with_bar = score(rm, sequences, batch_size=2, progress=bar, ref_logps=ref_logps)
    assert bar.done == 6
    torch.testing.assert_close(with_bar, score(rm, sequences, batch_size=2, ref_logps=ref_logps), rtol=0, atol=0)
