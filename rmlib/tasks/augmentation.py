"""Notebook 05: can training on paraphrases close the IM-RM's gap under token-level shifts? (beyond the paper)

**Remedy.** Section 5.2 finds that IM-RMs lose to EX-RMs under token-level shifts (paraphrases,
translations) and explains it by the IM-RM's reliance on token-level cues. If that is the cause, training
on more than one surface form of each response should help the IM-RM more than the EX-RM. The offline
mirror has GPT-4.1 paraphrases of the UltraFeedback (UF) training rows (``ultrafeedback_paraphrased/train``,
aligned with ``ultrafeedback/train`` by ``id``; ``orig_chosen``/``orig_rejected`` hold the originals).

**Conditions** (EX-RMs and IM-RMs, the same seeds, the chat setting of :mod:`rmlib.tasks.realworld`):

* ``original``: n_train original UF rows, ``E`` epochs -- notebook 04's chat runs;
* ``augmented, same steps``: the same prompts, each once as original and once paraphrased (2 n_train rows),
  and as many optimizer steps as ``original`` (:func:`same_steps_schedule`: fewer epochs, ``max_steps``
  where the count does not divide);
* ``augmented, same epochs``: the same 2 n_train rows for ``E`` epochs (about twice the steps).

A prompt is used only if its original and paraphrased rows both fit the token cap (:func:`select_pairs`,
through :func:`rmlib.tasks.realworld.align_rows`), so every condition trains on the same prompts; rows are
dropped and counted, never truncated. When this leaves exactly the rows notebook 04 trains on (the cpu
profile does), the ``original`` runs have notebook 04's run ids and are reused from a shared results folder.

**Evaluation** (the seven test sets of notebook 04, unchanged), read in four groups (:data:`GROUPS`):
in-distribution (UF), held-out translation (UF French, UF Spanish: no translated text in any training row),
paraphrase (UF paraphrased: a shift of the kind the augmentation trained on, reported apart) and domain shift
(RB Math, RewardMATH, RB Code).

**Statistics** (:func:`gap_changes`, :func:`accuracy_changes`). Let ``X_c, Y_c`` be the EX-RM's and the
IM-RM's correctness (1, 1/2 on a tie, 0) on the pairs of a group, shape (seeds, pairs), in condition c. The
gap is ``g_c = mean(X_c) - mean(Y_c)``; the change of the gap from ``original`` (o) to an augmented condition
(t) is the difference in differences ``g_t - g_o`` (:func:`rmlib.analysis.stats.difference_in_differences`: a paired
two-level bootstrap over the same pairs and seeds), with the exact sign test on the pairs where the gap moved
and the smallest difference the sample could detect. The cost of augmenting is each reward model's own change
of accuracy, ``mean(Y_t) - mean(Y_o)`` (:func:`rmlib.analysis.stats.compare` on the same pairs). Verdicts come from the
intervals only (:func:`gap_verdict`, :func:`accuracy_verdict`). The paper makes no claim about this remedy.

Nothing here enters :func:`rmlib.results.code_version`: the rows it builds enter every run id through the
data fingerprint, and the analysis reads stored runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import realworld as rw
from ..analysis import stats
from ..data import FIELDS, MalformedRow, check_row, default_data_dir, load_preferences

PARAPHRASED = "ultrafeedback_paraphrased"
ORIGINAL, SAME_STEPS, SAME_EPOCHS = "original", "augmented_same_steps", "augmented_same_epochs"
CONDITIONS = (ORIGINAL, SAME_STEPS, SAME_EPOCHS)
CONDITION_LABELS = {ORIGINAL: "original", SAME_STEPS: "augmented, same steps",
                    SAME_EPOCHS: "augmented, same epochs"}
RESULTS_SETTING = "augmentation-chat"  # where the augmented runs are stored (never mixed into notebook 04's)

IN_DISTRIBUTION, TRANSLATION, PARAPHRASE, DOMAIN = ("in-distribution", "translation (held out)",
                                                    "paraphrase (trained kind)", "domain shift")
GROUPS = {IN_DISTRIBUTION: ("ultrafeedback",),
          TRANSLATION: ("ultrafeedback_french", "ultrafeedback_spanish"),
          PARAPHRASE: ("ultrafeedback_paraphrased",),
          DOMAIN: ("rewardbench_math", "rewardmath", "rewardbench_code")}

GAP_VERDICTS = ("narrows the gap", "widens it", "undecided at this size")
ACCURACY_VERDICTS = ("raises accuracy", "lowers accuracy", "undecided at this size")


# ------------------------------------------------------------------------------------------ data

def read_paraphrases(data_dir=None) -> tuple[dict, Path]:
    """``{id: (row, line number)}`` of ``<data_dir>/ultrafeedback_paraphrased/train.jsonl`` and its path.

    Only the JSON is checked here (an unreadable line raises :class:`rmlib.data.MalformedRow` naming the file
    and line); :func:`match_paraphrases` checks the rows that will be used."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    path = folder / PARAPHRASED / "train.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the paraphrased UF training rows are in the offline "
                                "mirror only (data_dir or RMLIB_DATA_DIR)")
    out = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise MalformedRow(f"{path} line {number}: invalid JSON ({err.msg})") from err
            if not isinstance(row, dict) or "id" not in row:
                raise MalformedRow(f"{path} line {number}: not a JSON object with an 'id'")
            if row["id"] in out:
                raise MalformedRow(f"{path} line {number}: id {row['id']!r} repeats line {out[row['id']][1]}")
            out[row["id"]] = (row, number)
    return out, path


