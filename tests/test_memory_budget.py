"""Memory bounded whatever the lengths (issue 15): micro-batches formed by a token budget
(rmlib.batching.micro_batches) and gradient checkpointing change neither the losses nor the weights."""

import random

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from rmlib import cli
from rmlib.batching import collate_pairs, micro_batches, packed_length, padded_tokens
from rmlib.data import EvalSet
from rmlib.experiment import run_experiment
from rmlib.formatting import Encoded
from rmlib.models import load_model
from rmlib.params import ParameterError
from rmlib.rewards import build_reward_model
from rmlib.runconfig import RunConfig
from rmlib.scoring import encode_pairs, reference_logps
from rmlib.training import enable_gradient_checkpointing, train

SHORT = [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
         {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "2 + 3 = 6"},
         {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "A colour."},
         {"prompt": "Is ice cold?", "chosen": "Yes, it is.", "rejected": "No."}]
LONG = [{"prompt": "Describe the sea.", "chosen": "The sea is wide, deep and blue; " * 6, "rejected": "Wet. " * 5},
        {"prompt": "Count to ten.", "chosen": "one two three four five six seven eight nine ten " * 3,
         "rejected": "one two three"},
        {"prompt": "Tell me about Paris.", "chosen": "Paris is the capital of France, on the Seine. " * 5,
         "rejected": "It is a city in France. " * 4},
        {"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering of sunlight by the air. " * 5,
         "rejected": "Because it is. " * 3}]


def test_micro_batches_hand_computed():
    # budget 12: 3 and 5 fit (2 x 5 = 10); a third of length 5 would make 15; 9 is alone (2 x 9 = 18); 20
    # is over the budget by itself: its own micro-batch, not dropped
    assert micro_batches([3, 5, 5, 9, 20], max_pairs=3, max_tokens=12) == [[0, 1], [2], [3], [4]]
    assert micro_batches([3, 5, 5, 9, 20], max_pairs=2) == [[0, 1], [2, 3], [4]]  # no budget: fixed chunks
    assert micro_batches([1, 1, 1, 1, 1], max_pairs=2, max_tokens=100) == [[0, 1], [2, 3], [4]]
    assert micro_batches([4, 1, 1, 6], max_pairs=4, max_tokens=8) == [[0, 1], [2], [3]]  # order kept, padded to 4
    assert micro_batches([], max_pairs=2, max_tokens=8) == []
    assert padded_tokens([3, 5]) == 10 and padded_tokens([7]) == 7
    with pytest.raises(ValueError, match="max_tokens"):
        micro_batches([1], max_pairs=1, max_tokens=0)


@pytest.mark.parametrize("seed", range(20))
def test_micro_batches_cover_every_index_once_within_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 40))]
    if seed % 2:
        lengths.sort()
    max_pairs, max_tokens = rng.randint(1, 8), rng.choice([None, rng.randint(1, 200)])
    groups = micro_batches(lengths, max_pairs, max_tokens)
    assert [i for g in groups for i in g] == list(range(len(lengths)))  # every index once, in order
    for g, after in zip(groups, groups[1:] + [None]):
        assert 1 <= len(g) <= max_pairs
        if max_tokens is not None and len(g) > 1:
            assert padded_tokens([lengths[i] for i in g]) <= max_tokens
        if after is not None:  # greedy: the next micro-batch's first item did not fit this one
            grown = [lengths[i] for i in g + after[:1]]
            assert len(grown) > max_pairs or (max_tokens is not None and padded_tokens(grown) > max_tokens)


def test_padded_tokens_predict_the_packed_batch():
    """The prediction from lengths alone equals the size of the batch collate_pairs really builds."""
    rng = random.Random(0)
    for _ in range(30):
        chosen, rejected = [], []
        for _ in range(rng.randint(1, 5)):
            prompt = [rng.randint(3, 9) for _ in range(rng.randint(1, 12))]
            c = prompt + [rng.randint(3, 9) for _ in range(rng.randint(1, 15))]
            r = c[:rng.randint(len(prompt), len(c))] + [rng.randint(3, 9) for _ in range(rng.randint(0, 15))]
            chosen.append(Encoded(tuple(c), len(prompt)))
            rejected.append(Encoded(tuple(r), len(prompt)))
        packed = collate_pairs(chosen, rejected, pad_id=0).packed
        lengths = [packed_length(c, r) for c, r in zip(chosen, rejected)]
        assert packed.input_ids.numel() == padded_tokens(lengths)
        assert packed.input_ids.shape == (len(chosen), max(lengths))


