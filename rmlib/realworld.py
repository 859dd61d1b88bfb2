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
:mod:`rmlib.data`, drops malformed rows, drops -- never truncates -- rows whose prompt+response is
longer than a token cap (:class:`rmlib.formatting.SequenceTooLong`), subsamples, and reports every
count per data set.

Aggregation follows the paper's tables. Table 1 / 6 ("means across the models and evaluation datasets,
with standard deviation computed based on three random seeds"): for every seed, the metric is averaged
over all (model, data set) cells of a category; the table shows the mean and the standard deviation
(ddof=0, as :func:`rmlib.evaluation.summarize`) of these per-seed averages. Tables 3/5/8/10 do the same
per data set (per seed: mean over models). Win-rates (Figures 2, 5, 8; Tables 2, 4, 7, 9) count matched
evaluations (same model, seed and data set) with :func:`rmlib.evaluation.win_rate` and its 1% tie rule.

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

from .data import PAPER_SEED, load_preferences
from .evaluation import win_rate
from .formatting import ChatFormatter, SequenceTooLong, grm_prompt

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
             "im:no_ref": "IM-RM (no ref)"}
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
    """The rows one setting trains and evaluates on, and a per-data-set account of what was dropped."""

    setting: Setting
    train_rows: list[dict]
    eval_rows: dict            # name -> rows
    report: pd.DataFrame       # one row per (data set, split): available, malformed, too_long, used
    notes: list = field(default_factory=list)

    def eval_sets(self):
        """``{name: rmlib.experiment.EvalSet}`` for :func:`rmlib.experiment.run_experiment`."""
        from .experiment import EvalSet

        return {name: EvalSet(rows, self.setting.categories[name]) for name, rows in self.eval_rows.items()}


def load_setting(setting: str | Setting, tokenizer=None, rm_types=("ex", "im"), max_length: int | None = None,
                 n_train: int | None = None, n_eval: int | None = None, data_dir=None, seed: int = 0,
                 eval_names=None, use_chat_template: bool | None = None) -> LoadedSetting:
    """Training and evaluation rows of a setting.

    Per data set, in this order: read the split (malformed rows dropped and counted; the UF training
    file has one, chosen == rejected at line 63); for the math setting's training set, sample the
    paper's 1000 of the 2000 RewardMATH rows (seed 982); drop rows with a sequence longer than
    ``max_length`` tokens for any of ``rm_types`` (needs ``tokenizer``); keep a seeded random subset of
    ``n_train`` / ``n_eval`` rows. Raises ``ValueError`` if a set ends up empty."""
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
    report, notes = [], []

    def prepare(name, split, n_keep, paper_size=None):
        prefs = load_preferences(name, split, data_dir=data_dir, on_error="drop")
        rows, available = prefs.rows, len(prefs.rows) + prefs.dropped
        notes.extend(prefs.notes)
        sampled = rows
        if paper_size is not None:
            sampled = subsample(rows, paper_size, PAPER_SEED)
        kept = [r for r in sampled if fits(r, encoders, max_length)]
        used = subsample(kept, n_keep, seed)
        if not used:
            raise ValueError(f"{name}/{split}: no rows left after dropping {len(sampled) - len(kept)} rows "
                             f"longer than max_length={max_length}; raise the cap")
        report.append({"data_set": name, "label": LABELS[name], "split": split,
                       "role": "train" if split == "train" else setting.categories[name],
                       "available": available, "malformed": prefs.dropped,
                       "paper_sample": len(sampled), "too_long": len(sampled) - len(kept),
                       "used": len(used)})
        return used

    train_rows = prepare(setting.train_set, "train", n_train,
                         paper_size=setting.train_size if setting.name == "math" else None)
    eval_rows = {name: prepare(name, "test", n_eval) for name in names}
    return LoadedSetting(setting, train_rows, eval_rows, pd.DataFrame(report), notes)


# -------------------------------------------------------------------------------------- aggregation

def rm_label(rm_type: str, variant: str | None) -> str:
    """"ex", "im", "grm" for the paper's standard variants, else "ex:mean", "im:no_ref"."""
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
    compared with :func:`rmlib.evaluation.win_rate` (a tie: accuracies within ``tolerance``).
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


def accuracy_by_overlap(examples: pd.DataFrame, n_buckets: int = 4, rm_column: str = "rm",
                        by=()) -> pd.DataFrame:
    """Accuracy per overlap bucket and reward model.

    ``examples``: one row per (run, evaluation pair) with columns ``overlap``, ``correct`` and
    ``rm_column``. Pairs are bucketed by the quantiles of ``overlap`` over the distinct pairs
    (``eval_set``, ``index``) -- the same buckets for every reward model; equal quantile edges are
    merged, so there may be fewer than ``n_buckets`` buckets. Pairs with undefined (NaN) overlap are
    left out. Returns bucket, its overlap range, the reward model, accuracy (mean of ``correct``) and
    n (evaluations in the bucket)."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    data = examples.dropna(subset=["overlap"])
    if data.empty:
        raise ValueError("no evaluation pair has a defined overlap")
    pairs = data.drop_duplicates(["eval_set", "index"]) if {"eval_set", "index"} <= set(data) else data
    edges = np.unique(np.quantile(pairs["overlap"], np.linspace(0, 1, n_buckets + 1)))
    # bucket k holds overlaps in [edge_k, edge_{k+1}); the last bucket also holds the maximum
    data = data.assign(bucket=np.searchsorted(edges[1:-1], data["overlap"].to_numpy(), side="right"))
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