def match_paraphrases(originals: list[dict], paraphrases: dict, path) -> list[dict]:
    """The paraphrased row of every usable original training row, as a plain preference row (same ``id``).

    Raises :class:`rmlib.data.MalformedRow` naming the file (and line) when an original has no paraphrase, or
    its paraphrase is malformed (:func:`rmlib.data.check_row`), lacks ``orig_chosen``/``orig_rejected``, or
    does not belong to it (another prompt, other original responses). Paraphrases of originals that were
    dropped as malformed are ignored. Called before any model is loaded."""
    out = []
    for original in originals:
        if original.get("id") not in paraphrases:
            raise MalformedRow(f"{path}: no paraphrased row with id {original.get('id')!r} (a usable row of "
                               f"ultrafeedback/train.jsonl); every training prompt needs both forms")
        row, number = paraphrases[original["id"]]
        where = f"{path} line {number}"
        problem = check_row(row, where)
        if problem is not None:
            raise MalformedRow(problem)
        for key in ("orig_chosen", "orig_rejected"):
            if not isinstance(row.get(key), str):
                raise MalformedRow(f"{where}: missing field {key!r} (the original response it paraphrases)")
        if (row["prompt"], row["orig_chosen"], row["orig_rejected"]) != \
                (original["prompt"], original["chosen"], original["rejected"]):
            raise MalformedRow(f"{where}: id {row['id']!r} does not paraphrase ultrafeedback/train.jsonl's row of "
                               "that id (prompt or orig_chosen/orig_rejected differ)")
        out.append({"id": row["id"], **{k: row[k] for k in FIELDS}})
    return out


def select_pairs(originals: list[dict], paraphrased: list[dict], encoders, max_length: int | None,
                 n_train: int | None, seed: int):
    """Original and paraphrased training rows of the same prompts, filtered and subsampled together.

    A prompt is kept only if both its rows fit ``max_length`` under every encoder (the pair is dropped
    together, never truncated); then one seeded subset of ``n_train`` prompts
    (:func:`rmlib.tasks.realworld.align_rows`, original order). When every original that fits also has a fitting
    paraphrase, this picks the same rows as :func:`rmlib.tasks.realworld.load_setting`. Returns
    ``(originals, paraphrases, counts)``; counts: ``usable`` (prompts with both forms), ``too_long_original``,
    ``too_long_paraphrase_only`` (the original fits, its paraphrase does not), ``fit`` (both fit), ``used``."""
    rows, counts = rw.align_rows({"original": originals, "paraphrased": paraphrased}, encoders, max_length,
                                 n_train, seed)
    fit = len(originals) - counts["original"]["too_long"] - counts["original"]["too_long_elsewhere"]
    summary = {"usable": len(originals), "too_long_original": counts["original"]["too_long"],
               "too_long_paraphrase_only": counts["original"]["too_long_elsewhere"], "fit": fit,
               "used": len(rows["original"])}
    if not summary["used"]:
        raise ValueError(f"no training prompt has both forms within max_length={max_length}; raise the cap")
    return rows["original"], rows["paraphrased"], summary