def _train(rm_type, tok, chosen, rejected, epochs=2, lr=1e-4, **options):
    """Train a fresh tiny reward model; returns its per-step losses, every step's gradient (as the
    optimizer receives it), the final weights, the (pairs, padded tokens) of every training micro-batch
    and the model."""
    lm, _ = load_model("tiny-random", dtype="float32", seed=0)
    rm = build_reward_model(rm_type, lm, tok, seed=1)
    shapes, grads, collate = [], [], rm.collate_pairs

    def recorded(c, r, ref_logps=None):
        if torch.is_grad_enabled():  # the training micro-batches only
            shapes.append((len(c), padded_tokens([packed_length(*p) for p in zip(c, r)])))
        return collate(c, r, ref_logps)

    def gradient(optimizer, args, kwargs):
        grads.append(torch.cat([p.grad.flatten() for group in optimizer.param_groups for p in group["params"]]))

    rm.collate_pairs = recorded
    config = RunConfig(epochs=epochs, lr=lr, batch_size=4, micro_batch_size=4, seed=0, progress=False, **options)
    hook = register_optimizer_step_pre_hook(gradient)
    try:
        history = train(rm, chosen, rejected, config)
    finally:
        hook.remove()
    weights = {k: v.detach().clone() for k, v in rm.state_dict().items()}
    return torch.tensor([s["loss"] for s in history.steps]), grads, weights, shapes, rm


@pytest.mark.parametrize("rm_type", ["ex", "im"])
def test_token_budget_trains_exactly_as_fixed_micro_batches(tiny, rm_type):
    """Per-step losses and gradients equal to rounding, final weights to Adam's amplification of it (an
    element whose gradient is about rounding-sized moves by a sizeable part of lr either way)."""
    _, tok = tiny
    chosen, rejected = encode_pairs(build_reward_model(rm_type, *tiny), SHORT + LONG)
    lengths = sorted(packed_length(c, r) for c, r in zip(chosen, rejected))
    budget = lengths[-1]  # the longest pair fits alone; two short ones go together, long ones apart
    assert 2 * lengths[3] <= budget < 2 * lengths[4]
    fixed_losses, fixed_grads, fixed_weights, fixed_shapes, _ = _train(rm_type, tok, chosen, rejected)
    losses, grads, weights, shapes, _ = _train(rm_type, tok, chosen, rejected, max_tokens_per_micro_batch=budget)
    assert [n for n, _ in fixed_shapes] == [4, 4, 4, 4]  # 4 steps of one micro-batch each
    assert len(shapes) > 6 and {n for n, _ in shapes} == {1, 2}  # really another split
    assert all(tokens <= budget for _, tokens in shapes) and sum(n for n, _ in shapes) == 16
    assert len(set(fixed_losses.tolist())) == 4  # the steps differ, so equal losses mean something
    torch.testing.assert_close(losses, fixed_losses, rtol=1e-6, atol=0)
    assert len(grads) == len(fixed_grads) == 4
    for step, (g, fixed) in enumerate(zip(grads, fixed_grads)):
        assert fixed.abs().max() > 1e-2
        torch.testing.assert_close(g, fixed, rtol=1e-5, atol=1e-6, msg=f"step {step + 1}")
    initial = build_reward_model(rm_type, *load_model("tiny-random", dtype="float32", seed=0), seed=1).state_dict()
    assert weights.keys() == fixed_weights.keys() == initial.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], fixed_weights[name], rtol=0, atol=1e-5, msg=name)
    assert max(float((fixed_weights[k] - initial[k]).abs().max()) for k in initial) > 3e-4  # 4 steps of lr 1e-4


def checkpointing(lm) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in lm.modules())


