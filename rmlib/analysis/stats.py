"""Deciding claims from paired evaluation data (numpy and scipy only, no I/O).

Data layout: an evaluation set has ``n`` preference pairs; a model trained with ``S`` seeds gives an
array ``x`` of shape ``(S, n)`` with ``x[s, i] = 1`` if seed ``s`` ranks pair ``i`` correctly
(r(chosen) > r(rejected)), ``0.5`` on a tie, ``0`` otherwise (Definition 1 of the paper); accuracy is
the mean. A 1-D array is read as one seed. Two models compared with ``a - b`` must have scored the
same pairs in the same order (and the same number of seeds).

**How claims are decided** (:func:`compare`, :func:`cluster_interval`, :func:`sign_flip_test`, :func:`verdict`).
Pairs that share a prompt (the original / paraphrased / French / Spanish versions of one UltraFeedback prompt,
the combinations of one persona prompt, one pair scored under several base models) are not independent: the
unit of inference is the *cluster* (``clusters``: one label per pair; default: every pair its own cluster).

* Interval: a t interval on cluster totals, ``d_bar +- t_{df} sqrt(V)``. ``V`` is the cluster-robust
  (sandwich) variance of the mean over clusters, with one pseudo-discordance added (sum of squared cluster
  deviations + ``(spread * mean cluster size)^2``, the Bonett-Price / Agresti-Min adjustment: a sample in which
  the two models never disagree still has spread, so a handful of pairs never gives a zero-width interval);
  with several seeds scored on the same pairs ("crossed"), plus the variance of the per-seed means over S
  (a seed is a level: training noise), Satterthwaite degrees of freedom; with seeds that each drew their own
  clusters ("nested", notebook 03), the t interval over the S per-seed estimates (S - 1 df). The sum of the two
  components counts the per-(seed, cluster) noise twice, so it is conservative. With one seed the interval
  covers evaluation noise only (:attr:`Interval.covers` says so).
* Exact test: the sign-flip permutation test of "A and B are exchangeable" on the cluster totals (averaged
  over seeds; each (seed, cluster) its own unit when nested): exact enumeration of the 2^K flips for
  K <= 14 clusters, else 20,000 random flips (p = (1 + hits) / (1 + flips)). With one pair per cluster and
  0/1 correctness it is the exact sign (McNemar) test.
* :func:`verdict`: one margin :data:`MARGIN` for every claim; "agrees" only if the interval lies in the claim's
  region and (where the region excludes 0) the exact test rejects at :data:`ALPHA`; "contradicts" only if the
  interval is disjoint from the claim's region (and, where that asserts a difference from 0 the claim's region
  does not -- the region holds 0, or the interval lies on the other side of 0 -- the exact test rejects toward
  it); else "undecided at this size". :data:`VERDICT_RULE` states it for the book.

The percentile bootstrap (:func:`bootstrap_mean`) is kept for descriptive intervals over many units; it
decides no verdict (from 4-20 clusters it is not valid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

VERDICTS = ("agrees with the paper", "contradicts it", "undecided at this size")
_CELLS_PER_CHUNK = 2**21  # bootstrap replicates x pairs held in memory at once
MARGIN = 0.05  # the one tie / equivalence / "beats by" margin of every claim (accuracy points)
ALPHA = 0.05  # each verdict's error level (two-sided; 2.5% per side)
RULES = ("direction", "non-inferiority", "size", "check")
VERDICT_RULE = (
    f"A verdict compares a 95% interval for A - B (t interval on prompt clusters; seeds as a level when there are "
    f"several) and an exact sign-flip test over clusters with the claim's region, with one margin m = {MARGIN} "
    f"everywhere. Direction rule (A beats B): the region is A - B > m; *agrees* if the whole interval is above m and "
    f"the exact test rejects A = B at {ALPHA}. Tie rule: the region is |A - B| <= m; *agrees* if the whole interval "
    f"lies within +-m (two one-sided tests, 2.5% each). Non-inferiority (B at least as good as A, within m): the region is A - B <= m; *agrees* if the whole interval is below m. Size rule (the paper states a value v): *agrees* if v lies "
    f"inside the interval and the interval and exact test exclude no difference on v's side; the region is "
    f"[v - m, v + m]. *Contradicts* only if the interval is disjoint from the region, and, where that says A and B "
    f"differ (the region holds 0, or the interval lies across 0 from it), the exact test rejects A = B in the "
    f"interval's direction; otherwise *undecided at this size*. Rows marked *check* are preconditions "
    f"of a claim, not findings. With one seed a verdict covers one training run: evaluation noise only.")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at level ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_pairs: int  # for binomial_interval: the number of trials
    n_seeds: int
    n_clusters: int | None = None  # independent units (prompts) behind the n_pairs; None: not clustered
    method: str = "percentile bootstrap"
    df: float | None = None  # degrees of freedom of a t interval
    se: float | None = None  # its standard error
    design: str = "crossed"  # "crossed": every seed scored the same pairs; "nested": each seed its own

    @property
    def covers(self) -> str:
        """What the interval's noise covers, in words."""
        if self.n_seeds == 1:
            return "one training run: evaluation noise only"
        return f"{self.n_seeds} training runs: seed and evaluation noise"

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


