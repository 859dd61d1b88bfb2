"""n-gram overlap of evaluation pairs with the training data, and the math overlap caveats
(rmlib.analysis.overlap)."""

import math

import numpy as np
import pandas as pd
import pytest

from rmlib.analysis import overlap as ov
from rmlib.book import real_world_shifts_views as show
from rmlib.models import load_tokenizer
from test_rm_comparisons import _examples


def test_ngrams_and_containment_on_hand_made_cases():
    assert ov.ngrams([1, 2, 3, 2, 3], 2) == {(1, 2), (2, 3), (3, 2)}
    assert ov.ngrams([1], 2) == set()
    reference = ov.training_ngrams([[1, 2, 3], [7, 8]], 2)  # {(1,2), (2,3), (7,8)}
    assert reference == {(1, 2), (2, 3), (7, 8)}
    assert ov.containment([1, 2, 3], reference, 2) == 1.0
    assert ov.containment([1, 2, 9, 9], reference, 2) == pytest.approx(1 / 3)  # (1,2) of {(1,2),(2,9),(9,9)}
    assert ov.containment([3, 2, 1], reference, 2) == 0.0  # same unigrams, no shared bigram
    assert ov.containment([3, 2, 1], ov.training_ngrams([[1, 2, 3]], 1), 1) == 1.0
    assert math.isnan(ov.containment([5], reference, 2))
    with pytest.raises(ValueError, match="n must be"):
        ov.ngrams([1, 2], 0)


def test_pair_overlap_is_the_mean_of_both_containments():
    reference = {(1, 2), (2, 3)}
    assert ov.pair_overlap([1, 2, 3], [4, 5], reference, 2) == pytest.approx(0.5)
    assert math.isnan(ov.pair_overlap([1, 2, 3], [4], reference, 2))


def test_overlap_table_uses_response_tokens_only():
    tok = load_tokenizer("tiny-random")
    train = [{"prompt": "unrelated words here", "chosen": "the cat sat on the mat", "rejected": "dogs bark"}]
    evals = {"ultrafeedback": [{"prompt": "x", "chosen": "the cat sat on the mat", "rejected": "dogs bark"},
                               {"prompt": "x", "chosen": "unrelated words here", "rejected": "zebra quantum"}]}
    table = ov.overlap_table(tok, train, evals, n=2)
    assert table["overlap"].tolist()[0] == 1.0
    assert table["overlap"].tolist()[1] < 0.5  # the prompt's words do not count as training text


def test_accuracy_by_overlap_buckets_pairs_by_quantiles():
    examples = pd.DataFrame({
        "eval_set": ["a"] * 8, "index": list(range(4)) * 2, "rm": ["ex"] * 4 + ["im"] * 4,
        "overlap": [0.1, 0.2, 0.8, 0.9] * 2,
        "correct": [1, 1, 1, 1, 0, 0, 1, 1.0]})
    out = ov.accuracy_by_overlap(examples, n_buckets=2).set_index(["bucket", "rm"])
    assert out.loc[(0, "ex"), "accuracy"] == 1.0 and out.loc[(0, "im"), "accuracy"] == 0.0
    assert out.loc[(1, "im"), "accuracy"] == 1.0 and out.loc[(1, "im"), "n"] == 2
    assert out.loc[(1, "im"), "overlap_min"] == 0.8
    # all overlaps equal: one bucket; NaN overlaps are left out
    same = examples.assign(overlap=[0.5] * 7 + [float("nan")])
    single = ov.accuracy_by_overlap(same, n_buckets=4)
    assert set(single["bucket"]) == {0} and single["n"].sum() == 7


def test_overlap_trend_is_a_stratified_paired_bootstrap():
    low = {(rm, "m", s, "ultrafeedback"): ([1] * 20 if rm == "ex" else [0] * 20) for rm in ("ex", "im") for s in (0, 1)}
    ex = _examples(low).assign(overlap=0.1)
    high = _examples({(rm, "m", s, "ultrafeedback"): [1] * 20 for rm in ("ex", "im") for s in (0, 1)})
    high = high.assign(index=high["index"] + 20, overlap=0.9)
    examples = pd.concat([ex, high], ignore_index=True)
    interval, info = ov.overlap_trend(examples, n_buckets=2, n_boot=200)
    assert (info["gap_low"], info["gap_high"], info["n_low"], info["n_high"]) == (1.0, 0.0, 20, 20)
    assert interval.estimate == -1.0 and interval.low == interval.high == -1.0 and interval.n_seeds == 2
    assert "shrinks as overlap grows" in show.overlap_trend_sentence(interval, info)
    # noise only: the interval covers 0 and the sentence says undecided
    rng = np.random.default_rng(0)
    noisy = examples.assign(correct=rng.integers(0, 2, len(examples)).astype(float))
    interval, info = ov.overlap_trend(noisy, n_buckets=2, n_boot=500)
    assert interval.low < 0 < interval.high and "undecided" in show.overlap_trend_sentence(interval, info)
    flat, info = ov.overlap_trend(examples.assign(overlap=0.5), n_buckets=4)
    assert flat is None and "one overlap bucket" in show.overlap_trend_sentence(flat, info)


def test_math_overlap_counts_shared_problems_and_solutions():
    train = [{"prompt": "p1", "chosen": "s1", "rejected": "x"}, {"prompt": "p2", "chosen": "s2", "rejected": "y"}]
    rewardmath = [{"prompt": "p1", "chosen": "s1", "rejected": "new"}, {"prompt": "p2", "chosen": "other", "rejected": "z"},
                  {"prompt": "p3", "chosen": "s3", "rejected": "w"}]
    rb = [{"prompt": "p2", "chosen": "reworded", "rejected": "r"}, {"prompt": "p9", "chosen": "a", "rejected": "b"}]
    counts = ov.math_overlap(train, rewardmath, rb)
    assert counts == {"n_train": 2, "n_rewardmath": 3, "rewardmath_shared": 1, "n_rb_math": 2, "rb_math_shared": 1}
    first, second = show.math_overlap_sentences(counts, "This build")
    assert first == ("This build: 1 of the 3 RewardMATH test rows share their problem and chosen solution with one of "
                     "the 2 training rows; for these only the rejected solution is new.")
    assert second.startswith("This build: 1 of the 2 RB Math prompts are problems of the 2 RewardMATH training rows; ")


def test_real_mirror_overlap_with_the_papers_1000_training_rows():
    from rmlib.data import default_data_dir

    if not (default_data_dir() / "rewardmath" / "train.jsonl").exists():
        pytest.skip("offline data mirror not present")
    counts = ov.paper_math_overlap()
    assert (counts["n_train"], counts["n_rewardmath"], counts["n_rb_math"]) == (1000, 200, 200)
    assert (counts["rewardmath_shared"], counts["rb_math_shared"]) == (179, 170)