def _grads(rm, batch):
    rm.zero_grad(set_to_none=True)
    loss = rm.loss(rm(batch))[0]
    loss.backward()
    return {name: p.grad.clone() for name, p in rm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rm_type", ["ex", "im"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny, rm_type):
    lm, tok = load_model("tiny-random", dtype="float32", seed=0)
    rm = build_reward_model(rm_type, lm, tok, seed=1).train()
    chosen, rejected = encode_pairs(rm, SHORT + LONG)
    ref_logps = reference_logps(rm, chosen + rejected) if rm.needs_reference() else None
    batch = rm.collate_pairs(chosen, rejected, ref_logps)
    calls = []
    lm.model.layers[0].mlp.register_forward_pre_hook(lambda *args: calls.append(1))
    plain = _grads(rm, batch)
    assert len(calls) == 1
    enable_gradient_checkpointing(rm)
    assert checkpointing(lm) and lm.config.use_cache is False
    checkpointed = _grads(rm, batch)
    assert len(calls) == 3  # the layer ran again in the backward pass: its activations were not kept
    assert checkpointed.keys() == plain.keys() and len(plain) == len(list(rm.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("rm_type", ["ex", "im"])
def test_training_with_gradient_checkpointing_gives_the_same_run(tiny, rm_type):
    _, tok = tiny
    chosen, rejected = encode_pairs(build_reward_model(rm_type, *tiny), SHORT + LONG)
    losses, grads, weights, _, rm_plain = _train(rm_type, tok, chosen, rejected, epochs=1, lr=1e-3)
    assert not checkpointing(rm_plain.lm)
    checkpointed_losses, checkpointed_grads, checkpointed_weights, _, rm = _train(
        rm_type, tok, chosen, rejected, epochs=1, lr=1e-3, gradient_checkpointing=True)
    assert checkpointing(rm.lm) and rm.lm.config.use_cache is False
    torch.testing.assert_close(checkpointed_losses, losses, rtol=0, atol=1e-6)
    for g, plain in zip(checkpointed_grads, grads):
        torch.testing.assert_close(g, plain, rtol=0, atol=1e-6)
    for name in weights:
        torch.testing.assert_close(checkpointed_weights[name], weights[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("options", [{"max_tokens_per_micro_batch": 0}, {"max_tokens_per_micro_batch": True},
                                     {"max_tokens_per_micro_batch": 2.5}, {"gradient_checkpointing": "yes"},
                                     {"gradient_checkpointing": None}])
def test_train_config_refuses_bad_memory_options(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        RunConfig(**options)


def test_cli_spec_and_run_identity_hold_the_memory_options(tmp_path):
    spec = cli.check_spec({})
    assert spec["max_tokens_per_micro_batch"] == cli.TOKEN_BUDGET == 2048 and spec["gradient_checkpointing"] is True
    assert cli.check_spec({"max_tokens_per_micro_batch": None})["max_tokens_per_micro_batch"] is None
    with pytest.raises(ParameterError, match=r"'max_tokens_per_micro_batch' = 0 is below its minimum 1"):
        cli.check_spec({"max_tokens_per_micro_batch": 0})
    assert cli.check_spec({"gradient_checkpointing": False})["gradient_checkpointing"] is False
    with pytest.raises(ParameterError, match=r"'gradient_checkpointing' must be bool"):
        cli.check_spec({"gradient_checkpointing": "on"})
    ids = set()
    for options in ({}, {"max_tokens_per_micro_batch": 64}, {"gradient_checkpointing": True}):
        config = RunConfig(setting="budget", model="tiny-random", rm_type="ex", precision="fp32", epochs=1, lr=1e-3,
                           batch_size=2, micro_batch_size=2, progress=False, **options)
        out = run_experiment(config, SHORT[:2], {"e": EvalSet(SHORT[:2])}, tmp_path)
        assert out.record["spec"]["max_tokens_per_micro_batch"] == config.max_tokens_per_micro_batch
        assert out.record["spec"]["gradient_checkpointing"] == config.gradient_checkpointing
        ids.add(out.record["run_id"])
    assert len(ids) == 3  # runs with other memory options do not collide
