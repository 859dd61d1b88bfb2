"""Memory bounded whatever the lengths (issue 15): micro-batches formed by a token budget
(rmlib.batching.micro_batches) and gradient checkpointing change neither the losses nor the weights."""

import random

import pytest

from rmlib.batching import collate_pairs, micro_batches, packed_length, padded_tokens
from rmlib.formatting import Encoded


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
