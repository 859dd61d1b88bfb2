"""Section 5.2: the data of the real-world token-level and domain shifts (Tables 1-10, Appendix D.3).

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

The runs of a setting are read back as one row per (run, evaluation pair) by :func:`examples_table`
(Definition 1 per pair) and :func:`select_protocol` picks the runs made with one protocol. What is
computed from them lives in :mod:`rmlib.analysis`: the paper's tables and numbers
(:mod:`rmlib.analysis.paper_tables`), the paired EX vs IM comparisons (:mod:`rmlib.analysis.rm_comparisons`)
and the n-gram overlap with the training data (:mod:`rmlib.analysis.overlap`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..data import PAPER_SUBSET_SEED, load_preferences, paper_subset, subsample
from ..formatting import ChatFormatter, SequenceTooLong, grm_prompt
from ..metrics import correctness

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
        """``{name: rmlib.data.EvalSet}`` for :func:`rmlib.experiment.run_experiment`."""
        from ..data import EvalSet

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



# ------------------------------------------------------------------------------ runs of a setting

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


def example_correctness(record: dict) -> pd.DataFrame:
    """Per evaluation pair of one run record: 1 if r+ > r-, 1/2 if equal, 0 otherwise (Definition 1,
    :func:`rmlib.metrics.correctness`)."""
    frames = []
    for name, ev in record["evals"].items():
        correct = correctness(ev["reward_chosen"], ev["reward_rejected"])
        frames.append(pd.DataFrame({"eval_set": name, "category": ev.get("category"), "index": range(len(correct)),
                                    "correct": correct}))
    return pd.concat(frames, ignore_index=True)


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
