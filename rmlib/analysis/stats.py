"""Deciding claims from paired evaluation data (numpy and scipy only, no I/O).

Data layout: an evaluation set has ``n`` preference pairs; a model trained with ``S`` seeds gives an
array ``x`` of shape ``(S, n)`` with ``x[s, i] = 1`` if seed ``s`` ranks pair ``i`` correctly
(r(chosen) > r(rejected)), ``0.5`` on a tie, ``0`` otherwise (Definition 1 of the paper); accuracy is
the mean. A 1-D array is read as one seed. Two models compared with ``a - b`` must have scored the
same pairs in the same order (and the same number of seeds).

Uncertainty comes from two sources, both resampled by :func:`bootstrap_mean`: which pairs happened
to be in the evaluation set, and which seeds happened to be trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

VERDICTS = ("agrees with the paper", "contradicts it", "undecided at this size")
_CELLS_PER_CHUNK = 2**21  # bootstrap replicates x pairs held in memory at once


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at level ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_pairs: int  # for binomial_interval: the number of trials
    n_seeds: int

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class SignTest:
    """Exact paired test: pairs where A beats B, where B beats A, ties dropped, two-sided p."""

    wins_a: int
    wins_b: int
    ties: int
    p_value: float


def _as_seeds_by_pairs(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"expected shape (n_seeds, n_pairs) or (n_pairs,), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    return x


def _paired(a, b) -> np.ndarray:
    """a - b as (n_seeds, n_pairs), after checking both cover the same seeds x pairs."""
    a, b = _as_seeds_by_pairs(a), _as_seeds_by_pairs(b)
    if a.shape != b.shape:
        raise ValueError(f"paired data must have the same shape, got {a.shape} and {b.shape}")
    return a - b


def bootstrap_mean(a, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``a`` (shape (S, n)) with a two-level percentile bootstrap interval.

    Replicate ``r`` draws seeds ``s_1..s_S`` uniformly with replacement from ``0..S-1`` (only when
    S > 1; with one seed it is the ordinary bootstrap over pairs) and pairs ``p_1..p_n`` uniformly
    with replacement from ``0..n-1``, the same pairs for every drawn seed, and computes
    ``m_r = (1/(S n)) sum_j sum_k a[s_j, p_k]``. The interval is the ``(1-c)/2`` and ``(1+c)/2``
    quantiles of ``m_1..m_B`` (c = confidence). Deterministic given ``seed`` and the inputs.

    With few seeds the seed level is coarse (S = 2 gives only three distinct seed mixtures), and
    resampling S seeds understates their spread by a factor (S-1)/S in variance; treat intervals
    from 2-3 seeds as indicative. When seeds differ only by per-(seed, pair) noise, the two levels
    both count that noise, so the interval is conservative (about sqrt(2) too wide).
    """
    x = _as_seeds_by_pairs(a)
    n_seeds, n_pairs = x.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // n_pairs)
    means = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        if n_seeds > 1:
            seed_idx = rng.integers(0, n_seeds, size=(b, n_seeds))
            seed_weights = (seed_idx[:, :, None] == np.arange(n_seeds)).mean(axis=1)  # (b, S)
            per_pair = seed_weights @ x  # (b, n): each replicate's mean over its drawn seeds
        else:
            per_pair = np.broadcast_to(x, (b, n_pairs))
        pair_idx = rng.integers(0, n_pairs, size=(b, n_pairs))
        means.append(np.take_along_axis(per_pair, pair_idx, axis=1).mean(axis=1))
    low, high = np.quantile(np.concatenate(means), [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(x.mean()), float(low), float(high), confidence, n_pairs, n_seeds)


def paired_bootstrap_diff(a, b, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Accuracy of A minus accuracy of B on the same pairs, with a paired two-level bootstrap interval.

    Because the mean is linear, resampling the same seeds and the same pair indices for A and B and
    taking mean(A*) - mean(B*) is exactly :func:`bootstrap_mean` of ``d = a - b``. Pairing is what
    makes the interval narrow when the two models agree on most pairs.
    """
    return bootstrap_mean(_paired(a, b), n_boot=n_boot, confidence=confidence, seed=seed)


def difference_in_differences(a1, b1, a0, b0, n_boot: int = 10_000, confidence: float = 0.95,
                              seed: int = 0) -> Interval:
    """How much the A - B accuracy gap changes between two conditions, on the same pairs and seeds.

    ``a1, b1`` (condition 1) and ``a0, b0`` (condition 0) have shape (S, n): the same n evaluation pairs in
    the same order and the same S seeds (seed s of every array started from the same initial weights).
    The estimate is ``(mean(a1) - mean(b1)) - (mean(a0) - mean(b0))``. Since the mean is linear this is the
    mean of ``e[s, i] = (a1 - b1)[s, i] - (a0 - b0)[s, i]``, and the interval is :func:`bootstrap_mean` of
    ``e``: each replicate draws the same seeds and the same pairs for all four arrays, so everything the two
    conditions share (which pairs are hard, which seed started where) cancels.
    """
    return bootstrap_mean(_paired(_paired(a1, b1), _paired(a0, b0)), n_boot=n_boot, confidence=confidence,
                          seed=seed)


def mcnemar_exact(a, b) -> SignTest:
    """Exact two-sided sign test on the pairs where A and B differ.

    Per pair, average each model over seeds; A wins pair i if mean_s a[s, i] > mean_s b[s, i], B wins
    if it is smaller, equal pairs are dropped. Under H0 (no difference) the wins of A among the
    ``k = wins_a + wins_b`` discordant pairs are Binomial(k, 1/2); p is scipy's two-sided exact
    binomial p-value (1.0 when k = 0). With one seed of 0/1 values this is McNemar's exact test.
    """
    d = _paired(a, b).mean(axis=0)
    wins_a, wins_b = int(np.sum(d > 1e-12)), int(np.sum(d < -1e-12))
    k = wins_a + wins_b
    p = float(_sp.binomtest(wins_a, k, 0.5).pvalue) if k else 1.0
    return SignTest(wins_a, wins_b, d.size - k, p)


def minimum_detectable_difference(a, b, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true accuracy difference a two-sided level-``alpha`` test on this sample detects with ``power``.

    Normal approximation over pairs: ``d_i = mean_s (a[s, i] - b[s, i])``, ``se = sd(d) / sqrt(n)``
    (sd with ddof = 1), ``mdd = (z_{1-alpha/2} + z_{power}) * se``; at the defaults the factor is
    1.96 + 0.84 = 2.80. Seed-to-seed variation is not included, so with several seeds this is a
    lower bound. If ``sd(d)`` is 0 or n < 2 the sample says nothing about the spread and we use
    sd = 0.5: the largest sd of one model's 0/1 correctness, and the sd of ``d`` when the models
    disagree on a quarter of the pairs (``d`` can reach sd 1 at most).
    """
    d = _paired(a, b).mean(axis=0)
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    sd = sd if sd > 0 else 0.5
    return float((_sp.norm.ppf(1 - alpha / 2) + _sp.norm.ppf(power)) * sd / np.sqrt(d.size))


def verdict(interval: Interval, paper_direction: int, margin: float = 0.0) -> str:
    """Compare an interval for A - B with the paper's claim; returns one of :data:`VERDICTS`.

    * ``paper_direction = +1`` (paper: A > B) or ``-1`` (A < B): the interval lies strictly on the
      paper's side of 0 -> "agrees with the paper"; strictly on the other side -> "contradicts it";
      it contains 0 -> "undecided at this size". ``margin`` is not used.
    * ``paper_direction = 0`` (paper: A and B tie): the interval excludes 0 -> "contradicts it"; it
      lies inside ``[-margin, +margin]`` with ``margin > 0`` -> "agrees with the paper" (an
      equivalence test); otherwise -> "undecided at this size". With margin 0 a tie never "agrees".
    """
    if paper_direction not in (-1, 0, 1):
        raise ValueError(f"paper_direction must be -1, 0 or +1, got {paper_direction!r}")
    above, below = interval.low > 0, interval.high < 0
    if paper_direction == 0:
        if above or below:
            return VERDICTS[1]
        inside = margin > 0 and -margin <= interval.low and interval.high <= margin
        return VERDICTS[0] if inside else VERDICTS[2]
    if (above and paper_direction == 1) or (below and paper_direction == -1):
        return VERDICTS[0]
    return VERDICTS[1] if (above or below) else VERDICTS[2]


def signed(x: float) -> str:
    """``x`` with its sign and 2 decimals, never "-0.00": 0.123 -> "+0.12", -0.001 -> "+0.00"."""
    return f"{0.0 if round(x, 2) == 0 else x:+.2f}"


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


@dataclass(frozen=True)
class Comparison:
    """Everything needed to state one claim: interval for A - B, exact test, MDD and verdict."""

    label_a: str
    label_b: str
    paper_direction: int
    interval: Interval
    test: SignTest
    mdd: float
    verdict: str
    unit: str = "pair"  # what was resampled: "pair", or "prompt" when per-prompt means were compared
    constant_b: float | None = None  # B was a fixed accuracy (e.g. chance, 0.5), not a second model

    def sentence(self) -> str:
        iv, p = self.interval, self.test.p_value
        p_text = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
        relation = {1: ">", -1: "<"}.get(self.paper_direction)
        claim = f"{self.label_a} {relation} {self.label_b}" if relation else f"{self.label_a} and {self.label_b} tied"
        sample = f"{_plural(iv.n_pairs, self.unit)}, {_plural(iv.n_seeds, 'seed')}; exact sign test {p_text}"
        if self.constant_b is None:
            text = (f"{self.label_a} minus {self.label_b} accuracy: {signed(iv.estimate)} "
                    f"({iv.confidence * 100:g}% CI {signed(iv.low)} to {signed(iv.high)}; {sample})")
        else:
            c = self.constant_b
            text = (f"{self.label_a} accuracy: {iv.estimate + c:.2f} ({iv.confidence * 100:g}% CI {iv.low + c:.2f} "
                    f"to {iv.high + c:.2f}; {sample}) against {self.label_b}")
        text += f"; the paper has {claim}: {self.verdict}"
        if self.verdict == VERDICTS[2]:
            text += f" (this sample could detect a difference of about {self.mdd:.2f})"
        return text + "."

    def as_row(self) -> dict:
        """Numbers for a claims table. ``this build`` is "A - B [CI]", or, against a constant B,
        A's accuracy with its interval ("0.91 [0.84, 0.97]")."""
        iv, c = self.interval, self.constant_b
        text = (f"{signed(iv.estimate)} [{signed(iv.low)}, {signed(iv.high)}]" if c is None else
                f"{iv.estimate + c:.2f} [{iv.low + c:.2f}, {iv.high + c:.2f}] vs {c:g}")
        return {"estimate": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "p_value": self.test.p_value,
                "n_pairs": iv.n_pairs, "n_seeds": iv.n_seeds, "mdd": self.mdd, "verdict": self.verdict,
                "this build": text}

    def claim_row(self, claim: str, paper: str) -> dict:
        """A row of the book's claims table: the claim, the paper's finding, and :meth:`as_row`."""
        return {"claim": claim, "paper": paper, **self.as_row(), "sentence": self.sentence()}


def compare(a, b, paper_direction: int, label_a: str = "EX-RM", label_b: str = "IM-RM", *,
            n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0, margin: float = 0.0,
            alpha: float = 0.05, power: float = 0.8, unit: str = "pair") -> Comparison:
    """Paired comparison of A and B (shape (S, n) each) against the paper's direction for A - B.

    ``b`` may be a number (e.g. 0.5, chance accuracy): then A is compared with that constant."""
    constant_b = float(b) if np.ndim(b) == 0 else None
    if constant_b is not None:
        b = np.full(np.shape(_as_seeds_by_pairs(a)), constant_b)
    interval = paired_bootstrap_diff(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
    return Comparison(label_a, label_b, paper_direction, interval, mcnemar_exact(a, b),
                      minimum_detectable_difference(a, b, alpha=alpha, power=power),
                      verdict(interval, paper_direction, margin=margin), unit, constant_b)


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Exact Clopper-Pearson interval for a proportion k / n (e.g. 0 valid cycles out of 96 samples).

    ``low`` is the (1-c)/2 quantile of Beta(k, n-k+1) (0 if k = 0), ``high`` the (1+c)/2 quantile of
    Beta(k+1, n-k) (1 if k = n). Returned as an :class:`Interval` whose ``n_pairs`` is n.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = _sp.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), confidence, n, 1)
