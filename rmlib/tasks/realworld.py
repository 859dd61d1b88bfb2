"""Section 5.2: real-world token-level and domain shifts (Tables 1-10, Figures 2, 5-10, Appendix D.3).

Two settings. Each trains on one data set and evaluates on the same seven test sets, which it sorts
into three categories (Section 5.2.1):

============================  ===========================  ============================================
category                      general chat (train UF)      math (train RewardMATH, 1000 of 2000 rows)
============================  ===========================  ============================================
in-distribution               UF                           RewardMATH
token-level shift             UF: Paraphrased / French /   RB: Math
                              Spanish
domain shift                  RB: Math, RewardMATH,        UF, UF: Paraphrased / French / Spanish,
                              RB: Code                     RB: Code
============================  ===========================  ============================================

(UF = UltraFeedback, RB = RewardBench.) :func:`load_setting` reads the rows through
:mod:`rmlib.data`, drops malformed rows, takes the paper's own 1000 RewardMATH training rows (the
official code's ``torch.randperm(2000, generator seeded 517)[:1000]``), drops -- never truncates -- rows
whose prompt+response is longer than a token cap (:class:`rmlib.formatting.SequenceTooLong`),
subsamples, and reports every count per data set. The four UF test sets are filtered and subsampled
together by ``id`` (:func:`align_rows`), so the token-level sets hold the in-distribution set's prompts.

Aggregation follows the paper's tables. Table 1 / 6 ("means across the models and evaluation datasets,
with standard deviation computed based on three random seeds"): for every seed, the metric is averaged
over all (model, data set) cells of a category; the table shows the mean and the standard deviation
(ddof=0, as :func:`rmlib.metrics.summarize`) of these per-seed averages. Tables 3/5/8/10 do the same
per data set (per seed: mean over models). Win-rates (Figures 2, 5, 8; Tables 2, 4, 7, 9) count matched
evaluations (same model, seed and data set) with :func:`rmlib.metrics.win_rate` and its 1% tie rule.

Every EX vs IM comparison goes through :mod:`rmlib.analysis.stats` (:func:`compare_rms`: paired bootstrap
intervals over the same pairs with seeds as a second level, an exact sign test, and a verdict against the
paper's direction, :func:`paper_direction`). :func:`math_overlap` counts the paper's overlap caveats.

Beyond the paper, :func:`pair_overlap` measures how much of an evaluation pair's response text already
occurred in the training responses (n-gram containment, defined there), so that accuracy can be read
as a function of token overlap (:func:`accuracy_by_overlap`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis import stats
from ..data import PAPER_SUBSET_SEED, load_preferences, paper_subset
from ..metrics import win_rate
from ..formatting import ChatFormatter, SequenceTooLong, grm_prompt

IN_DISTRIBUTION = "in-distribution"
TOKEN_LEVEL = "token-level shift"
DOMAIN = "domain shift"
CATEGORIES = (IN_DISTRIBUTION, TOKEN_LEVEL, DOMAIN)

# The seven evaluation sets, in the paper's table order (within a category), and their short labels.
EVAL_SETS = ("ultrafeedback", "ultrafeedback_paraphrased", "ultrafeedback_french", "ultrafeedback_spanish",
             "rewardbench_math", "rewardmath", "rewardbench_code")
LABELS = {"ultrafeedback": "UF", "ultrafeedback_paraphrased": "UF: Paraphrased",
          "ultrafeedback_french": "UF: French", "ultrafeedback_spanish": "UF: Spanish",
          "rewardbench_math": "RB: Math", "rewardmath": "RewardMATH", "rewardbench_code": "RB: Code"}
RM_LABELS = {"ex": "EX-RM", "im": "IM-RM", "grm": "EX-GRM", "ex:mean": "EX-RM (all repr)",
             "im:no_ref": "IM-RM (no ref)", "im:no_ref_unscaled": "IM-RM (no ref, no β)"}
DEFAULT_VARIANTS = {"ex": "last", "im": "ref", "grm": "yes"}


@dataclass(frozen=True)
class Setting:
    """One of the two settings of Section 5.2.

    ``train_size``: the paper's number of training rows (UF: 2000, of which only 200 exist offline;
    RewardMATH: 1000 sampled from the 2000-row split). ``categories``: evaluation set -> category."""

    name: str
    train_set: str
    train_size: int
    categories: dict

    @property
    def results_setting(self) -> str:
        """The folder name under ``results_dir`` (distinct from the other notebooks' settings)."""
        return f"realworld-{self.name}"

    def eval_sets(self, category: str | None = None) -> list[str]:
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; accepted: {CATEGORIES}")
        return [s for s in EVAL_SETS if category is None or self.categories[s] == category]


SETTINGS = {
    "chat": Setting("chat", "ultrafeedback", 2000, {
        "ultrafeedback": IN_DISTRIBUTION,
        "ultrafeedback_paraphrased": TOKEN_LEVEL, "ultrafeedback_french": TOKEN_LEVEL,
        "ultrafeedback_spanish": TOKEN_LEVEL,
        "rewardbench_math": DOMAIN, "rewardmath": DOMAIN, "rewardbench_code": DOMAIN}),
    "math": Setting("math", "rewardmath", 1000, {
        "rewardmath": IN_DISTRIBUTION,
        "rewardbench_math": TOKEN_LEVEL,
        "ultrafeedback": DOMAIN, "ultrafeedback_paraphrased": DOMAIN, "ultrafeedback_french": DOMAIN,
        "ultrafeedback_spanish": DOMAIN, "rewardbench_code": DOMAIN}),
}


def get_setting(name: str) -> Setting:
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; accepted: {', '.join(SETTINGS)}")
    return SETTINGS[name]


# ------------------------------------------------------------------------------------------ loading

def length_encoders(tokenizer, rm_types, use_chat_template: bool | None = None) -> list:
    """Functions ``(prompt, response) -> Encoded`` giving the token ids every reward-model type in
    ``rm_types`` will see: the chat-formatted prompt+response for EX-/IM-RMs, the verification prompt
    I[x, y] (Appendix D.2) for EX-GRMs."""
    formatter = ChatFormatter(tokenizer, use_chat_template=use_chat_template)
    encoders = []
    if any(t in ("ex", "im") for t in rm_types):
        encoders.append(formatter.encode)
    if "grm" in rm_types:
        encoders.append(lambda prompt, response: formatter.encode_prompt(grm_prompt(prompt, response)))
    unknown = sorted(set(rm_types) - {"ex", "im", "grm"})
    if unknown:
        raise ValueError(f"unknown reward-model type(s) {unknown}; accepted: ex, im, grm")
    return encoders


def fits(row: dict, encoders, max_length: int | None) -> bool:
    """Whether both sequences of ``row`` (prompt+chosen, prompt+rejected) have at most ``max_length``
    tokens under every encoder (``None``: no cap)."""
    if max_length is None:
        return True
    for encode in encoders:
        for key in ("chosen", "rejected"):
            try:
                if len(encode(row["prompt"], row[key])) > max_length:
                    return False
            except SequenceTooLong:
                return False
    return True


def subsample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """A seeded random subset of ``n`` rows in their original order (all rows if ``n`` is None or larger)."""
    if n is None or n >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


@dataclass
class LoadedSetting:
    """The rows one setting trains and evaluates on, and a per-data-set account of what was dropped.

    ``report`` has one row per (data set, split): ``available`` (rows in the file), ``malformed``
    (dropped, see :mod:`rmlib.data`), ``paper_sample`` (rows left after the paper's own sampling: the
    1000 RewardMATH training rows), ``unmatched`` (aligned sets: rows whose ``id`` is missing from another
    version), ``too_long`` (this version is longer than the cap), ``too_long_elsewhere`` (aligned sets:
    this version fits but another version of the same ``id`` does not), ``used`` and ``why`` (one line)."""

    setting: Setting
    train_rows: list[dict]
    eval_rows: dict            # name -> rows
    report: pd.DataFrame
    notes: list = field(default_factory=list)

    def eval_sets(self):
        """``{name: rmlib.experiment.EvalSet}`` for :func:`rmlib.experiment.run_experiment`."""
        from ..experiment import EvalSet

        return {name: EvalSet(rows, self.setting.categories[name]) for name, rows in self.eval_rows.items()}


# The UltraFeedback test set and its three GPT-4.1 rewrites: the same 200 prompts, matched by ``id``.
ALIGNED_SETS = ("ultrafeedback", "ultrafeedback_paraphrased", "ultrafeedback_french", "ultrafeedback_spanish")


def align_rows(versions: dict, encoders, max_length: int | None, n_keep: int | None, seed: int):
    """Filter and subsample several versions of one data set together, by ``id``.

    ``versions``: name -> rows (each with an ``id``; the first name gives the order). An ``id`` is kept
    only if every version has it and every version's row fits ``max_length`` (:func:`fits`); then one
    seeded subset of ``n_keep`` ids (:func:`subsample`) is taken for all. Returns ``(rows, counts)``:
    name -> the kept rows, in the same ``id`` order for every version, and name -> ``{"unmatched",
    "too_long", "too_long_elsewhere"}``."""
    index = {}
    for name, rows in versions.items():
        ids = [r.get("id") for r in rows]
        if any(i is None for i in ids):
            raise ValueError(f"{name}: rows need an 'id' field to be aligned with {list(versions)}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name}: duplicate ids; cannot align with {list(versions)}")
        index[name] = dict(zip(ids, rows))
    first = next(iter(versions))
    common = [i for i in index[first] if all(i in index[n] for n in versions)]
    fit = {n: {i: fits(index[n][i], encoders, max_length) for i in common} for n in versions}
    kept = [i for i in common if all(fit[n][i] for n in versions)]
    chosen = subsample(kept, n_keep, seed)
    counts = {n: {"unmatched": len(index[n]) - len(common),
                  "too_long": sum(not f for f in fit[n].values()),
                  "too_long_elsewhere": sum(fit[n].values()) - len(kept)} for n in versions}
    return {n: [index[n][i] for i in chosen] for n in versions}, counts


def load_setting(setting: str | Setting, tokenizer=None, rm_types=("ex", "im"), max_length: int | None = None,
                 n_train: int | None = None, n_eval: int | None = None, data_dir=None, seed: int = 0,
                 eval_names=None, use_chat_template: bool | None = None) -> LoadedSetting:
    """Training and evaluation rows of a setting.

    Per data set: read the split (malformed rows dropped and counted; the UF training file has one,
    chosen == rejected at line 63); for the math setting's training set, take the paper's own 1000 of the
    2000 RewardMATH rows (:func:`rmlib.data.paper_subset` with seed 517, as the official code); drop rows
    with a sequence longer than ``max_length`` tokens for any of ``rm_types`` (needs ``tokenizer``); keep
    a seeded random subset of ``n_train`` / ``n_eval`` rows (``None``: all).

    The requested evaluation sets among :data:`ALIGNED_SETS` are filtered and subsampled together by
    ``id`` (:func:`align_rows`): a row enters only if all their versions fit, so every token-level set
    holds the same prompts, in the same order, as the in-distribution set. Raises ``ValueError`` if a set
    ends up empty."""
    setting = get_setting(setting) if isinstance(setting, str) else setting
    if max_length is not None and tokenizer is None:
        raise ValueError("a max_length cap needs the model's tokenizer to count tokens")
    for name, value in (("max_length", max_length), ("n_train", n_train), ("n_eval", n_eval)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be None or a positive integer, got {value!r}")
    names = list(eval_names) if eval_names is not None else setting.eval_sets()
    unknown = [n for n in names if n not in setting.categories]
    if unknown:
        raise ValueError(f"unknown evaluation set(s) {unknown}; accepted: {list(setting.categories)}")
    encoders = length_encoders(tokenizer, rm_types, use_chat_template) if max_length is not None else []
    cap = f"max_length={max_length}"
    report, notes = [], []

    def read(name, split):
        prefs = load_preferences(name, split, data_dir=data_dir, on_error="drop")
        notes.extend(prefs.notes)
        return prefs.rows, {"available": len(prefs.rows) + prefs.dropped, "malformed": prefs.dropped}

    def record(name, split, counts, used, why):
        if not used:
            raise ValueError(f"{name}/{split}: no rows left ({why}); raise the cap")
        report.append({"data_set": name, "label": LABELS[name], "split": split,
                       "role": "train" if split == "train" else setting.categories[name],
                       "unmatched": 0, "too_long_elsewhere": 0, **counts, "used": len(used), "why": why})

    def prepare(name, split, n_keep, paper_size=None):
        rows, counts = read(name, split)
        sampled = rows if paper_size is None else paper_subset(rows, paper_size, PAPER_SUBSET_SEED)
        kept = [r for r in sampled if fits(r, encoders, max_length)]
        used = subsample(kept, n_keep, seed)
        why = (f"the paper's {len(sampled)} of {len(rows)} (seed {PAPER_SUBSET_SEED}); " if paper_size else "") + \
            f"{len(kept)} fit {cap}" + (f"; seeded subset of {n_keep}" if len(used) < len(kept) else "")
        record(name, split, {**counts, "paper_sample": len(sampled), "too_long": len(sampled) - len(kept)}, used, why)
        return used

    train_rows = prepare(setting.train_set, "train", n_train,
                         paper_size=setting.train_size if setting.name == "math" else None)
    aligned = [n for n in names if n in ALIGNED_SETS]
    eval_rows = {}
    if len(aligned) > 1:
        read_rows = {n: read(n, "test") for n in aligned}
        rows, counts = align_rows({n: r for n, (r, _) in read_rows.items()}, encoders, max_length, n_eval, seed)
        labels = ", ".join(LABELS[n] for n in aligned)
        for n in aligned:
            c = counts[n]
            matched = len(read_rows[n][0]) - c["unmatched"]
            fitting = matched - c["too_long"] - c["too_long_elsewhere"]
            why = (f"aligned by id with {labels}: {matched} ids in all versions, {c['too_long']} too long here, "
                   f"{c['too_long_elsewhere']} more too long in another version ({cap})"
                   + (f"; seeded subset of {n_eval}" if len(rows[n]) < fitting else ""))
            record(n, "test", {**read_rows[n][1], "paper_sample": len(read_rows[n][0]), **c}, rows[n], why)
        eval_rows.update(rows)
    for name in names:
        if name not in eval_rows:
            eval_rows[name] = prepare(name, "test", n_eval)
    eval_rows = {name: eval_rows[name] for name in names}
    report.sort(key=lambda r: (r["split"] != "train", names.index(r["data_set"]) if r["split"] != "train" else 0))
    columns = ["data_set", "label", "split", "role", "available", "malformed", "paper_sample", "unmatched",
               "too_long", "too_long_elsewhere", "used", "why"]
    return LoadedSetting(setting, train_rows, eval_rows, pd.DataFrame(report)[columns], notes)


# -------------------------------------------------------------------------------------- aggregation

def rm_label(rm_type: str, variant: str | None) -> str:
    """"ex", "im", "grm" for the paper's standard variants, else e.g. "ex:mean", "im:no_ref"."""
    if variant is None or variant == DEFAULT_VARIANTS.get(rm_type):
        return rm_type
    return f"{rm_type}:{variant}"


def add_rm_column(results: pd.DataFrame) -> pd.DataFrame:
    """A copy of a tidy results table with an ``rm`` column (see :func:`rm_label`)."""
    out = results.copy()
    out["rm"] = [rm_label(t, v) for t, v in zip(out["rm_type"], out["variant"])]
    return out


def aggregate(results: pd.DataFrame, by=("category",), metrics=("accuracy", "margin"),
              rm_column: str = "rm") -> pd.DataFrame:
    """Mean and std over seeds of per-seed averages (Tables 1, 3, 5, 6, 8, 10).

    For each seed, ``metrics`` are averaged over all rows of a group ``by`` + reward model (i.e. over
    models and data sets for ``by=("category",)``; over models for ``by=("category", "eval_set")``);
    the result holds, per group and reward model, ``<metric>_mean``, ``<metric>_std`` (ddof=0 over
    seeds, 0 for one seed) and ``n_seeds``, ``n_cells`` (rows averaged per seed)."""
    by = list(by)
    missing = [c for c in by + list(metrics) + [rm_column, "seed"] if c not in results]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}")
    if results.empty:
        raise ValueError("no results to aggregate")
    keys = by + [rm_column]
    per_seed = results.groupby(keys + ["seed"], sort=False)[list(metrics)].agg(["mean", "size"])
    out = {}
    for metric in metrics:
        grouped = per_seed[(metric, "mean")].groupby(level=keys, sort=False)
        out[f"{metric}_mean"] = grouped.mean()
        out[f"{metric}_std"] = grouped.std(ddof=0)
    sizes = per_seed[(metrics[0], "size")].groupby(level=keys, sort=False)
    out["n_seeds"] = sizes.size()
    out["n_cells"] = sizes.mean()
    return pd.DataFrame(out).reset_index()


def paper_style_table(agg: pd.DataFrame, rms=("ex", "im"), by=("category",), metrics=("accuracy", "margin"),
                      digits: int = 3, rm_column: str = "rm") -> pd.DataFrame:
    """Pivot :func:`aggregate` output into the paper's layout: one row per group, columns
    (metric, reward model) holding ``"mean ± std"`` strings. Rows follow the paper's order."""
    by = list(by)
    agg = agg[agg[rm_column].isin(rms)].copy()
    for metric in metrics:
        agg[metric] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"])]
    table = agg.pivot_table(index=by, columns=rm_column, values=list(metrics), aggfunc="first")
    table = table.reindex(columns=pd.MultiIndex.from_product([list(metrics), [r for r in rms if r in agg[rm_column].values]]))
    table = table.rename(columns=lambda c: RM_LABELS.get(c, c), level=1)
    return table.reindex(sort_index(table.index, by))


def sort_index(index: pd.Index, by) -> list:
    """The index's entries in the paper's order (categories, then data sets as in :data:`EVAL_SETS`)."""
    def rank(entry):
        entry = entry if isinstance(entry, tuple) else (entry,)
        key = []
        for level, value in zip(by, entry):
            if level == "category" and value in CATEGORIES:
                key.append(CATEGORIES.index(value))
            elif level == "eval_set" and value in EVAL_SETS:
                key.append(EVAL_SETS.index(value))
            else:
                key.append(str(value))
        return tuple(key)
    return sorted(index, key=rank)


def win_rates(results: pd.DataFrame, a: str = "ex", b: str = "im", group: str = "eval_set",
              match=("model", "seed", "eval_set"), rm_column: str = "rm",
              tolerance: float = 0.01) -> pd.DataFrame:
    """Win-rates of ``a`` against ``b`` (Figures 2, 5, 8; Tables 2, 4, 7, 9), per value of ``group``
    ("eval_set" or "category"). Evaluations are matched on ``match`` (same model, seed, data set) and
    compared with :func:`rmlib.metrics.win_rate` (a tie: accuracies within ``tolerance``).
    Returns one row per group: ``<a>_wins``, ``tie``, ``<b>_wins`` (percent) and ``n`` (matched pairs)."""
    if group not in results:
        raise ValueError(f"results table has no column {group!r}")
    frames = []
    for value, part in results.groupby(group, sort=False):
        if not ((part[rm_column] == a).any() and (part[rm_column] == b).any()):
            continue
        row = win_rate(part, a, b, by=match, type_column=rm_column, tolerance=tolerance)
        frames.append(pd.concat([pd.Series({group: value}), row]))
    if not frames:
        raise ValueError(f"no group of {group!r} has both {a!r} and {b!r} results")
    out = pd.DataFrame(frames)
    out["n"] = out["n"].astype(int)
    if group == "eval_set" and "category" in results:
        categories = results.drop_duplicates("eval_set").set_index("eval_set")["category"]
        out.insert(0, "category", out["eval_set"].map(categories))
        out = out.set_index(["category", "eval_set"]).reindex(sort_index(out.set_index(["category", "eval_set"]).index,
                                                                       ["category", "eval_set"])).reset_index()
    elif group == "category":
        out = out.set_index("category").reindex(sort_index(out.set_index("category").index, ["category"])).reset_index()
    return out


def training_fit(results: pd.DataFrame, rm_column: str = "rm", by=("setting",)) -> pd.DataFrame:
    """The paper's fairness check (Appendix D.3): final-epoch training loss and accuracy of every
    reward model, averaged over models and seeds (one value per run, not per evaluation set)."""
    runs = results.drop_duplicates("run_id")
    grouped = runs.groupby(list(by) + [rm_column])
    return pd.DataFrame({"train_loss": grouped["train_loss"].mean(), "train_accuracy": grouped["train_accuracy"].mean(),
                         "min_train_accuracy": grouped["train_accuracy"].min(), "runs": grouped.size()}).reset_index()


# ---------------------------------------------------------------------------- token overlap (new)

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


def example_correctness(record: dict) -> pd.DataFrame:
    """Per evaluation pair of one run record: 1 if r+ > r-, 1/2 if equal, 0 otherwise (Definition 1)."""
    frames = []
    for name, ev in record["evals"].items():
        rc, rr = np.asarray(ev["reward_chosen"]), np.asarray(ev["reward_rejected"])
        frames.append(pd.DataFrame({"eval_set": name, "category": ev.get("category"), "index": range(len(rc)),
                                    "correct": (rc > rr) + 0.5 * (rc == rr)}))
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


# --------------------------------------------------------------------------- the paper's numbers

# Table 1 (EX-RM / IM-RM) and Table 6 (EX-GRM): accuracy and normalized margin, mean over the six models
# and the data sets of a category; the +/- in the paper is over three seeds.
PAPER_CATEGORY = {  # (setting, category) -> {rm: (accuracy, margin)}
    ("chat", IN_DISTRIBUTION): {"ex": (0.752, 1.014), "im": (0.646, 0.813), "grm": (0.714, 1.075)},
    ("chat", TOKEN_LEVEL): {"ex": (0.665, 0.976), "im": (0.602, 0.763), "grm": (0.666, 0.915)},
    ("chat", DOMAIN): {"ex": (0.621, 0.807), "im": (0.720, 0.726), "grm": (0.616, 0.707)},
    ("math", IN_DISTRIBUTION): {"ex": (0.971, 1.602), "im": (0.972, 1.377), "grm": (0.979, 1.724)},
    ("math", TOKEN_LEVEL): {"ex": (0.988, 1.667), "im": (0.515, 1.035), "grm": (0.918, 1.339)},
    ("math", DOMAIN): {"ex": (0.505, 0.755), "im": (0.517, 0.604), "grm": (0.563, 0.251)},
}

# Tables 3, 5 (EX-RM, IM-RM) and 8, 10 (EX-GRM): accuracy per data set.
PAPER_DATASET_ACCURACY = {
    "chat": {"ultrafeedback": {"ex": 0.752, "im": 0.646, "grm": 0.714},
             "ultrafeedback_paraphrased": {"ex": 0.687, "im": 0.579, "grm": 0.667},
             "ultrafeedback_french": {"ex": 0.645, "im": 0.616, "grm": 0.660},
             "ultrafeedback_spanish": {"ex": 0.662, "im": 0.612, "grm": 0.672},
             "rewardbench_math": {"ex": 0.513, "im": 0.737, "grm": 0.497},
             "rewardmath": {"ex": 0.594, "im": 0.593, "grm": 0.565},
             "rewardbench_code": {"ex": 0.754, "im": 0.830, "grm": 0.786}},
    "math": {"rewardmath": {"ex": 0.971, "im": 0.972, "grm": 0.979},
             "rewardbench_math": {"ex": 0.988, "im": 0.515, "grm": 0.918},
             "ultrafeedback": {"ex": 0.487, "im": 0.475, "grm": 0.540},
             "ultrafeedback_paraphrased": {"ex": 0.467, "im": 0.433, "grm": 0.530},
             "ultrafeedback_french": {"ex": 0.484, "im": 0.475, "grm": 0.552},
             "ultrafeedback_spanish": {"ex": 0.485, "im": 0.462, "grm": 0.548},
             "rewardbench_code": {"ex": 0.604, "im": 0.740, "grm": 0.645}},
}

# Tables 2, 4 (EX-RM vs IM-RM) and 7, 9 (EX-GRM vs IM-RM): win-rates in percent (explicit, tie, IM).
PAPER_WIN_RATES = {
    ("chat", "ex"): {"ultrafeedback": (100, 0, 0), "ultrafeedback_paraphrased": (100, 0, 0),
                     "ultrafeedback_french": (72.2, 16.7, 11.1), "ultrafeedback_spanish": (88.9, 11.1, 0),
                     "rewardbench_math": (22.2, 0, 77.8), "rewardmath": (38.9, 22.2, 38.9),
                     "rewardbench_code": (0, 27.8, 72.2)},
    ("math", "ex"): {"rewardmath": (16.7, 66.6, 16.7), "rewardbench_math": (100, 0, 0),
                     "ultrafeedback": (38.9, 11.1, 50.0), "ultrafeedback_paraphrased": (55.5, 16.7, 27.8),
                     "ultrafeedback_french": (38.9, 22.2, 38.9), "ultrafeedback_spanish": (55.6, 22.2, 22.2),
                     "rewardbench_code": (11.1, 0, 88.9)},
    ("chat", "grm"): {"ultrafeedback": (100, 0, 0), "ultrafeedback_paraphrased": (100, 0, 0),
                      "ultrafeedback_french": (72.2, 27.8, 0), "ultrafeedback_spanish": (88.9, 11.1, 0),
                      "rewardbench_math": (0, 0, 100), "rewardmath": (33.3, 11.1, 55.6),
                      "rewardbench_code": (11.1, 22.2, 66.7)},
    ("math", "grm"): {"rewardmath": (44.4, 44.4, 11.2), "rewardbench_math": (100, 0, 0),
                      "ultrafeedback": (83.3, 5.6, 11.1), "ultrafeedback_paraphrased": (83.3, 16.7, 0),
                      "ultrafeedback_french": (88.9, 11.1, 0), "ultrafeedback_spanish": (100, 0, 0),
                      "rewardbench_code": (22.2, 0, 77.8)},
}


def select_protocol(results: pd.DataFrame, **values) -> pd.DataFrame:
    """The rows whose columns equal ``values`` (``None`` matches missing/NaN), e.g. the runs made with the
    same epochs, batch size, length cap and subset sizes as this notebook, from any machine. A column
    absent from the table matches only ``None``."""
    keep = pd.Series(True, index=results.index)
    for column, value in values.items():
        if column not in results:
            if value is not None:
                keep &= False
            continue
        col = results[column]
        keep &= col.isna() if value is None else (col == value)
    return results[keep]


# ------------------------------------------------------------------- statistics (through rmlib.analysis.stats)
#
# The paper's direction for A - B: +1 if its accuracy for A exceeds B's by more than PAPER_TIE, -1 if it is
# below by more than PAPER_TIE, else 0 (a tie). For the EX-RM vs IM-RM (Table 1) this gives EX > IM in the
# chat setting's in-distribution and token-level categories and the math token-level category, IM > EX under
# the chat domain shift, and ties in math in-distribution and under the math domain shift -- the paper's
# claim that IM-RMs lose in-distribution and under token-level shifts but tie or win under domain shifts,
# with math in-distribution (0.971 vs 0.972) a tie by the numbers. A tie "agrees" when the whole interval
# lies within +-TIE_MARGIN (stats.verdict's equivalence margin).

PAPER_TIE = 0.02
TIE_MARGIN = 0.05


def paper_accuracies(setting: str, a: str, b: str, category: str | None = None,
                     eval_set: str | None = None) -> tuple[float, float]:
    """The paper's accuracies of ``a`` and ``b`` for one category (Table 1/6) or data set (Tables 3/5/8/10)."""
    if (category is None) == (eval_set is None):
        raise ValueError("give exactly one of category and eval_set")
    if category is not None:
        cell = PAPER_CATEGORY[setting, category]
        return cell[a][0], cell[b][0]
    cell = PAPER_DATASET_ACCURACY[setting][eval_set]
    return cell[a], cell[b]


def paper_direction(setting: str, a: str = "ex", b: str = "im", category: str | None = None,
                    eval_set: str | None = None, tie: float = PAPER_TIE) -> int:
    """+1 / -1 / 0: the sign of the paper's accuracy difference A - B, 0 when within ``tie``."""
    pa, pb = paper_accuracies(setting, a, b, category, eval_set)
    diff = round(pa - pb, 6)
    return 0 if abs(diff) <= tie else (1 if diff > 0 else -1)


def examples_table(records) -> pd.DataFrame:
    """One row per (run record, evaluation pair): ``setting`` ("chat"/"math"), ``model``, ``seed``, ``rm``
    (:func:`rm_label`), ``lr``, ``beta``, ``run_id``, ``eval_set``, ``category``, ``index`` and ``correct``
    (:func:`example_correctness`)."""
    names = {s.results_setting: s.name for s in SETTINGS.values()}
    frames = []
    for record in records:
        spec = record["spec"]
        frames.append(example_correctness(record).assign(
            setting=names.get(spec["setting"], spec["setting"]), model=spec["model"], seed=spec["seed"],
            rm=rm_label(spec["rm_type"], spec.get("variant")), lr=spec.get("lr"), beta=spec.get("beta"),
            run_id=record.get("run_id")))
    if not frames:
        raise ValueError("no run records")
    return pd.concat(frames, ignore_index=True)


def paired_correctness(examples: pd.DataFrame, a: str = "ex", b: str = "im", rm_column: str = "rm"):
    """Per-pair correctness of ``a`` and ``b`` on the same pairs: arrays of shape (n_seeds, n_pairs).

    ``examples`` (one setting; columns ``model``, ``seed``, ``eval_set``, ``index``, ``correct`` and
    ``rm_column``) is split into cells (data set in :data:`EVAL_SETS` order, then model); a cell counts if
    both reward models have runs in it. The seeds are those that both have in every such cell; per seed,
    the cells' pairs are concatenated (so a category pooling several data sets, or several models,
    weights each by its number of pairs). Returns ``(A, B, info)``, ``info`` = ``{"seeds", "cells",
    "skipped"}``. Raises ``ValueError`` if there is nothing to pair, if a run appears twice for the same
    (model, seed, data set), or if ``a`` and ``b`` scored different pairs."""
    if "setting" in examples and examples["setting"].nunique() > 1:
        raise ValueError(f"examples hold several settings {sorted(examples['setting'].unique())}; pass one")
    data = examples[examples[rm_column].isin([a, b])]
    cells, skipped, seeds = [], [], None
    order = {e: i for i, e in enumerate(EVAL_SETS)}
    for (eval_set, model), part in sorted(data.groupby(["eval_set", "model"]),
                                          key=lambda kv: (order.get(kv[0][0], len(order)), str(kv[0][0]), str(kv[0][1]))):
        have = {rm: set(part.loc[part[rm_column] == rm, "seed"]) for rm in (a, b)}
        if not have[a] or not have[b]:
            skipped.append((eval_set, model))
            continue
        cells.append((eval_set, model, part))
        seeds = (have[a] & have[b]) if seeds is None else seeds & have[a] & have[b]
    if not cells or not seeds:
        raise ValueError(f"no (data set, model) cell with {a!r} and {b!r} runs of a common seed")
    seeds = sorted(seeds)
    blocks = {a: [], b: []}
    for eval_set, model, part in cells:
        index = None
        for rm in (a, b):
            rows = []
            for seed in seeds:
                one = part[(part[rm_column] == rm) & (part["seed"] == seed)].sort_values("index")
                if one["index"].duplicated().any():
                    raise ValueError(f"{rm!r} has several runs for model {model!r}, seed {seed}, {eval_set!r}; "
                                     "select one configuration first")
                if index is None:
                    index = one["index"].tolist()
                elif one["index"].tolist() != index:
                    raise ValueError(f"{a!r} and {b!r} did not score the same pairs of {eval_set!r} ({model}, seed {seed})")
                rows.append(one["correct"].to_numpy(dtype=float))
            blocks[rm].append(np.stack(rows))
    info = {"seeds": seeds, "cells": [(e, m) for e, m, _ in cells], "skipped": skipped}
    return np.concatenate(blocks[a], axis=1), np.concatenate(blocks[b], axis=1), info


def compare_rms(examples: pd.DataFrame, setting: str, a: str = "ex", b: str = "im", by: str = "category",
                **options) -> dict:
    """``{category or data set: rmlib.analysis.stats.Comparison}`` of ``a`` vs ``b`` in one setting, against the paper's
    direction (:func:`paper_direction`; ties with the equivalence margin :data:`TIE_MARGIN`). ``by``:
    "category" (the data sets of a category pooled, :func:`paired_correctness`) or "eval_set". ``options``
    go to :func:`rmlib.analysis.stats.compare` (``n_boot``, ``confidence``, ``seed``, ...). Groups without runs of
    both are left out."""
    if by not in ("category", "eval_set"):
        raise ValueError(f"by must be 'category' or 'eval_set', got {by!r}")
    spec = get_setting(setting)
    data = examples[examples["setting"] == setting] if "setting" in examples else examples
    out = {}
    for group in (CATEGORIES if by == "category" else spec.eval_sets()):
        part = data[data["eval_set"].isin(spec.eval_sets(group) if by == "category" else [group])]
        if not ((part["rm"] == a).any() and (part["rm"] == b).any()):
            continue
        A, B, _ = paired_correctness(part, a, b)
        direction = paper_direction(setting, a, b, **{by: group})
        out[group] = stats.compare(A, B, direction, RM_LABELS[a], RM_LABELS[b],
                                   **{"margin": TIE_MARGIN, **options})
    return out


def _group_label(setting: str, group: str) -> str:
    return f"{setting}, {LABELS.get(group, group)}"


def comparison_sentences(comparisons: dict, setting: str, a: str = "ex", b: str = "im") -> list[str]:
    """One Markdown bullet per comparison: the group, the paper's accuracies, and ``Comparison.sentence()``."""
    lines = []
    for group, comparison in comparisons.items():
        by = {"category": group} if group in CATEGORIES else {"eval_set": group}
        pa, pb = paper_accuracies(setting, a, b, **by)
        lines.append(f"* **{_group_label(setting, group)}** (paper: {RM_LABELS[a]} {pa:.3f}, {RM_LABELS[b]} "
                     f"{pb:.3f}): {comparison.sentence()}")
    return lines


def claim_rows(comparisons: dict, setting: str, a: str = "ex", b: str = "im") -> list[dict]:
    """Rows for the book's claims table (``rmlib.results.write_summary(..., claims=...)``): ``claim``,
    ``paper``, ``this build`` (estimate [95% CI]) and ``verdict``, plus :meth:`Comparison.as_row`'s numbers."""
    rows = []
    for group, comparison in comparisons.items():
        by = {"category": group} if group in CATEGORIES else {"eval_set": group}
        pa, pb = paper_accuracies(setting, a, b, **by)
        direction = paper_direction(setting, a, b, **by)
        relation = {1: f"{RM_LABELS[a]} beats {RM_LABELS[b]}", -1: f"{RM_LABELS[b]} beats {RM_LABELS[a]}",
                    0: f"{RM_LABELS[a]} and {RM_LABELS[b]} tie (within {PAPER_TIE})"}[direction]
        claim = f"{_group_label(setting, group)}: {relation} (accuracy {RM_LABELS[a]} minus {RM_LABELS[b]})"
        rows.append({"claim": claim, "paper": f"{pa - pb:+.3f} ({pa:.3f} vs {pb:.3f})",
                     **comparison.as_row(), "setting": setting, "group": group})
    return rows


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


TREND_READINGS = {  # stats.verdict against the token-cue prediction (the gap shrinks as overlap grows: -1)
    stats.VERDICTS[0]: "the gap shrinks as overlap grows, as the token-cue reading predicts",
    stats.VERDICTS[1]: "the gap grows with overlap, the opposite of the token-cue prediction",
    stats.VERDICTS[2]: "undecided at this size (the interval contains 0)",
}


def overlap_trend_sentence(interval, info: dict, a: str = "ex", b: str = "im") -> str:
    """One sentence on :func:`overlap_trend`'s result, with the verdict of :func:`rmlib.analysis.stats.verdict`."""
    if interval is None:
        return "All evaluation pairs fall in one overlap bucket: there is no trend to measure."
    reading = TREND_READINGS[stats.verdict(interval, -1)]
    return (f"{RM_LABELS[a]} minus {RM_LABELS[b]} accuracy is {info['gap_low']:+.2f} in the lowest-overlap bucket "
            f"({info['n_low']} pairs) and {info['gap_high']:+.2f} in the highest ({info['n_high']} pairs); the change, "
            f"{interval.estimate:+.2f} ({interval.confidence * 100:g}% CI {interval.low:+.2f} to {interval.high:+.2f}, "
            f"{interval.n_seeds} {'seed' if interval.n_seeds == 1 else 'seeds'}), is {reading}.")


# ------------------------------------------------------------------ the paper's overlap caveats

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


def math_overlap_sentences(counts: dict, scope: str) -> list[str]:
    """Two sentences stating :func:`math_overlap`'s counts (``scope`` names whose rows they are)."""
    return [f"{scope}: {counts['rewardmath_shared']} of the {counts['n_rewardmath']} RewardMATH test rows share "
            f"their problem and chosen solution with one of the {counts['n_train']} training rows; for these only "
            f"the rejected solution is new.",
            f"{scope}: {counts['rb_math_shared']} of the {counts['n_rb_math']} RB Math prompts are problems of the "
            f"{counts['n_train']} RewardMATH training rows; for these the token-level shift is a reworded solution "
            f"of a problem seen in training."]


# ------------------------------------------------------------------------------ sentences on the data

def data_summary(report: pd.DataFrame, max_length: int | None) -> str:
    """What was cut, from a (concatenated) :attr:`LoadedSetting.report` with a ``setting`` column."""
    cap = (f"at most {max_length} tokens per prompt+response (longer rows dropped, never truncated)"
           if max_length else "no token cap (the paper's 512-token filter only)")
    parts = [f"**What was cut.** Sequences: {cap}."]
    for setting, rows in report.groupby("setting", sort=False):
        train = rows[rows["split"] == "train"].iloc[0]
        evals = rows[rows["split"] == "test"]
        parts.append(f"*{setting}*: {int(train['used'])} training rows (paper: {get_setting(setting).train_size}); "
                     "evaluation rows " + ", ".join(f"{r.label} {int(r.used)}" for r in evals.itertuples())
                     + " (paper: 200 each).")
    aligned = report[report["data_set"].isin(ALIGNED_SETS) & (report["split"] == "test")]
    if len(aligned):
        parts.append("The four UltraFeedback versions are aligned by id: a prompt enters only if all its versions "
                     "fit, so they hold the same prompts in the same order (see `why`).")
    return " ".join(parts)


def fairness_sentence(fit: pd.DataFrame, setting: str, a: str = "ex", b: str = "im", rm_column: str = "rm",
                      setting_column: str = "setting_name", tolerance: float = 0.05) -> str:
    """The paper's fairness check (Appendix D.3) stated for one setting from :func:`training_fit`'s table."""
    f = fit[fit[setting_column] == setting].set_index(rm_column)
    x, y = f.loc[a], f.loc[b]
    gap = abs(x["train_accuracy"] - y["train_accuracy"])
    paper_loss = 0.04 if setting == "chat" else 0.005
    text = (f"**{setting}**: final training accuracy {RM_LABELS[a]} {x['train_accuracy']:.3f} vs {RM_LABELS[b]} "
            f"{y['train_accuracy']:.3f} (gap {gap:.3f}); loss {x['train_loss']:.3f} vs {y['train_loss']:.3f}. ")
    text += ("The two fit the training data about equally well (accuracy gap <= 0.05). " if gap <= tolerance else
             "The two do **not** fit the training data equally well (accuracy gap > 0.05), so differences below "
             "partly reflect how well each was trained, not only how it generalizes. ")
    if min(x["train_accuracy"], y["train_accuracy"]) < 0.95:
        return text + f"Unlike the paper (loss < {paper_loss}, accuracy > 0.993), training is far from converged here."
    return text + f"As in the paper, both nearly fit the training set (paper: loss < {paper_loss}, accuracy > 0.993)."


def overlap_trend_row(setting: str, model: str, interval, info: dict, n: int, a: str = "ex", b: str = "im") -> dict:
    """The summary row (``rmlib.results.write_summary``) of one :func:`overlap_trend` result."""
    quantity = (f"{setting}: change of the {RM_LABELS[a]} - {RM_LABELS[b]} accuracy gap from the lowest to the highest "
                f"{n}-gram-overlap bucket ({model})")
    if interval is None:
        return {"quantity": quantity, "value": "one bucket only", "paper": "not in the paper", "note": "beyond the paper"}
    return {"quantity": quantity, "value": f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]",
            "paper": "not in the paper",
            "note": f"beyond the paper; {TREND_READINGS[stats.verdict(interval, -1)]}"}


def timing_sentence(timing: pd.DataFrame, elapsed_s: float) -> str:
    """How long this execution took, from the notebook's per-run timing table."""
    trained = timing[~timing["reused"]]
    text = (f"This execution took {elapsed_s / 60:.1f} min of wall time; {len(trained)} of {len(timing)} runs were "
            f"trained now (the rest reused), using {trained['wall_s'].sum() / 60:.1f} min of wall time and "
            f"{trained['cpu_s'].sum() / 60:.1f} min of process CPU time")
    if len(trained) and trained["train_s"].sum() > 0:
        text += f"; training throughput {trained['train_tokens'].sum() / trained['train_s'].sum():.0f} tokens/s (wall)"
    return text + "."
