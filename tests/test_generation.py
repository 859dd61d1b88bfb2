"""Sampling from a causal LM (rmlib.generation): seeded, batch-independent, stops at end-of-turn tokens."""

import pytest
import torch

from rmlib.formatting import ChatFormatter
from rmlib.generation import sample_responses, sample_token_ids, stop_token_ids

PROMPTS = ["Vertices: 0 1 2", "Say something.", "A much longer prompt, so that the batch needs left padding here."]


def encoded_prompts(tokenizer):
    formatter = ChatFormatter(tokenizer)
    return [formatter.encode_prompt(p) for p in PROMPTS]


def test_stop_tokens_include_end_of_turn(tiny):
    _, tokenizer = tiny
    ids = stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert tokenizer.eos_token_id in ids


def test_seeded_and_independent_of_batch_size(tiny):
    model, tokenizer = tiny
    prompts = encoded_prompts(tokenizer)
    a = sample_token_ids(model, prompts, tokenizer.pad_token_id, [tokenizer.eos_token_id], 12, seed=3, batch_size=3)
    b = sample_token_ids(model, prompts, tokenizer.pad_token_id, [tokenizer.eos_token_id], 12, seed=3, batch_size=1)
    c = sample_token_ids(model, prompts, tokenizer.pad_token_id, [tokenizer.eos_token_id], 12, seed=4, batch_size=3)
    assert a == b
    assert a != c
    assert all(len(s) <= 12 for s in a)


def test_padded_batch_matches_unpadded_greedy_continuation(tiny):
    """With left padding, the first sampled token follows the same distribution as without padding:
    a near-zero temperature makes sampling greedy, and the greedy token must match the argmax of an
    unpadded forward pass."""
    model, tokenizer = tiny
    prompts = encoded_prompts(tokenizer)
    samples = sample_token_ids(model, prompts, tokenizer.pad_token_id, [-1], 1, temperature=1e-4, batch_size=3)
    for prompt, sample in zip(prompts, samples):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt.input_ids])).logits[0, -1]
        assert sample == [int(logits.argmax())]


def test_sampling_follows_the_model_distribution(tiny):
    """Temperature 1 means plain ancestral sampling over the whole vocabulary (no top-k / top-p)."""
    model, tokenizer = tiny
    prompt = encoded_prompts(tokenizer)[0]
    n = 400
    samples = sample_token_ids(model, [prompt] * n, tokenizer.pad_token_id, [-1], 1, seed=0, batch_size=100)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([prompt.input_ids])).logits[0, -1].float(), -1)
    # the random tiny model is close to uniform over its 49k tokens: 400 draws give ~400 distinct tokens,
    # which a top-k (k=50) or top-p truncated sampler could not produce
    assert float(probs.max()) < 0.01
    assert len({s[0] for s in samples}) > 300


def test_stops_before_stop_token_and_decodes_special_tokens(fresh_tiny):
    model, tokenizer = fresh_tiny
    prompts = encoded_prompts(tokenizer)[:2]
    full = sample_token_ids(model, prompts, tokenizer.pad_token_id, [-1], 8, seed=1)
    stop = full[0][3]
    cut = sample_token_ids(model, prompts, tokenizer.pad_token_id, [stop], 8, seed=1)
    assert cut[0] == full[0][:full[0].index(stop)]
    texts = sample_responses(model, tokenizer, prompts, 8, seed=1, stop_ids=[-1])
    assert texts == [tokenizer.decode(s, skip_special_tokens=False) for s in full]


def test_bad_arguments(tiny):
    model, tokenizer = tiny
    prompts = encoded_prompts(tokenizer)
    with pytest.raises(ValueError, match="temperature"):
        sample_token_ids(model, prompts, 0, [2], 4, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_token_ids(model, prompts, 0, [2], 0)
    with pytest.raises(ValueError, match="stop token"):
        sample_token_ids(model, prompts, 0, [], 4)
    assert sample_token_ids(model, [], 0, [2], 4) == []
