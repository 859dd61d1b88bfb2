"""Token overlap of evaluation pairs with the training data (beyond the paper), and the paper's own
overlap caveats in the math setting (exact repeats).

**Measure.** T_n is the set of all distinct token n-grams of all training responses, chosen and rejected,
tokenized by the reward model's tokenizer (response text only: an IM-RM's reward, Eq. 2, is a sum over
exactly these tokens). A response y with distinct n-grams G_n(y) has containment
c_n(y) = |G_n(y) ∩ T_n| / |G_n(y)|; an evaluation pair's overlap is (c_n(y+) + c_n(y-)) / 2
(:func:`pair_overlap`). Containment rather than Jaccard, because the Jaccard index against a training set
thousands of times larger than one response is dominated by the training set's size.
:func:`accuracy_by_overlap` reads accuracy per quantile bucket of overlap, and :func:`overlap_trend`
estimates how the EX - IM gap changes from the lowest to the highest bucket, with a bootstrap interval.

**Caveats** (:func:`math_overlap`): RewardMATH test rows that repeat a training problem and its chosen
solution, and RB Math rows whose problem is a training problem.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from ..data import PAPER_SUBSET_SEED, load_preferences, paper_subset
from ..tasks.realworld import get_setting
from .rm_comparisons import paired_correctness


def ngrams(tokens, n: int) -> set:
    """The set of distinct contiguous n-grams (tuples) of a token sequence (empty if shorter than n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tokens = tuple(tokens)
    return {tokens[i:i + n] for i in range(len(tokens) - n + 1)}


def training_ngrams(responses, n: int) -> set:
    """T_n: the union of the n-gram sets of all training responses (chosen and rejected)."""
    out = set()
    for tokens in responses:
        out |= ngrams(tokens, n)
    return out


def containment(tokens, reference: set, n: int) -> float:
    """c_n(y) = |G_n(y) ∩ T_n| / |G_n(y)|: the share of the distinct n-grams G_n(y) of a response y
    that occur anywhere in the training responses' n-gram set T_n. NaN if y has fewer than n tokens."""
    grams = ngrams(tokens, n)
    if not grams:
        return math.nan
    return len(grams & reference) / len(grams)


def pair_overlap(chosen_tokens, rejected_tokens, reference: set, n: int) -> float:
    """Token overlap of an evaluation pair with the training data: the mean of the containments
    (:func:`containment`) of its two responses, (c_n(y+) + c_n(y-)) / 2 -- 1 when every n-gram of both
    responses appeared in some training response, 0 when none did. NaN if either is undefined.

    Tokens are the reward model's own token ids of the response text alone (no prompt, no chat
    template), since an IM-RM's reward is a sum over exactly these tokens (Eq. 2)."""
    return (containment(chosen_tokens, reference, n) + containment(rejected_tokens, reference, n)) / 2


def response_tokens(tokenizer, texts) -> list[tuple]:
    """Token ids of plain response texts, without special tokens."""
    return [tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def overlap_table(tokenizer, train_rows, eval_rows: dict, n: int = 2) -> pd.DataFrame:
    """Per evaluation pair (eval_set, index): ``overlap`` = :func:`pair_overlap` against the n-grams of
    all training responses, tokenized by ``tokenizer``."""
    reference = training_ngrams(response_tokens(tokenizer, [r[k] for r in train_rows for k in ("chosen", "rejected")]), n)
    frames = []
    for name, rows in eval_rows.items():
        chosen = response_tokens(tokenizer, [r["chosen"] for r in rows])
        rejected = response_tokens(tokenizer, [r["rejected"] for r in rows])
        frames.append(pd.DataFrame({"eval_set": name, "index": range(len(rows)),
                                    "overlap": [pair_overlap(c, r, reference, n) for c, r in zip(chosen, rejected)]}))
    return pd.concat(frames, ignore_index=True)


def overlap_buckets(examples: pd.DataFrame, n_buckets: int = 4) -> pd.DataFrame:
    """The rows of ``examples`` with a defined ``overlap``, with a ``bucket`` column: quantile buckets of
    ``overlap`` over the distinct pairs (``eval_set``, ``index``), the same for every reward model. Bucket
    k holds overlaps in [edge_k, edge_{k+1}) (the last also the maximum); equal edges are merged, so there
    may be fewer than ``n_buckets`` buckets."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    data = examples.dropna(subset=["overlap"])
    if data.empty:
        raise ValueError("no evaluation pair has a defined overlap")
    pairs = data.drop_duplicates(["eval_set", "index"]) if {"eval_set", "index"} <= set(data) else data
    edges = np.unique(np.quantile(pairs["overlap"], np.linspace(0, 1, n_buckets + 1)))
    return data.assign(bucket=np.searchsorted(edges[1:-1], data["overlap"].to_numpy(), side="right"))


def accuracy_by_overlap(examples: pd.DataFrame, n_buckets: int = 4, rm_column: str = "rm",
                        by=()) -> pd.DataFrame:
    """Accuracy per overlap bucket and reward model.

    ``examples``: one row per (run, evaluation pair) with columns ``overlap``, ``correct`` and
    ``rm_column``. Pairs are bucketed by the quantiles of ``overlap`` over the distinct pairs
    (``eval_set``, ``index``) -- the same buckets for every reward model; equal quantile edges are
    merged, so there may be fewer than ``n_buckets`` buckets. Pairs with undefined (NaN) overlap are
    left out. Returns bucket, its overlap range, the reward model, accuracy (mean of ``correct``) and
    n (evaluations in the bucket)."""
    data = overlap_buckets(examples, n_buckets)
    grouped = data.groupby(list(by) + ["bucket", rm_column])
    out = pd.DataFrame({"overlap_min": grouped["overlap"].min(), "overlap_max": grouped["overlap"].max(),
                        "overlap_mean": grouped["overlap"].mean(), "accuracy": grouped["correct"].mean(),
                        "n": grouped.size()}).reset_index()
    out["bucket"] = out["bucket"].astype(int)
    return out



def overlap_trend(examples: pd.DataFrame, a: str = "ex", b: str = "im", n_buckets: int = 4,
                  n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0):
    """Change of the ``a`` - ``b`` accuracy gap from the lowest- to the highest-overlap bucket.

    ``examples``: one setting (and model set), with ``overlap``. Buckets as :func:`overlap_buckets`. With
    ``d = A - B`` per (seed, pair) (:func:`paired_correctness`), the estimate is mean(d | top bucket) -
    mean(d | bottom bucket). Its interval is a stratified two-level percentile bootstrap, the scheme of
    :func:`rmlib.analysis.stats.bootstrap_mean` with the pairs resampled within each bucket (the buckets hold
    different pairs, so the two gaps are independent samples; the same drawn seeds serve both).
    Returns ``(interval, info)`` (``rmlib.analysis.stats.Interval``; ``info``: ``gap_low``, ``gap_high``, ``n_low``,
    ``n_high``, ``n_buckets``), or ``(None, info)`` when all overlaps fall in one bucket."""
    data = overlap_buckets(examples[examples["rm"].isin([a, b])], n_buckets)
    top = int(data["bucket"].max())
    info = {"n_buckets": top + 1}
    if top == 0:
        return None, info
    A_lo, B_lo, lo = paired_correctness(data[data["bucket"] == 0], a, b)
    A_hi, B_hi, hi = paired_correctness(data[data["bucket"] == top], a, b)
    if lo["seeds"] != hi["seeds"]:
        raise ValueError(f"the buckets have different seeds ({lo['seeds']} vs {hi['seeds']})")
    d_lo, d_hi = A_lo - B_lo, A_hi - B_hi
    n_seeds = d_lo.shape[0]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for r in range(n_boot):
        drawn = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        lo_pairs = rng.integers(0, d_lo.shape[1], d_lo.shape[1])
        hi_pairs = rng.integers(0, d_hi.shape[1], d_hi.shape[1])
        reps[r] = d_hi[drawn][:, hi_pairs].mean() - d_lo[drawn][:, lo_pairs].mean()
    low, high = np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2])
    info.update(gap_low=float(d_lo.mean()), gap_high=float(d_hi.mean()), n_low=d_lo.shape[1], n_high=d_hi.shape[1])
    estimate = info["gap_high"] - info["gap_low"]
    return stats.Interval(estimate, float(low), float(high), confidence, d_lo.shape[1] + d_hi.shape[1], n_seeds), info



def shared_count(eval_rows, train_rows, keys=("prompt", "chosen")) -> int:
    """How many ``eval_rows`` have the same ``keys`` values (exact strings) as some training row."""
    seen = {tuple(r[k] for k in keys) for r in train_rows}
    return sum(tuple(r[k] for k in keys) in seen for r in eval_rows)


def math_overlap(train_rows, rewardmath_rows, rb_math_rows) -> dict:
    """The math setting's overlaps: RewardMATH test rows sharing (prompt, chosen) with a training row, and
    RB Math rows whose prompt is a training problem."""
    return {"n_train": len(train_rows), "n_rewardmath": len(rewardmath_rows),
            "rewardmath_shared": shared_count(rewardmath_rows, train_rows, ("prompt", "chosen")),
            "n_rb_math": len(rb_math_rows), "rb_math_shared": shared_count(rb_math_rows, train_rows, ("prompt",))}


def paper_math_overlap(data_dir=None) -> dict:
    """:func:`math_overlap` for the paper's rows: its 1000 RewardMATH training rows (seed 517) and the full
    200-row RewardMATH and RB Math test sets, without any token cap."""
    train = paper_subset(load_preferences("rewardmath", "train", data_dir=data_dir).rows,
                         get_setting("math").train_size, PAPER_SUBSET_SEED)
    return math_overlap(train, load_preferences("rewardmath", "test", data_dir=data_dir).rows,
                        load_preferences("rewardbench_math", "test", data_dir=data_dir).rows)