def augmented_rows(originals: list[dict], paraphrases: list[dict]) -> list[dict]:
    """Each prompt's original row followed by its paraphrased row (2 n rows; training shuffles them)."""
    if [r["id"] for r in originals] != [r["id"] for r in paraphrases]:
        raise ValueError("original and paraphrased rows must hold the same ids in the same order")
    return [row for pair in zip(originals, paraphrases) for row in pair]


def same_steps_schedule(n_original: int, n_augmented: int, batch_size: int, epochs: int) -> tuple[int, int | None]:
    """``(epochs, max_steps)`` that train ``n_augmented`` rows for exactly as many optimizer steps as
    ``epochs`` epochs of ``n_original`` rows: S = ceil(n_original / B) * epochs steps; the augmented data takes
    ceil(S / ceil(n_augmented / B)) epochs, cut at ``max_steps = S`` when that overshoots (else ``None``).
    With twice the rows and an even number of epochs this is half the epochs, no cut."""
    for name, value in (("n_original", n_original), ("n_augmented", n_augmented), ("batch_size", batch_size),
                        ("epochs", epochs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    steps = math.ceil(n_original / batch_size) * epochs
    per_epoch = math.ceil(n_augmented / batch_size)
    aug_epochs = math.ceil(steps / per_epoch)
    return aug_epochs, (None if aug_epochs * per_epoch == steps else steps)


def total_steps(n_rows: int, batch_size: int, epochs: int, max_steps: int | None = None) -> int:
    """Optimizer steps of a run (as :func:`rmlib.training.train` counts them)."""
    steps = math.ceil(n_rows / batch_size) * epochs
    return steps if max_steps is None else min(steps, max_steps)


@dataclass
class Condition:
    """One training condition: its rows, schedule and where its runs are stored."""

    name: str
    train_rows: list[dict]
    epochs: int
    max_steps: int | None
    results_setting: str
    extra: dict

    @property
    def label(self) -> str:
        return CONDITION_LABELS[self.name]


@dataclass
class AugmentationData:
    """Everything notebook 05 trains and evaluates on. ``loaded``: notebook 04's chat setting (evaluation sets,
    its report, and its training rows); ``originals`` / ``paraphrases``: the training prompts in both forms;
    ``counts``: :func:`select_pairs`' counts; ``same_rows_as_realworld``: whether ``originals`` are exactly
    notebook 04's training rows (then the ``original`` runs are notebook 04's)."""

    loaded: rw.LoadedSetting
    originals: list[dict]
    paraphrases: list[dict]
    counts: dict
    same_rows_as_realworld: bool

    def conditions(self, epochs: int, batch_size: int, protocol: dict, which=CONDITIONS) -> list[Condition]:
        """The runs' :class:`Condition`s. ``protocol``: notebook 04's ``extra`` (epochs, batch size, cap, subset
        sizes, ...); the ``original`` condition keeps it unchanged and notebook 04's results folder when its rows
        are notebook 04's, so its run ids coincide; the augmented ones add ``condition`` and go to
        :data:`RESULTS_SETTING`."""
        augmented = augmented_rows(self.originals, self.paraphrases)
        steps_epochs, steps_max = same_steps_schedule(len(self.originals), len(augmented), batch_size, epochs)
        original_home = (self.loaded.setting.results_setting if self.same_rows_as_realworld else RESULTS_SETTING)
        original_extra = dict(protocol) if self.same_rows_as_realworld else {**protocol, "condition": ORIGINAL}
        out = {ORIGINAL: Condition(ORIGINAL, list(self.originals), epochs, None, original_home, original_extra),
               SAME_STEPS: Condition(SAME_STEPS, augmented, steps_epochs, steps_max, RESULTS_SETTING,
                                     {**protocol, "condition": SAME_STEPS}),
               SAME_EPOCHS: Condition(SAME_EPOCHS, augmented, epochs, None, RESULTS_SETTING,
                                      {**protocol, "condition": SAME_EPOCHS})}
        unknown = sorted(set(which) - set(out))
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; accepted: {', '.join(CONDITIONS)}")
        return [out[c] for c in CONDITIONS if c in which]


def load_augmentation(tokenizer, rm_types=("ex", "im"), max_length: int | None = None, n_train: int | None = None,
                      n_eval: int | None = None, data_dir=None, seed: int = 0) -> AugmentationData:
    """Notebook 04's chat setting (:func:`rmlib.tasks.realworld.load_setting`, same arguments) plus the paraphrased
    form of every training prompt (:func:`read_paraphrases`, :func:`match_paraphrases`, :func:`select_pairs`).
    Every paraphrase of a usable original is checked before the length filter, so a bad row stops the run
    before any model is loaded."""
    loaded = rw.load_setting("chat", tokenizer, rm_types=rm_types, max_length=max_length, n_train=n_train,
                             n_eval=n_eval, data_dir=data_dir, seed=seed)
    originals = load_preferences("ultrafeedback", "train", data_dir=data_dir, on_error="drop").rows
    paraphrases, path = read_paraphrases(data_dir)
    paraphrased = match_paraphrases(originals, paraphrases, path)
    encoders = rw.length_encoders(tokenizer, rm_types) if max_length is not None else []
    kept, kept_paraphrased, counts = select_pairs(originals, paraphrased, encoders, max_length, n_train, seed)
    return AugmentationData(loaded, kept, kept_paraphrased, counts, kept == loaded.train_rows)


def data_sentence(data: AugmentationData, max_length: int | None, batch_size: int, epochs: int) -> str:
    """What the three conditions train on, in one paragraph, from :class:`AugmentationData`."""
    c = data.counts
    n = len(data.originals)
    steps_epochs, steps_max = same_steps_schedule(n, 2 * n, batch_size, epochs)
    cap = f"max_length={max_length}" if max_length else "no token cap"
    text = (f"**Training rows.** {c['usable']} UF training prompts have a usable original and paraphrased row; "
            f"{c['too_long_original']} are dropped because the original is too long ({cap}) and "
            f"{c['too_long_paraphrase_only']} because only the paraphrase is; of the {c['fit']} left, {c['used']} "
            f"are used. *original*: {n} rows, {epochs} epoch{'s' if epochs != 1 else ''}, "
            f"{total_steps(n, batch_size, epochs)} optimizer steps of {batch_size} pairs. *augmented, same steps*: "
            f"{2 * n} rows (each prompt as original and paraphrased), {steps_epochs} epoch"
            f"{'s' if steps_epochs != 1 else ''}" + (f" cut at {steps_max} steps" if steps_max else "")
            + f", {total_steps(2 * n, batch_size, steps_epochs, steps_max)} steps. *augmented, same epochs*: "
            f"{2 * n} rows, {epochs} epoch{'s' if epochs != 1 else ''}, {total_steps(2 * n, batch_size, epochs)} steps. ")
    text += ("The original rows are exactly those notebook 04's chat setting trains on with the same parameters, so "
             "with notebook 04's parameters the *original* runs are its runs (see `reused` in the training table)."
             if data.same_rows_as_realworld else
             "The original rows differ from notebook 04's (some paraphrases do not fit the cap), so the *original* "
             "condition is trained here on the prompts every condition shares.")
    return text


# -------------------------------------------------------------------------------------- analysis

def examples_table(records_by_condition: dict) -> pd.DataFrame:
    """One row per (run, evaluation pair) with ``condition``, ``model``, ``seed``, ``rm``, ``eval_set``, ``index``
    and ``correct`` (:func:`rmlib.tasks.realworld.examples_table`), from ``{condition: [run records]}``."""
    frames = [rw.examples_table(records).assign(condition=condition)
              for condition, records in records_by_condition.items() if records]
    if not frames:
        raise ValueError("no run records")
    return pd.concat(frames, ignore_index=True)


def correctness(examples: pd.DataFrame, arms, eval_sets) -> tuple[dict, list]:
    """``{(condition, rm): array (S, n)}`` over the pairs of ``eval_sets`` (data sets in
    :data:`rmlib.tasks.realworld.EVAL_SETS` order, then models, then pair index, concatenated per seed) and the seeds
    S that every arm has. Raises ``ValueError`` if an arm has no runs, a run appears twice, or the arms did not
    score the same pairs."""
    data = examples[examples["eval_set"].isin(eval_sets)]
    arms = list(arms)
    seeds = None
    for condition, rm in arms:
        have = set(data.loc[(data["condition"] == condition) & (data["rm"] == rm), "seed"])
        if not have:
            raise ValueError(f"no {rm!r} runs of condition {condition!r} on {list(eval_sets)}")
        seeds = have if seeds is None else seeds & have
    if not seeds:
        raise ValueError(f"the arms {arms} share no seed")
    seeds = sorted(seeds)
    order = {e: i for i, e in enumerate(rw.EVAL_SETS)}
    out, keys = {}, None
    for condition, rm in arms:
        rows = []
        for seed in seeds:
            one = data[(data["condition"] == condition) & (data["rm"] == rm) & (data["seed"] == seed)].copy()
            one["_order"] = one["eval_set"].map(order)
            one = one.sort_values(["_order", "model", "index"])
            these = list(zip(one["eval_set"], one["model"], one["index"]))
            if len(set(these)) != len(these):
                raise ValueError(f"{condition}/{rm} seed {seed} has several runs on the same pairs")
            if keys is None:
                keys = these
            elif these != keys:
                raise ValueError(f"{condition}/{rm} seed {seed} did not score the same pairs as the other arms")
            rows.append(one["correct"].to_numpy(dtype=float))
        out[condition, rm] = np.stack(rows)
    return out, seeds


@dataclass(frozen=True)
class Change:
    """One change between conditions, decided from its interval: the change of the EX - IM gap (``what`` =
    "gap") or of one reward model's accuracy (``what`` = "ex" / "im"). ``before`` / ``after``: the gap or
    accuracy in the baseline and the treated condition."""

    group: str
    condition: str
    what: str
    before: float
    after: float
    interval: stats.Interval
    test: stats.SignTest
    mdd: float
    verdict: str

    def as_row(self) -> dict:
        iv = self.interval
        return {"group": self.group, "condition": CONDITION_LABELS[self.condition],
                "measure": "EX - IM gap" if self.what == "gap" else f"{rw.RM_LABELS[self.what]} accuracy",
                "original": self.before, "augmented": self.after, "change": iv.estimate,
                f"{iv.confidence * 100:g}% CI": f"[{_signed(iv.low)}, {_signed(iv.high)}]", "ci_low": iv.low,
                "ci_high": iv.high, "p_value": self.test.p_value, "mdd": self.mdd, "n_pairs": iv.n_pairs,
                "n_seeds": iv.n_seeds, "verdict": self.verdict}


def gap_verdict(change: stats.Interval, gap_before: float) -> str:
    """:data:`GAP_VERDICTS` from the interval of the gap's change. "Narrows" means towards 0 from the side the
    baseline gap is on (EX ahead when ``gap_before`` >= 0): the interval lies strictly on the other side of 0;
    "widens" the opposite; an interval containing 0 is undecided. (A narrowing may overshoot 0; the sentences
    state both gaps.)"""
    side = 1 if gap_before >= 0 else -1
    if change.high < 0 or change.low > 0:
        return GAP_VERDICTS[0] if (change.high < 0) == (side > 0) else GAP_VERDICTS[1]
    return GAP_VERDICTS[2]


def accuracy_verdict(change: stats.Interval) -> str:
    """:data:`ACCURACY_VERDICTS` from the interval of an accuracy change."""
    if change.low > 0:
        return ACCURACY_VERDICTS[0]
    if change.high < 0:
        return ACCURACY_VERDICTS[1]
    return ACCURACY_VERDICTS[2]


def gap_changes(examples: pd.DataFrame, treated=(SAME_STEPS, SAME_EPOCHS), groups=None, n_boot: int = 10_000,
                confidence: float = 0.95, seed: int = 0) -> list[Change]:
    """The change of the EX - IM gap from ``original`` to each treated condition, per group of evaluation sets
    (:func:`rmlib.analysis.stats.difference_in_differences`; sign test and smallest detectable difference on the
    per-pair change of the gap)."""
    out = []
    for group in groups or GROUPS:
        for condition in treated:
            arms = [(ORIGINAL, "ex"), (ORIGINAL, "im"), (condition, "ex"), (condition, "im")]
            x, _ = correctness(examples, arms, GROUPS[group])
            gap_after, gap_before = x[condition, "ex"] - x[condition, "im"], x[ORIGINAL, "ex"] - x[ORIGINAL, "im"]
            interval = stats.difference_in_differences(x[condition, "ex"], x[condition, "im"], x[ORIGINAL, "ex"],
                                                       x[ORIGINAL, "im"], n_boot=n_boot, confidence=confidence,
                                                       seed=seed)
            before = float(gap_before.mean())
            out.append(Change(group, condition, "gap", before, float(gap_after.mean()), interval,
                              stats.mcnemar_exact(gap_after, gap_before),
                              stats.minimum_detectable_difference(gap_after, gap_before),
                              gap_verdict(interval, before)))
    return out


def accuracy_changes(examples: pd.DataFrame, treated=(SAME_STEPS, SAME_EPOCHS), groups=None, rms=("ex", "im"),
                     n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> list[Change]:
    """Each reward model's own change of accuracy from ``original`` to each treated condition, per group, on the
    same pairs and seeds (:func:`rmlib.analysis.stats.compare`, which gives the interval, sign test and detectable
    difference)."""
    out = []
    for group in groups or GROUPS:
        for condition in treated:
            for rm in rms:
                x, _ = correctness(examples, [(ORIGINAL, rm), (condition, rm)], GROUPS[group])
                comparison = stats.compare(x[condition, rm], x[ORIGINAL, rm], 0, n_boot=n_boot,
                                           confidence=confidence, seed=seed)
                out.append(Change(group, condition, rm, float(x[ORIGINAL, rm].mean()),
                                  float(x[condition, rm].mean()), comparison.interval, comparison.test,
                                  comparison.mdd, accuracy_verdict(comparison.interval)))
    return out


def accuracy_table(examples: pd.DataFrame, groups=None) -> pd.DataFrame:
    """Accuracy per condition, group and reward model: the mean over seeds of the per-seed accuracy over the
    group's pairs (pooled data sets), with ``std`` over seeds (ddof 0) and ``n_seeds``."""
    rows = []
    for group in groups or GROUPS:
        part = examples[examples["eval_set"].isin(GROUPS[group])]
        for (condition, rm), one in part.groupby(["condition", "rm"], sort=False):
            per_seed = one.groupby("seed")["correct"].mean()
            rows.append({"group": group, "condition": condition, "rm": rm, "accuracy": float(per_seed.mean()),
                         "std": float(per_seed.std(ddof=0)), "n_seeds": len(per_seed),
                         "n_pairs": int(len(one) / len(per_seed))})
    out = pd.DataFrame(rows)
    out["_g"] = out["group"].map(list(GROUPS).index)
    out["_c"] = out["condition"].map(list(CONDITIONS).index)
    return out.sort_values(["_g", "_c", "rm"]).drop(columns=["_g", "_c"]).reset_index(drop=True)


# -------------------------------------------------------------------------------------- sentences

def _signed(x: float) -> str:
    return f"{0.0 if round(x, 2) == 0 else x:+.2f}"


def _ci(iv: stats.Interval) -> str:
    return f"{iv.confidence * 100:g}% CI {_signed(iv.low)} to {_signed(iv.high)}"


def _sample(change: Change) -> str:
    iv, p = change.interval, change.test.p_value
    p_text = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
    return (f"{iv.n_pairs} pair{'s' if iv.n_pairs != 1 else ''}, {iv.n_seeds} seed{'s' if iv.n_seeds != 1 else ''}; "
            f"exact sign test {p_text}")


def _verdict_text(change: Change, undecided: str) -> str:
    if change.verdict == undecided:
        return f"{change.verdict} (smallest detectable difference about {change.mdd:.2f})"
    return change.verdict


def gap_sentence(change: Change) -> str:
    """One sentence on a gap change: both gaps, the change with its interval, and the verdict."""
    return (f"**{change.group}**, {CONDITION_LABELS[change.condition]}: the EX-RM minus IM-RM accuracy gap is "
            f"{_signed(change.before)} with the original rows and {_signed(change.after)} with augmentation; "
            f"change {_signed(change.interval.estimate)} ({_ci(change.interval)}; {_sample(change)}): "
            f"{_verdict_text(change, GAP_VERDICTS[2])}.")


def accuracy_sentence(change: Change) -> str:
    """One sentence on one reward model's accuracy change."""
    return (f"**{change.group}**, {CONDITION_LABELS[change.condition]}: {rw.RM_LABELS[change.what]} accuracy "
            f"{change.before:.2f} -> {change.after:.2f}, change {_signed(change.interval.estimate)} "
            f"({_ci(change.interval)}; {_sample(change)}): {_verdict_text(change, ACCURACY_VERDICTS[2])}.")


def answer_lines(gaps: list[Change], costs: list[Change]) -> list[str]:
    """The chapter's answer, one line per finding: does augmentation narrow the gap under held-out
    translation, and what does it cost the IM-RM (and the EX-RM) in-distribution."""
    parts = []
    for change in (g for g in gaps if g.group == TRANSLATION):
        parts.append(f"*{CONDITION_LABELS[change.condition].capitalize()}*: "
                     + ("augmentation narrows the EX-IM gap under held-out translation"
                        if change.verdict == GAP_VERDICTS[0] else
                        "augmentation widens the EX-IM gap under held-out translation"
                        if change.verdict == GAP_VERDICTS[1] else
                        "undecided whether augmentation changes the EX-IM gap under held-out translation")
                     + f" ({_signed(change.before)} -> {_signed(change.after)}, change "
                     f"{_signed(change.interval.estimate)}, {_ci(change.interval)}"
                     + (f"; this size could detect a change of about {change.mdd:.2f}" if change.verdict == GAP_VERDICTS[2]
                        else "") + ").")
    for change in (c for c in costs if c.group == IN_DISTRIBUTION):
        parts.append(f"In-distribution ({CONDITION_LABELS[change.condition]}), the {rw.RM_LABELS[change.what]}'s accuracy "
                     f"changes by {_signed(change.interval.estimate)} ({_ci(change.interval)}): "
                     f"{_verdict_text(change, ACCURACY_VERDICTS[2])}.")
    return parts


def claim_rows(gaps: list[Change], costs: list[Change]) -> list[dict]:
    """Rows for the book's claims table (``rmlib.results.write_summary(..., claims=...)``): the gap change
    under held-out translation per augmented condition, and the IM-RM's in-distribution cost. The paper has no
    such claim."""
    rows = []
    chosen = [g for g in gaps if g.group == TRANSLATION] + \
             [c for c in costs if c.group == IN_DISTRIBUTION and c.what == "im"]
    for change in chosen:
        iv = change.interval
        how = "same steps" if change.condition == SAME_STEPS else "same epochs"
        if change.what == "gap":
            claim = (f"Training on original + paraphrased rows ({how}) narrows the EX-RM minus IM-RM accuracy gap "
                     "under held-out translation (UF French, Spanish)")
        else:
            claim = f"Training on original + paraphrased rows ({how}): the IM-RM's in-distribution accuracy (UF) changes"
        verdict = change.verdict + (f" (smallest detectable difference {change.mdd:.2f})"
                                    if change.verdict in (GAP_VERDICTS[2], ACCURACY_VERDICTS[2]) else "")
        rows.append({"claim": claim, "paper": "not in the paper (remedy tested here)",
                     "this build": f"{_signed(iv.estimate)} [{_signed(iv.low)}, {_signed(iv.high)}]",
                     "verdict": verdict, "estimate": iv.estimate, "ci_low": iv.low, "ci_high": iv.high,
                     "p_value": change.test.p_value, "n_pairs": iv.n_pairs, "n_seeds": iv.n_seeds, "mdd": change.mdd})
    return rows
