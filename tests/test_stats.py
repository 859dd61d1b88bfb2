"""rmlib.analysis.stats: hand-computed cases, a naive bootstrap reference, verdict branches, and calibration."""

import numpy as np
import pytest

from rmlib.analysis.stats import (VERDICTS, Interval, binomial_interval, bootstrap_mean, compare, mcnemar_exact,
                         minimum_detectable_difference, paired_bootstrap_diff, verdict)

AGREES, CONTRADICTS, UNDECIDED = VERDICTS


def iv(low, high):
    return Interval((low + high) / 2, low, high, 0.95, 100, 1)


# --- hand-computed cases -------------------------------------------------------------------------

def test_hand_computed_diff_and_mcnemar():
    a, b = [1, 1, 1, 0], [0, 1, 0, 0]
    d = paired_bootstrap_diff(a, b, n_boot=500)
    assert d.estimate == 0.5 and (d.n_pairs, d.n_seeds) == (4, 1)
    assert d.low <= d.estimate <= d.high
    t = mcnemar_exact(a, b)
    assert (t.wins_a, t.wins_b, t.ties) == (2, 0, 2)
    assert t.p_value == 0.5  # 2 * (1/2)**2


def test_tie_values_and_seed_means():
    # pair 0: tie for both (equal, dropped); pair 1: A 0.5 vs B 0 -> A wins; pair 2: B wins
    a, b = [0.5, 0.5, 0], [0.5, 0, 1]
    assert paired_bootstrap_diff(a, b, n_boot=100).estimate == pytest.approx((0 + 0.5 - 1) / 3)
    t = mcnemar_exact(a, b)
    assert (t.wins_a, t.wins_b, t.ties) == (1, 1, 1) and t.p_value == 1.0
    # two seeds: per-pair means A = [0.5, 1], B = [0.5, 0.5] -> one A win, one tie
    t2 = mcnemar_exact([[1, 1], [0, 1]], [[0, 1], [1, 0]])
    assert (t2.wins_a, t2.wins_b, t2.ties) == (1, 0, 1)
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0  # no discordant pairs


def test_mcnemar_matches_binomial_tail():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    t = mcnemar_exact(a, b)
    k, w = t.wins_a + t.wins_b, min(t.wins_a, t.wins_b)
    from math import comb
    tail = sum(comb(k, i) for i in range(w + 1)) / 2**k
    assert t.p_value == pytest.approx(min(1.0, 2 * tail))


def test_clopper_pearson():
    ci = binomial_interval(0, 96)
    assert ci.estimate == 0 and ci.low == 0
    assert abs(ci.high - (1 - 0.025 ** (1 / 96))) < 1e-9
    assert ci.high > 0.026 * 1.4  # 0 of 96 cannot rule out a 2.6% baseline
    full = binomial_interval(10, 10)
    assert full.high == 1 and abs(full.low - 0.025 ** (1 / 10)) < 1e-9
    with pytest.raises(ValueError):
        binomial_interval(3, 2)


def test_shape_checks():
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_mdd_formula_and_fallback():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, (3, 80)), rng.integers(0, 2, (3, 80))
    d = (a - b).mean(axis=0)
    expected = (1.959963984540054 + 0.8416212335729143) * d.std(ddof=1) / np.sqrt(80)
    assert minimum_detectable_difference(a, b) == pytest.approx(expected)
    same = np.ones(100)
    assert minimum_detectable_difference(same, same) == pytest.approx(2.8015852 * 0.5 / 10)


# --- bootstrap ------------------------------------------------------------------------------------

def naive_bootstrap(x, n_boot, confidence, seed):
    """Plain loop over the same random draws as bootstrap_mean (one chunk)."""
    x = np.atleast_2d(np.asarray(x, float))
    S, n = x.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, S, size=(n_boot, S)) if S > 1 else np.zeros((n_boot, 1), int)
    pair_idx = rng.integers(0, n, size=(n_boot, n))
    means = []
    for r in range(n_boot):
        total = sum(x[s, p] for s in seed_idx[r] for p in pair_idx[r])
        means.append(total / (S * n))
    return np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_bootstrap_matches_naive_loop(n_seeds):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, (n_seeds, 30)).astype(float)
    a[0, 0] = 0.5
    b = rng.integers(0, 2, (n_seeds, 30))
    got = paired_bootstrap_diff(a, b, n_boot=200, confidence=0.9, seed=7)
    low, high = naive_bootstrap(a - b, 200, 0.9, 7)
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)
    assert got == paired_bootstrap_diff(a, b, n_boot=200, confidence=0.9, seed=7)  # deterministic


def test_chunking_does_not_change_the_statistics(monkeypatch):
    import rmlib.analysis.stats as st
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, (2, 500))
    big = st.bootstrap_mean(a, n_boot=4000, seed=1)
    monkeypatch.setattr(st, "_CELLS_PER_CHUNK", 500 * 7)  # 7 replicates per chunk
    small = st.bootstrap_mean(a, n_boot=4000, seed=1)
    assert small.estimate == big.estimate
    assert abs(small.low - big.low) < 0.01 and abs(small.high - big.high) < 0.01


def test_interval_contains_estimate_and_shrinks_like_root_n():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 2, 100), rng.integers(0, 2, 100)
    one = paired_bootstrap_diff(a, b, n_boot=4000)
    four = paired_bootstrap_diff(np.tile(a, 4), np.tile(b, 4), n_boot=4000)
    assert one.low < one.estimate < one.high and four.low < four.estimate < four.high
    assert four.estimate == pytest.approx(one.estimate)
    assert 0.4 < four.width / one.width < 0.6