def _cluster_codes(clusters, n: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..K-1 (in order of first appearance) for one cluster label per pair."""
    if clusters is None:
        return np.arange(n), n
    labels = list(clusters)
    if len(labels) != n:
        raise ValueError(f"need one cluster label per pair: {len(labels)} labels for {n} pairs")
    codes, seen = np.empty(n, dtype=int), {}
    for i, label in enumerate(labels):
        codes[i] = seen.setdefault(label, len(seen))
    return codes, len(seen)


def _totals(x: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Per seed and cluster: the sum of ``x`` over the cluster's pairs, shape (S, K)."""
    return np.stack([np.bincount(codes, weights=row, minlength=k) for row in x])


def _robust_var(totals: np.ndarray, sizes: np.ndarray, mean: float, spread: float) -> float:
    """Cluster-robust variance of sum(totals) / sum(sizes) with one pseudo-discordance (see the module)."""
    k = totals.size
    if k < 2:
        return float("inf")
    ss = float(np.sum((totals - mean * sizes) ** 2)) + (spread * sizes.mean()) ** 2
    return k / (k - 1) * ss / sizes.sum() ** 2


def cluster_interval(d, clusters=None, *, nested: bool = False, confidence: float = 0.95, spread: float = 1.0,
                     value_range: tuple[float, float] = (-1.0, 1.0)) -> Interval:
    """Mean of ``d`` (shape (S, n): a per-pair difference, e.g. correctness of A minus B) with a t interval on
    clusters, seeds as a level (see the module docstring for V and df).

    ``clusters``: one label per pair (pairs of one prompt share a label); ``nested``: seed s scored its own
    clusters (labels are then read within a seed); ``spread``: the deviation of the pseudo-discordance (1 for a
    difference of two 0/1 scores, 0.5 for one score against a constant); the interval is clipped to
    ``value_range``."""
    x = _as_seeds_by_pairs(d)
    n_seeds, n_pairs = x.shape
    codes, k = _cluster_codes(clusters, n_pairs)
    sizes = np.bincount(codes, minlength=k).astype(float)
    totals = _totals(x, codes, k)
    seed_means = totals.sum(axis=1) / sizes.sum()
    mean = float(seed_means.mean())
    if nested:
        within = np.array([_robust_var(t, sizes, m, spread) for t, m in zip(totals, seed_means)])
        if n_seeds == 1:
            var, df = float(within[0]), k - 1
        else:
            var, df = max(float(np.var(seed_means, ddof=1)), float(within.mean())) / n_seeds, n_seeds - 1
    else:
        v_cluster = _robust_var(totals.mean(axis=0), sizes, mean, spread)
        v_seed = float(np.var(seed_means, ddof=1)) / n_seeds if n_seeds > 1 else 0.0
        var = v_cluster + v_seed
        if n_seeds > 1 and v_seed > 0 and np.isfinite(v_cluster):
            df = var ** 2 / (v_cluster ** 2 / (k - 1) + v_seed ** 2 / (n_seeds - 1))
        else:
            df = k - 1
    if df < 1 or not np.isfinite(var):
        low, high, se = value_range[0], value_range[1], float("inf")
    else:
        se = float(np.sqrt(var))
        half = float(_sp.t.ppf((1 + confidence) / 2, df)) * se
        low, high = max(value_range[0], mean - half), min(value_range[1], mean + half)
    return Interval(mean, float(low), float(high), confidence, n_pairs, n_seeds, n_clusters=k * (n_seeds if nested else 1),
                    method="cluster t", df=float(df), se=se, design="nested" if nested else "crossed")


@dataclass(frozen=True)
class PermutationTest:
    """Exact sign-flip test over clusters: clusters where A's total beats B's, where B's beats A's, ties; the
    two-sided p and the one-sided p for A > B (``p_greater``) and A < B (``p_less``)."""

    wins_a: int
    wins_b: int
    ties: int
    p_value: float
    p_greater: float
    p_less: float
    n_flips: int  # 2^K when exact
    exact: bool

    def p_toward(self, direction: int) -> float:
        return self.p_greater if direction > 0 else self.p_less


_EXACT_UP_TO = 14


def sign_flip_test(d, clusters=None, *, nested: bool = False, n_flips: int = 20_000, seed: int = 0) -> PermutationTest:
    """Exact sign-flip permutation test of "A and B are exchangeable within each cluster" on the cluster totals
    of ``d`` (shape (S, n)) averaged over seeds (``nested``: every (seed, cluster) is its own unit). The
    statistic is the sum of the totals; all 2^K sign vectors when K <= 14, else ``n_flips`` random ones (then
    p = (1 + hits) / (1 + n_flips), still a valid p-value)."""
    x = _as_seeds_by_pairs(d)
    codes, k = _cluster_codes(clusters, x.shape[1])
    totals = _totals(x, codes, k)
    t = totals.ravel() if nested else totals.mean(axis=0)
    t = np.where(np.abs(t) < 1e-12, 0.0, t)
    t = t[t != 0]  # a zero total contributes nothing under any flip
    wins_a, wins_b = int(np.sum(t > 0)), int(np.sum(t < 0))
    ties = (k * (x.shape[0] if nested else 1)) - t.size
    if t.size == 0:
        return PermutationTest(0, 0, ties, 1.0, 1.0, 1.0, 1, True)
    observed = t.sum()
    eps = 1e-9 * max(1.0, float(np.abs(t).sum()))
    if t.size <= _EXACT_UP_TO:
        signs = 1 - 2 * ((np.arange(2 ** t.size)[:, None] >> np.arange(t.size)) & 1)
        null = signs @ t
        p2 = float(np.mean(np.abs(null) >= abs(observed) - eps))
        pg, pl = float(np.mean(null >= observed - eps)), float(np.mean(null <= observed + eps))
        return PermutationTest(wins_a, wins_b, ties, p2, pg, pl, 2 ** t.size, True)
    rng = np.random.default_rng(seed)
    null = np.concatenate([(rng.integers(0, 2, size=(b, t.size)) * 2 - 1) @ t
                           for b in np.diff(np.r_[0:n_flips:max(1, _CELLS_PER_CHUNK // t.size), n_flips])])

    def p(hits):
        return float((1 + np.sum(hits)) / (1 + n_flips))
    return PermutationTest(wins_a, wins_b, ties, p(np.abs(null) >= abs(observed) - eps), p(null >= observed - eps),
                           p(null <= observed + eps), n_flips, False)


def verdict(interval: Interval, paper_direction: int, margin: float = 0.0, *, test=None,
            paper_value: float | None = None, alpha: float = ALPHA, non_inferiority: bool = False) -> str:
    """Compare an interval for A - B with the paper's claim; returns one of :data:`VERDICTS`
    (:data:`VERDICT_RULE` in words).

    The claim's region: ``paper_value`` v given (size rule): ``[v - margin, v + margin]``; ``non_inferiority``
    (the paper: B at least as good as A when ``paper_direction`` = -1, A at least as good as B when +1):
    ``(-inf, margin]`` resp. ``[-margin, inf)``; else ``paper_direction`` +1: ``(margin, inf)``, -1:
    ``(-inf, -margin)``, 0 (a tie): ``[-margin, margin]``.

    * "agrees": size rule: v is inside the interval and the interval lies strictly on v's side of 0; direction:
      the whole interval is beyond the margin on the paper's side; tie: ``margin > 0``, the interval has
      positive width and lies within ``[-margin, margin]`` (two one-sided tests at (1 - confidence)/2 each).
      Where the region excludes 0, ``test`` (a :class:`PermutationTest` or :class:`SignTest`), when given, must
      also reject no difference at ``alpha`` (one-sided alpha/2 toward the paper where it has ``p_toward``).
    * "contradicts": the interval is disjoint from the region; where this asserts that A and B differ (the
      interval excludes 0 and the region does not lie wholly on the interval's side of 0: a tie's or a
      non-inferiority region, or an interval across 0 from a direction or size region), ``test`` must also
      reject in the interval's direction. An interval between 0 and a size or direction region (an effect
      smaller than the paper's) contradicts on the interval alone, as one that contains 0 does: the test of
      A = B cannot back a statement about distance from v.
    * otherwise "undecided at this size".
    """
    if paper_direction not in (-1, 0, 1):
        raise ValueError(f"paper_direction must be -1, 0 or +1, got {paper_direction!r}")
    low, high = interval.low, interval.high

    def rejects(direction: int) -> bool:
        if test is None:
            return True
        if hasattr(test, "p_toward"):
            return test.p_toward(direction) < alpha / 2
        return test.p_value < alpha

    def contradiction(region_low: float, region_high: float) -> bool:
        if low <= region_high and high >= region_low:
            return False
        if low > 0 and region_low <= 0:  # says A > B where the claim's region allows A <= B
            return rejects(+1)
        if high < 0 and region_high >= 0:  # says A < B where the region allows A >= B
            return rejects(-1)
        return True  # A - B outside the region but not across 0 from it: the interval decides

    if paper_value is not None:
        side = 1 if paper_value > 0 else -1
        beyond_zero = low > 0 if side > 0 else high < 0
        if low <= paper_value <= high and beyond_zero and rejects(side):
            return VERDICTS[0]
        return VERDICTS[1] if contradiction(paper_value - margin, paper_value + margin) else VERDICTS[2]
    if non_inferiority:
        if paper_direction == 0:
            raise ValueError("non-inferiority needs paper_direction -1 (B at least as good) or +1 (A at least as good)")
        inside = high < margin if paper_direction < 0 else low > -margin
        if inside and high > low:
            return VERDICTS[0]
        region = (-np.inf, margin) if paper_direction < 0 else (-margin, np.inf)
        return VERDICTS[1] if contradiction(*region) else VERDICTS[2]
    if paper_direction == 0:
        if margin > 0 and high > low and -margin <= low and high <= margin:
            return VERDICTS[0]
        return VERDICTS[1] if contradiction(-margin, margin) else VERDICTS[2]
    if paper_direction == 1:
        if low > margin and rejects(+1):
            return VERDICTS[0]
        return VERDICTS[1] if contradiction(np.nextafter(margin, np.inf), np.inf) else VERDICTS[2]
    if high < -margin and rejects(-1):
        return VERDICTS[0]
    return VERDICTS[1] if contradiction(-np.inf, np.nextafter(-margin, -np.inf)) else VERDICTS[2]


def signed(x: float) -> str:
    """``x`` with its sign and 2 decimals, never "-0.00": 0.123 -> "+0.12", -0.001 -> "+0.00"."""
    return f"{0.0 if round(x, 2) == 0 else x:+.2f}"


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def detectable_difference(interval: Interval, alpha: float = ALPHA, power: float = 0.8) -> float:
    """Smallest true |A - B| that the interval's test detects with ``power``: ``(t_{df,1-alpha/2} + z_power) se``."""
    if interval.se is None or not np.isfinite(interval.se) or interval.df is None:
        return float("inf")
    return float((_sp.t.ppf(1 - alpha / 2, interval.df) + _sp.norm.ppf(power)) * interval.se)


def units_needed(interval: Interval, distance: float, n_seeds: int, alpha: float = ALPHA,
                 power: float = 0.8) -> int | None:
    """Clusters per seed needed, at ``n_seeds`` seeds, for a ``power`` chance that the interval clears
    ``distance`` (the paper's effect minus the margin for a direction claim, the margin minus |effect| for a
    tie, |effect| for a size claim). Normal formula: with this sample's variance per cluster-and-seed
    ``w = se^2 * K * S`` (K clusters per seed, S seeds), ``K_needed = w (z_{1-alpha/2} + z_power)^2 /
    (distance^2 * n_seeds)``. It treats seed-to-seed variation like cluster noise, so with one seed measured
    (none seen) it is a lower bound. None when ``distance <= 0`` (no sample size suffices)."""
    if distance <= 0 or interval.se is None or not np.isfinite(interval.se):
        return None
    per_seed = (interval.n_clusters or interval.n_pairs) // (interval.n_seeds if interval.design == "nested" else 1)
    w = interval.se ** 2 * per_seed * interval.n_seeds
    z = _sp.norm.ppf(1 - alpha / 2) + _sp.norm.ppf(power)
    return int(np.ceil(w * z ** 2 / (distance ** 2 * n_seeds)))


@dataclass(frozen=True)
class Comparison:
    """Everything needed to state one claim: interval for A - B, exact test, detectable difference and verdict."""

    label_a: str
    label_b: str
    paper_direction: int
    interval: Interval
    test: PermutationTest
    mdd: float
    verdict: str
    unit: str = "pair"  # what a cluster is: "pair", "prompt", ...
    constant_b: float | None = None  # B was a fixed accuracy (e.g. chance, 0.5), not a second model
    rule: str = "direction"  # :data:`RULES`: which verdict rule (size: paper_value is the paper's A - B)
    paper_value: float | None = None
    margin: float = MARGIN
    what: str = "accuracy"  # the quantity A and B are ("" when the labels say it)

    @property
    def test_name(self) -> str:
        kind = "exact" if self.test.exact else f"{self.test.n_flips} random"
        return f"sign-flip over {self.unit}s ({kind})"

    @property
    def rule_text(self) -> str:
        if self.rule == "size":
            shown = self.paper_value + (self.constant_b or 0.0)
            return f"size: paper's {shown:.2f} inside the interval"
        if self.rule == "check":
            return "check (precondition, not a finding)"
        if self.rule == "non-inferiority":
            return f"non-inferiority, margin {self.margin:g}"
        return ("tie within +-" if self.paper_direction == 0 else "direction, beyond +-") + f"{self.margin:g}"

    def sentence(self) -> str:
        iv, p = self.interval, self.test.p_value
        p_text = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
        relation = {1: ">", -1: "<"}.get(self.paper_direction)
        if self.rule == "non-inferiority":
            relation = "<=" if self.paper_direction < 0 else ">="
        claim = f"{self.label_a} {relation} {self.label_b}" if relation else f"{self.label_a} and {self.label_b} tied"
        clusters = iv.n_clusters if iv.n_clusters is not None else iv.n_pairs
        if iv.design == "nested":
            clusters //= iv.n_seeds
        sample = (f"{_plural(iv.n_pairs, 'pair')} in {_plural(clusters, self.unit)}" if clusters != iv.n_pairs
                  else _plural(iv.n_pairs, self.unit))
        if iv.design == "nested" and iv.n_seeds > 1:
            sample += " per seed"
        sample += f", {_plural(iv.n_seeds, 'seed')}; {self.test_name} {p_text}"
        if self.constant_b is None:
            text = (f"{self.label_a} minus {self.label_b}{' ' + self.what if self.what else ''}: {signed(iv.estimate)} "
                    f"({iv.confidence * 100:g}% CI {signed(iv.low)} to {signed(iv.high)}; {sample})")
        else:
            c = self.constant_b
            text = (f"{self.label_a} accuracy: {iv.estimate + c:.2f} ({iv.confidence * 100:g}% CI {iv.low + c:.2f} "
                    f"to {iv.high + c:.2f}; {sample}) against {self.label_b}")
        if self.rule == "check":
            passed = {VERDICTS[0]: "passed", VERDICTS[1]: "failed"}.get(self.verdict, "undecided")
            return text + f"; check ({claim}): {passed}."
        text += f"; the paper has {claim} [{self.rule_text}]: {self.verdict}, {iv.covers}"
        if self.verdict == VERDICTS[2]:
            text += f" (this sample could detect a difference of about {self.mdd:.2f})"
        return text + "."

    def as_row(self) -> dict:
        """Numbers for a claims table. ``this build`` is "A - B [CI]", or, against a constant B,
        A's accuracy with its interval ("0.91 [0.84, 0.97]")."""
        iv, c = self.interval, self.constant_b
        text = (f"{signed(iv.estimate)} [{signed(iv.low)}, {signed(iv.high)}]" if c is None else
                f"{iv.estimate + c:.2f} [{iv.low + c:.2f}, {iv.high + c:.2f}] vs {c:g}")
        verdict_text = self.verdict if self.rule != "check" else (
            "check: " + {VERDICTS[0]: "passed", VERDICTS[1]: "failed"}.get(self.verdict, "undecided"))
        return {"estimate": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "p_value": self.test.p_value,
                "n_pairs": iv.n_pairs, "n_clusters": iv.n_clusters, "n_seeds": iv.n_seeds, "mdd": self.mdd,
                "verdict": verdict_text, "this build": text, "test": self.test_name, "rule": self.rule_text,
                "covers": iv.covers, "kind": "check" if self.rule == "check" else "claim",
                "needed": self.needed()}

    def needed(self) -> dict | None:
        """For an undecided claim with a stated paper effect: clusters needed at 1 and at 3 seeds for an 80%
        chance to decide it if the paper's effect is the truth (:func:`units_needed`); None otherwise."""
        if self.verdict != VERDICTS[2] or self.rule == "check" or (self.paper_value is None
                                                                     and self.paper_direction != 0):
            return None
        effect = abs(self.paper_value or 0.0)
        if self.rule == "size":
            distance = effect
        elif self.rule == "non-inferiority":  # region A - B <= m (direction -1) or >= -m (+1)
            distance = self.margin + self.paper_direction * (self.paper_value or 0.0)
        else:
            distance = self.margin - effect if self.paper_direction == 0 else effect - self.margin
        return {"effect": self.paper_value, "distance": distance,
                **{f"clusters at {s} seed{'s' if s > 1 else ''}": units_needed(self.interval, distance, s)
                   for s in (1, 3)}}

    def claim_row(self, claim: str, paper: str) -> dict:
        """A row of the book's claims table: the claim, the paper's finding, and :meth:`as_row`."""
        return {"claim": claim, "paper": paper, **self.as_row(), "sentence": self.sentence()}


def compare(a, b, paper_direction: int, label_a: str = "EX-RM", label_b: str = "IM-RM", *,
            n_boot: int = 20_000, confidence: float = 0.95, seed: int = 0, margin: float = MARGIN,
            alpha: float = ALPHA, power: float = 0.8, unit: str = "pair", clusters=None, nested: bool = False,
            rule: str = "direction", paper_value: float | None = None) -> Comparison:
    """Paired comparison of A and B (shape (S, n) each) against the paper's claim about A - B.

    ``b`` may be a number (e.g. 0.5, chance accuracy): then A is compared with that constant. ``clusters``:
    one label per pair (pairs sharing a prompt); ``nested``: each seed scored its own clusters; ``rule``: one of
    :data:`RULES` ("size" needs ``paper_value``, the paper's A - B; "check" marks a precondition, decided by
    the direction rule with margin 0); ``paper_value`` (the paper's A - B) also sizes the power table of an
    undecided claim (:meth:`Comparison.needed`); ``n_boot``: random sign flips when there are more than 14
    clusters."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "size" and paper_value is None:
        raise ValueError("rule 'size' needs paper_value (the paper's A - B)")
    constant_b = float(b) if np.ndim(b) == 0 else None
    if constant_b is not None:
        b = np.full(np.shape(_as_seeds_by_pairs(a)), constant_b)
        spread, value_range = 0.5, (-constant_b, 1 - constant_b)
    else:
        spread, value_range = 1.0, (-1.0, 1.0)
    d = _paired(a, b)
    interval = cluster_interval(d, clusters, nested=nested, confidence=confidence, spread=spread,
                                value_range=value_range)
    test = sign_flip_test(d, clusters, nested=nested, n_flips=n_boot, seed=seed)
    used_margin = 0.0 if rule == "check" else margin
    v = verdict(interval, paper_direction, used_margin, test=test, alpha=alpha,
                paper_value=paper_value if rule == "size" else None, non_inferiority=rule == "non-inferiority")
    return Comparison(label_a, label_b, paper_direction, interval, test,
                      detectable_difference(interval, alpha, power), v, unit, constant_b, rule, paper_value,
                      used_margin)


def contrast(parts, *, confidence: float = 0.95, n_flips: int = 20_000, seed: int = 0) -> tuple[Interval, PermutationTest]:
    """A linear contrast of per-pair differences over *disjoint* cluster sets, seeds crossed:
    ``sum_j c_j mean(d_j)`` with ``parts = [(c_j, d_j (S, n_j), clusters_j), ...]`` (e.g. the thesis'
    difference in differences: the EX - IM gap under token-level shift minus the gap under domain shift,
    ``[(+1, d_token, prompts), (-1, d_domain, pairs)]``). The variance is the sum of the parts' cluster-robust
    variances (with their pseudo-discordances) plus the variance over seeds of the per-seed contrast; the test
    flips the signs of every part's cluster totals scaled by ``c_j / n_j`` (exact when every part's A - B is 0;
    when the parts share a non-zero gap the flips spread wider than the null, so the test is conservative)."""
    seeds = {(_as_seeds_by_pairs(d)).shape[0] for _, d, _ in parts}
    if len(seeds) != 1:
        raise ValueError(f"every part needs the same seeds, got {sorted(seeds)}")
    n_seeds = seeds.pop()
    per_seed, v_cluster, units, dfs, n_pairs, k_total = 0.0, 0.0, [], [], 0, 0
    for c, d, clusters in parts:
        x = _as_seeds_by_pairs(d)
        codes, k = _cluster_codes(clusters, x.shape[1])
        sizes = np.bincount(codes, minlength=k).astype(float)
        totals = _totals(x, codes, k)
        means = totals.sum(axis=1) / sizes.sum()
        per_seed = per_seed + c * means
        v = c ** 2 * _robust_var(totals.mean(axis=0), sizes, float(means.mean()), 1.0)
        v_cluster += v
        dfs.append((v, k - 1))
        units.append(c * totals.mean(axis=0) / sizes.sum())
        n_pairs, k_total = n_pairs + x.shape[1], k_total + k
    estimate = float(np.mean(per_seed))
    v_seed = float(np.var(per_seed, ddof=1)) / n_seeds if n_seeds > 1 else 0.0
    var = v_cluster + v_seed
    terms = [v ** 2 / df for v, df in dfs if df > 0] + ([v_seed ** 2 / (n_seeds - 1)] if v_seed > 0 else [])
    df = var ** 2 / sum(terms) if terms and np.isfinite(var) else 0
    if df < 1 or not np.isfinite(var):
        low, high, se = -2.0, 2.0, float("inf")
    else:
        se = float(np.sqrt(var))
        half = float(_sp.t.ppf((1 + confidence) / 2, df)) * se
        low, high = max(-2.0, estimate - half), min(2.0, estimate + half)
    interval = Interval(estimate, float(low), float(high), confidence, n_pairs, n_seeds, n_clusters=k_total,
                        method="cluster t", df=float(df), se=se)
    test = sign_flip_test(np.concatenate(units)[None, :], None, n_flips=n_flips, seed=seed)
    return interval, test


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control at any level alpha: reject where adjusted
    p <= alpha). Sorted ascending, ``p_(i) * (m - i + 1)`` made monotone and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Exact Clopper-Pearson interval for a proportion k / n (e.g. 0 valid cycles out of 96 samples).

    ``low`` is the (1-c)/2 quantile of Beta(k, n-k+1) (0 if k = 0), ``high`` the (1+c)/2 quantile of
    Beta(k+1, n-k) (1 if k = n). Returned as an :class:`Interval` whose ``n_pairs`` is n.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = _sp.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), confidence, n, 1)