def test_pairing_narrows_the_interval():
    rng = np.random.default_rng(6)
    b = rng.integers(0, 2, 100).astype(float)
    a = b.copy()
    a[:3] = 1 - a[:3]  # identical except on 3 pairs
    paired = paired_bootstrap_diff(a, b, n_boot=4000)
    unpaired = np.hypot(bootstrap_mean(a, n_boot=4000, seed=1).width, bootstrap_mean(b, n_boot=4000, seed=2).width)
    assert paired.width < 0.2
    assert paired.width < unpaired / 3


def test_seed_level_widens_the_interval():
    rng = np.random.default_rng(7)
    b = rng.integers(0, 2, (2, 100))
    a = b.copy()
    a[1, :40] = 1  # seed 1 of A is far better than seed 0, which equals B
    a[1, 40:] = b[1, 40:]
    two_level = paired_bootstrap_diff(a, b, n_boot=4000)
    pooled = paired_bootstrap_diff((a - b).reshape(1, -1), np.zeros((1, 200)), n_boot=4000)
    assert two_level.n_seeds == 2 and pooled.n_seeds == 1
    assert two_level.estimate == pytest.approx(pooled.estimate)
    assert two_level.width > 1.5 * pooled.width


# --- verdict ------------------------------------------------------------------------------------

@pytest.mark.parametrize("low, high, direction, margin, expected", [
    (0.03, 0.21, 1, 0, AGREES), (-0.21, -0.03, 1, 0, CONTRADICTS), (-0.05, 0.1, 1, 0, UNDECIDED),
    (-0.21, -0.03, -1, 0, AGREES), (0.03, 0.21, -1, 0, CONTRADICTS), (-0.05, 0.1, -1, 0, UNDECIDED),
    (0.0, 0.2, 1, 0, UNDECIDED),  # touching 0 is containing 0
    (0.01, 0.05, 0, 0.1, CONTRADICTS), (-0.05, -0.01, 0, 0.1, CONTRADICTS),
    (-0.05, 0.08, 0, 0.1, AGREES), (-0.05, 0.15, 0, 0.1, UNDECIDED), (-0.05, 0.08, 0, 0.0, UNDECIDED),
])
def test_verdict_branches(low, high, direction, margin, expected):
    assert verdict(iv(low, high), direction, margin=margin) == expected


def test_verdict_rejects_bad_direction():
    with pytest.raises(ValueError):
        verdict(iv(0, 1), 2)


def test_compare_sentence_and_row():
    rng = np.random.default_rng(8)
    b = rng.integers(0, 2, (3, 40))
    a = np.maximum(b, rng.random((3, 40)) < 0.5).astype(float)
    c = compare(a, b, +1, n_boot=2000)
    assert c.verdict == AGREES
    s = c.sentence()
    assert s.startswith(f"EX-RM minus IM-RM accuracy: +{c.interval.estimate:.2f} (95% CI +")
    assert "40 pairs, 3 seeds; exact sign test p" in s and s.endswith("the paper has EX-RM > IM-RM: agrees with the paper.")
    row = c.as_row()
    assert row["verdict"] == AGREES and row["n_pairs"] == 40 and row["n_seeds"] == 3
    assert row["this build"] == f"{row['estimate']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    u = compare([1, 0, 1], [0, 1, 1], -1, "A", "B", n_boot=500)
    assert u.verdict == UNDECIDED
    lo, hi = u.interval.low, u.interval.high
    assert lo < 0 < hi
    assert u.sentence() == (f"A minus B accuracy: +0.00 (95% CI {lo:+.2f} to {hi:+.2f}; 3 pairs, 1 seed; exact sign test p = 1); "
                            f"the paper has A < B: undecided at this size (this sample could detect a difference of about {u.mdd:.2f}).")
    assert "the paper has A and B tied" in compare([1, 0], [1, 0], 0, "A", "B", n_boot=100).sentence()


# --- calibration by simulation ------------------------------------------------------------------

@pytest.mark.parametrize("n_seeds", [1, 3])
def test_no_difference_is_rarely_called(n_seeds):
    rng = np.random.default_rng(100 + n_seeds)
    runs, called = 300, {1: 0, -1: 0}
    for run in range(runs):
        a, b = (rng.random((2, n_seeds, 60)) < 0.7).astype(float)
        interval = paired_bootstrap_diff(a, b, n_boot=2000, seed=run)
        for direction in called:
            called[direction] += verdict(interval, direction) != UNDECIDED
    assert called[1] / runs <= 0.08 and called[-1] / runs <= 0.08


def test_real_difference_is_found():
    rng = np.random.default_rng(200)
    runs, agrees = 100, 0
    for run in range(runs):
        a, b = rng.random(200) < 0.85, rng.random(200) < 0.55
        agrees += verdict(paired_bootstrap_diff(a, b, n_boot=2000, seed=run), +1) == AGREES
    assert agrees / runs >= 0.8


def test_compare_against_a_constant_and_names_the_unit():
    a = np.array([[1.0, 1.0, 0.75, 1.0, 0.5, 1.0, 1.0, 0.75, 1.0, 1.0]])
    c = compare(a, 0.5, +1, label_a="EX-RM", label_b="chance", unit="prompt", n_boot=2000)
    assert c.interval.estimate == pytest.approx(a.mean() - 0.5)
    assert c.test.wins_a == 9 and c.test.ties == 1 and c.verdict == "agrees with the paper"
    assert "10 prompts, 1 seed" in c.sentence()
    assert c.sentence().startswith(f"EX-RM accuracy: {a.mean():.2f} (95% CI ")  # the accuracy, not A - 0.5
    assert c.as_row()["this build"].startswith(f"{a.mean():.2f} [") and c.as_row()["this build"].endswith("vs 0.5")
