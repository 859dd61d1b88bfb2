"""The page of notebook 05 (beyond the paper): does training on paraphrased responses close the IM-RM's gap?

Its parameters (:class:`Config`), the training loop over models x conditions x seeds x reward-model types
with its progress lines, and the page's tables and sentences (figures: :mod:`rmlib.book.augmentation_figures`).
The data come from :mod:`rmlib.tasks.augmentation` (notebook 04's chat setting plus the paraphrased training
rows, the three conditions), the effects from :mod:`rmlib.analysis.augmentation_effects` (the change of the
EX-RM minus IM-RM gap as a difference in differences, each reward model's change of accuracy, the verdicts).
Accuracy is Definition 1 (ties count 1/2) over the pairs of a group of test sets.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
from IPython.display import Markdown

from . import plural, table, use_style
from ..analysis import augmentation_effects as fx
from ..analysis import stats
from ..datafetch import source_line
from ..plan import train_param
from ..params import MODEL, CheckedConfig, Param, ParameterError, check_data_dir, param
from ..tasks import augmentation as aug
from ..tasks import realworld as rw

NOTEBOOK = "05_augmentation"


@dataclass(frozen=True)
class Config(CheckedConfig):
    """The parameters of notebook 05; the defaults are the cpu profile (notebook 04's cpu protocol, so the
    'original' runs are notebook 04's)."""

    NOTEBOOK: ClassVar[str] = NOTEBOOK
    profile: str = param("cpu", choices=("smoke", "cpu", "paper"), help="the profile the values come from")
    results_dir: str = param("results", help="folder of the run records (a run found there is reused)")
    data_dir: str | None = param(None, verify=check_data_dir,
                                 help="folder of the offline data mirror (None: the default mirror)")
    models: list[str] = param(["smollm2-135m-instruct"], each=MODEL, help="initial language models")
    seeds: list[int] = param([0], each=Param(int, low=0), help="training seeds")
    rm_types: list[str] = param(["ex", "im"], each=Param(str, choices=("ex", "im")),
                                help="both are needed: the gap is EX-RM (Eq. 1) minus IM-RM (Eq. 2)")
    epochs: int = param(4, low=1, help="epochs of the 'original' condition (and of 'augmented, same epochs')")
    lr: float = param(2e-5, low=1e-9, high=0.1, help="Adam's learning rate (constant)")
    batch_size: int = param(8, low=1, help="pairs per optimizer step")
    micro_batch_size: int = param(4, low=1, help="pairs per forward pass (gradient accumulation)")
    beta: float = param(0.01, low=1e-6, help="the IM-RM's beta (Eq. 2)")
    precision: str = param("auto", choices=("auto", "fp32", "bf16-mixed"),
                           help="fp32, or bf16 autocast with fp32 master weights; auto: bf16-mixed on a GPU "
                                "that has bf16, else fp32")
    max_length: int | None = param(256, low=16, help="tokens of prompt+response; a pair is dropped (counted) "
                                                     "unless both forms fit (None: no cap)")
    n_train: int | None = param(32, low=1, help="training prompts (None: all that fit); the augmented "
                                                "conditions have 2 x n_train rows")
    n_eval: int | None = param(20, low=1, help="rows per evaluation set (None: every row that fits)")
    data_seed: int = param(0, low=0, help="seed of the subsets (notebook 04's)")
    conditions: list[str] = param(["original", "augmented_same_steps", "placebo"],
                                  each=Param(str, choices=aug.CONDITIONS),
                                  help="training conditions: 'original', at least one augmented one "
                                       "('augmented_same_epochs' takes about twice the steps), and 'placebo' "
                                       "(the original rows reordered: measures the order noise a verdict must beat)")
    length_rm_types: list[str] = param(["ex", "im"], each=Param(str, choices=("ex", "im", "grm")),
                                       help="notebook 04's rm_types: the formats whose lengths the cap checks "
                                            "(the same as notebook 04's, so the 'original' runs are its runs)")
    checkpoint_every: int | None = param(None, low=1, help="optimizer steps between resumable checkpoints "
                                                           "(None: no checkpoints)")
    gradient_checkpointing: bool = param(False, help="recompute decoder activations in the backward pass: less "
                                         "memory, ~one more forward pass, same numbers (paper: the 2B-8B models)")
    force: bool = param(False, help="retrain even if a results file exists")
    train: str = train_param()

    def check(self) -> None:
        super().check()
        if set(self.rm_types) != {"ex", "im"}:
            raise ParameterError(f"rm_types must be ['ex', 'im'] (the gap is EX-RM minus IM-RM), got {self.rm_types}")
        if not {"ex", "im"} <= set(self.length_rm_types):
            raise ParameterError(f"length_rm_types must contain 'ex' and 'im' (notebook 04's rm_types), got "
                                 f"{self.length_rm_types}")
        if "original" not in self.conditions or not set(self.conditions) & set(aug.AUGMENTED):
            raise ParameterError("conditions must contain 'original' and at least one augmented condition "
                                 f"({', '.join(aug.AUGMENTED)}), got {self.conditions}")

    @property
    def treated(self) -> list[str]:
        """The augmented conditions run, in :data:`rmlib.tasks.augmentation.CONDITIONS` order."""
        return [c for c in aug.CONDITIONS if c in self.conditions and c != aug.ORIGINAL]

    @property
    def protocol(self) -> dict:
        """Notebook 04's protocol (stored in each run's spec): with its parameters, the 'original' runs have
        notebook 04's run ids."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "max_length": self.max_length,
                "n_train_max": self.n_train, "n_eval_max": self.n_eval, "data_seed": self.data_seed,
                "length_rm_types": ",".join(sorted(self.length_rm_types))}


def setup() -> float:
    """The page's figure style and warnings; returns the start time (``time.perf_counter``)."""
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")
    use_style()
    return time.perf_counter()


# ----------------------------------------------------------------------------------------------- data

def load_data(cfg: Config) -> dict[str, aug.AugmentationData]:
    """Per model: notebook 04's chat setting plus the paraphrased training rows (every paraphrase checked
    before any model is loaded)."""
    from ..plan import augmentation_setting

    return {m: augmentation_setting(**data_args(cfg, m)) for m in cfg.models}


def data_note(cfg: Config, data: dict[str, aug.AugmentationData]) -> Markdown:
    """What the three conditions train on (first model's rows), in one paragraph."""
    first = data[cfg.models[0]]
    c, n, epochs, batch = first.counts, len(first.originals), cfg.epochs, cfg.batch_size
    steps_epochs, steps_max = aug.same_steps_schedule(n, 2 * n, batch, epochs)
    cap = f"max_length={cfg.max_length}" if cfg.max_length else "no token cap"
    text = (f"**Training rows.** {c['usable']} UF training prompts have a usable original and paraphrased row; "
            f"{c['too_long_original']} are dropped because the original is too long ({cap}) and "
            f"{c['too_long_paraphrase_only']} because only the paraphrase is; of the {c['fit']} left, {c['used']} "
            f"are used. *original*: {n} rows, {plural(epochs, 'epoch')}, "
            f"{aug.total_steps(n, batch, epochs)} optimizer steps of {batch} pairs. *augmented, same steps*: "
            f"{2 * n} rows (each prompt as original and paraphrased), {plural(steps_epochs, 'epoch')}"
            + (f" cut at {steps_max} steps" if steps_max else "")
            + f", {aug.total_steps(2 * n, batch, steps_epochs, steps_max)} steps. *augmented, same epochs*: "
            f"{2 * n} rows, {plural(epochs, 'epoch')}, {aug.total_steps(2 * n, batch, epochs)} steps. ")
    text += ("The original rows are exactly those notebook 04's chat setting trains on with the same parameters, so "
             "with notebook 04's parameters the *original* runs are its runs (see `reused` in the training table)."
             if first.same_rows_as_realworld else
             "The original rows differ from notebook 04's (only the UF training prompts that have a paraphrase "
             "count, and some paraphrases may not fit the cap), so the *original* "
             "condition is trained here on the prompts every condition shares.")
    return Markdown(text + " " + source_line(["ultrafeedback/train.jsonl", "ultrafeedback_paraphrased/train.jsonl"],
                                             cfg.data_dir))


def evaluation_table(cfg: Config, data: dict[str, aug.AugmentationData]):
    """The seven test sets of the first model (notebook 04's report), each with its group and counts."""
    report = data[cfg.models[0]].loaded.report
    evaluation = report[report["split"] == "test"].copy()
    evaluation["group"] = evaluation["data_set"].map(fx.group_of)
    return table(evaluation[["group", "label", "too_long", "too_long_elsewhere", "used"]],
                 rename={"label": "test set", "too_long_elsewhere": "too long elsewhere"})


# ------------------------------------------------------------------------------------------- training

def realworld_config(cfg: Config):
    """Notebook 04's :class:`~rmlib.book.real_world_shifts.Config` with this notebook's shared parameters: its
    runs and data recipes are the 'original' condition's when the rows are the same."""
    from . import real_world_shifts as rws

    return rws.Config(**{"profile": cfg.profile, "results_dir": cfg.results_dir, "data_dir": cfg.data_dir,
                         "settings": ["chat"], "models": cfg.models, "seeds": cfg.seeds,
                         "rm_types": cfg.length_rm_types, "epochs": cfg.epochs, "lr": cfg.lr,
                         "batch_size": cfg.batch_size, "micro_batch_size": cfg.micro_batch_size,
                         "beta": cfg.beta, "precision": cfg.precision, "max_length": cfg.max_length,
                         "n_train": cfg.n_train, "n_eval": cfg.n_eval, "data_seed": cfg.data_seed,
                         "checkpoint_every": cfg.checkpoint_every,
                         "gradient_checkpointing": cfg.gradient_checkpointing})  # checked as this Config


def data_args(cfg: Config, model: str) -> dict:
    """The arguments of :func:`rmlib.plan.augmentation_setting` (the same as notebook 04's chat setting)."""
    return {"model": model, "length_rm_types": sorted(cfg.length_rm_types), "max_length": cfg.max_length,
            "n_train": cfg.n_train, "n_eval": cfg.n_eval, "data_dir": cfg.data_dir, "seed": cfg.data_seed}


def plan(cfg: Config, device: str = "here") -> list:
    """Every model x condition x seed x reward model as :class:`rmlib.plan.PlanEntry`. The 'original' runs on
    notebook 04's rows are notebook 04's runs (same RunConfig, data recipe and folder: same run ids, reused)."""
    from .. import plan as plans
    from ..runconfig import RunConfig
    from . import real_world_shifts as rws

    runs, cfg04 = [], realworld_config(cfg)
    for model in cfg.models:
        data = plans.augmentation_setting(**data_args(cfg, model))
        for condition in data.conditions(cfg.epochs, cfg.batch_size, cfg.protocol, cfg.conditions):
            for seed in cfg.seeds:
                for rm_type in ("ex", "im"):
                    label = f"{condition.label}, {rw.RM_LABELS[rm_type]}, seed {seed}" + (
                        f", {model}" if len(cfg.models) > 1 else "")
                    if condition.name == aug.ORIGINAL and data.same_rows_as_realworld:
                        run, recipe = (rws.run_config(cfg04, "chat", model, seed, rm_type),
                                       rws.data_recipe(cfg04, "chat", model))
                    else:
                        run = RunConfig(setting=condition.results_setting, model=model, rm_type=rm_type,
                                        beta=cfg.beta, seed=seed, lr=cfg.lr, epochs=condition.epochs,
                                        max_steps=condition.max_steps, batch_size=cfg.batch_size,
                                        micro_batch_size=cfg.micro_batch_size, precision=cfg.precision,
                                        max_length=cfg.max_length, checkpoint_every=cfg.checkpoint_every,
                                        gradient_checkpointing=cfg.gradient_checkpointing, extra=condition.extra)
                        recipe = {"builder": "augmentation", "args": {
                            "condition": condition.name, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                            "protocol": cfg.protocol, **data_args(cfg, model)}}
                    runs.append(plans.make_entry(NOTEBOOK, cfg.profile, run, recipe, cfg.results_dir, device=device,
                                                 label=label))
    return runs


def condition_of(record: dict) -> str:
    """The condition of a run record (notebook 04's runs have none in their spec: 'original')."""
    return record["spec"]["extra"].get("condition", aug.ORIGINAL)


def progress_line(i: int, runs: list, outcome) -> str:
    rec = outcome.record
    how = f"reused ({rec['spec']['setting']})" if outcome.reused else f"trained in {outcome.timings['wall_s']:.0f} s"
    return (f"[{i + 1}/{len(runs)}] {runs[i].label}: {how} ({rec['precision']['mode']}); "
            + " ".join(f"{rw.LABELS[k]} {v['accuracy']:.2f}" for k, v in rec["evals"].items()))


def records_and_timing(runs: list, outcomes: list) -> tuple[dict, pd.DataFrame]:
    """The run records per condition, and one timing row per run (rows, steps, reused, wall time, final fit)."""
    records, timing = {}, []
    for entry, out in zip(runs, outcomes):
        rec, spec = out.record, out.record["spec"]
        condition = condition_of(rec)
        records.setdefault(condition, []).append(rec)
        last = rec["history"]["epochs"][-1]
        timing.append({"condition": aug.CONDITION_LABELS[condition], "model": spec["model"], "seed": spec["seed"],
                       "rm": rw.RM_LABELS[spec["rm_type"]], "rows": rec["n_train"], "reused": out.reused,
                       "steps": aug.total_steps(rec["n_train"], spec["batch_size"], spec["epochs"], spec["max_steps"]),
                       "wall_s": out.timings["wall_s"], "final_loss": last["train_loss"],
                       "final_acc": last["train_accuracy"], "stored in": spec["setting"]})
    return records, pd.DataFrame(timing)


def timing_table(cfg: Config, timing: pd.DataFrame):
    return table(timing.drop(columns=["model"] if len(cfg.models) == 1 else []), rename={"wall_s": "wall (s)"})


# ------------------------------------------------------------------------------------------ accuracy

def accuracy_by_group(examples: pd.DataFrame) -> pd.DataFrame:
    """:func:`rmlib.analysis.augmentation_effects.accuracy_table` with the conditions' and reward models'
    labels (``condition`` as shown, ``reward model``)."""
    accuracy = fx.accuracy_table(examples)
    accuracy["condition"] = accuracy["condition"].map(aug.CONDITION_LABELS)
    accuracy["reward model"] = accuracy["rm"].map(rw.RM_LABELS)
    return accuracy


def accuracy_tables(accuracy: pd.DataFrame, timing: pd.DataFrame) -> list:
    """Training fit (final-epoch running loss and accuracy per condition and reward model, mean over models and
    seeds), then accuracy per group and condition with the gap EX - IM and the number of pairs."""
    wide = accuracy.pivot_table(index=["group", "condition"], columns="reward model", values="accuracy", sort=False)
    wide.columns.name = None
    wide["EX - IM"] = wide["EX-RM"] - wide["IM-RM"]
    wide["pairs"] = accuracy.pivot_table(index=["group", "condition"], values="n_pairs", sort=False)["n_pairs"]
    fit = timing.groupby(["condition", "rm"], sort=False)[["final_loss", "final_acc"]].mean().unstack("rm")
    return [Markdown("**Training fit** (final-epoch running loss and accuracy, mean over models and seeds):"),
            table(fit), Markdown("**Accuracy per group of test sets** (EX - IM: the gap):"), table(wide)]


# ------------------------------------------------------------------------------------------ sentences

def _ci(iv: stats.Interval) -> str:
    return f"{iv.confidence * 100:g}% CI {fx.signed(iv.low)} to {fx.signed(iv.high)}"


def _sample(change: fx.Change) -> str:
    iv, p = change.interval, change.test.p_value
    p_text = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
    units = (plural(iv.n_pairs, 'prompt') if iv.n_clusters == iv.n_pairs
             else f"{plural(iv.n_pairs, 'pair')} in {plural(iv.n_clusters, 'prompt')}")
    return (f"{units}, {plural(iv.n_seeds, 'seed')} "
            f"({iv.covers}); sign-flip test over prompts {p_text}")


def _verdict_text(change: fx.Change, undecided: str) -> str:
    if change.verdict == undecided:
        return f"{change.verdict} (smallest detectable difference about {change.mdd:.2f})"
    return change.verdict


def gap_sentence(change: fx.Change) -> str:
    """One sentence on a gap change: both gaps, the change with its interval, and the verdict."""
    return (f"**{change.group}**, {aug.CONDITION_LABELS[change.condition]}: the EX-RM minus IM-RM accuracy gap is "
            f"{fx.signed(change.before)} with the original rows and {fx.signed(change.after)} with augmentation; "
            f"change {fx.signed(change.interval.estimate)} ({_ci(change.interval)}; {_sample(change)}): "
            f"{_verdict_text(change, fx.GAP_VERDICTS[2])}.")


def accuracy_sentence(change: fx.Change) -> str:
    """One sentence on one reward model's accuracy change."""
    return (f"**{change.group}**, {aug.CONDITION_LABELS[change.condition]}: {rw.RM_LABELS[change.what]} accuracy "
            f"{change.before:.2f} -> {change.after:.2f}, change {fx.signed(change.interval.estimate)} "
            f"({_ci(change.interval)}; {_sample(change)}): {_verdict_text(change, fx.ACCURACY_VERDICTS[2])}.")


def order_noise(gaps: list[fx.Change]) -> tuple[list[fx.Change], dict]:
    """The treatments' gap changes with their verdicts judged against the placebo's order noise, and the
    placebo's change per group (:func:`rmlib.analysis.order_noise.guard`)."""
    from ..analysis.order_noise import guard

    return guard(gaps)


def treatments_only(changes: list[fx.Change]) -> list[fx.Change]:
    """The changes of the augmented conditions (the placebo's are order noise, shown apart)."""
    return [c for c in changes if c.condition != aug.PLACEBO]


def placebo_findings(placebo: dict) -> Markdown:
    """The order noise the placebo measured, per group, and the rule that uses it; or, without a placebo run,
    that order noise is not measured."""

    if not placebo:
        return Markdown("**Order noise is not measured** (no `placebo` condition): with one seed a treatment's "
                        "interval covers evaluation noise only, not the run-to-run variation of a different data order.")
    lines = [f"* **{c.group}**: the gap moves {fx.signed(c.before)} -> {fx.signed(c.after)} when only the order of "
             f"the original rows changes, change {fx.signed(c.interval.estimate)} ({_ci(c.interval)})."
             for c in placebo.values()]
    rule = ("**Order noise** (placebo: the original rows in another order, same seed, steps and initial weights). "
            f"The hypothesis was fixed before the data: augmentation narrows the EX-IM gap (its change is negative: "
            f"the IM-RM gains more than the EX-RM), whatever the sign of the gap. A treatment *narrows* the gap only "
            f"if its exact test rejects and its whole interval lies below minus the margin **and** below the "
            f"placebo's change; it *does not narrow* it only if the whole interval lies above both; otherwise it is "
            f"undecided (`rmlib.analysis.order_noise`). One placebo run measures the order noise once, it does not "
            f"estimate its spread: a guard against mistaking order noise for an effect, not a test at a stated level "
            f"for the run-to-run variation. Placebo changes:")
    return Markdown("\n".join([rule, ""] + lines))


def gap_findings(gaps: list[fx.Change]) -> list:
    """One sentence per group and augmented condition, then the table of gaps, changes and verdicts."""
    rows = pd.DataFrame([c.as_row() for c in gaps])
    return [Markdown("\n".join(f"* {gap_sentence(c)}" for c in gaps)),
            table(rows[["group", "condition", "original", "augmented", "change", "95% CI", "verdict"]], index=False,
                  rename={"original": "gap, original", "augmented": "gap, augmented"})]


def cost_findings(costs: list[fx.Change]) -> list:
    """Sentences on the in-distribution and held-out translation changes, then every group in a table."""
    rows = pd.DataFrame([c.as_row() for c in costs])
    return [Markdown("\n".join(f"* {accuracy_sentence(c)}" for c in costs
                               if c.group in (fx.IN_DISTRIBUTION, fx.TRANSLATION))),
            Markdown("Every group (intervals paired over the same pairs and seeds):"),
            table(rows[["group", "condition", "measure", "original", "augmented", "change", "95% CI", "verdict"]],
                  index=False)]


def answer_lines(gaps: list[fx.Change], costs: list[fx.Change]) -> list[str]:
    """The chapter's answer, one line per finding: does augmentation narrow the gap under held-out
    translation, and what does it cost the IM-RM (and the EX-RM) in-distribution."""
    parts = []
    for change in (g for g in gaps if g.group == fx.TRANSLATION):
        what = {fx.GAP_VERDICTS[0]: f"augmentation narrows the EX-IM gap under held-out translation by more than "
                                    f"{stats.MARGIN:g}",
                fx.GAP_VERDICTS[1]: f"augmentation does not narrow the EX-IM gap under held-out translation by more "
                                    f"than {stats.MARGIN:g}"}.get(
            change.verdict, "undecided whether augmentation changes the EX-IM gap under held-out translation")
        detectable = (f"; this size could detect a change of about {change.mdd:.2f}"
                      if change.verdict == fx.GAP_VERDICTS[2] else "")
        parts.append(f"*{aug.CONDITION_LABELS[change.condition].capitalize()}*: {what} ({fx.signed(change.before)} -> "
                     f"{fx.signed(change.after)}, change {fx.signed(change.interval.estimate)}, "
                     f"{_ci(change.interval)}{detectable}).")
    for change in (c for c in costs if c.group == fx.IN_DISTRIBUTION):
        parts.append(f"In-distribution ({aug.CONDITION_LABELS[change.condition]}), the {rw.RM_LABELS[change.what]}'s "
                     f"accuracy changes by {fx.signed(change.interval.estimate)} ({_ci(change.interval)}): "
                     f"{_verdict_text(change, fx.ACCURACY_VERDICTS[2])}.")
    return parts


def answer(gaps: list[fx.Change], costs: list[fx.Change]) -> Markdown:
    return Markdown("**Answer.**\n\n" + "\n".join(f"* {line}" for line in answer_lines(gaps, costs)))


# ------------------------------------------------------------------------------------------- summary

def summary_rows(gaps: list[fx.Change], costs: list[fx.Change]) -> list[dict]:
    """The results summary's rows: every gap change, and each reward model's in-distribution accuracy."""
    rows = [{"quantity": f"{c.group}: EX-RM minus IM-RM gap, {aug.CONDITION_LABELS[c.condition]} (original -> augmented)",
             "value": f"{c.before:+.3f} -> {c.after:+.3f}", "paper": "not in the paper",
             "note": f"change {c.interval.estimate:+.3f} [{c.interval.low:+.3f}, {c.interval.high:+.3f}]: {c.verdict}"}
            for c in gaps]
    rows += [{"quantity": f"{c.group}: {rw.RM_LABELS[c.what]} accuracy, {aug.CONDITION_LABELS[c.condition]}",
              "value": f"{c.before:.3f} -> {c.after:.3f}", "paper": "not in the paper", "note": c.verdict}
             for c in costs if c.group == fx.IN_DISTRIBUTION]
    return rows


def write(cfg: Config, gaps: list[fx.Change], costs: list[fx.Change], timing: pd.DataFrame, start: float) -> list:
    """Write the results summary (rows and claims) and return what the page shows of it: where it went, how
    long this execution took, and the claims-table rows."""
    from ..results import write_summary

    claims = fx.claim_rows(gaps, costs)
    path = write_summary(cfg.results_dir, NOTEBOOK, summary_rows(gaps, costs), profile=cfg.profile, claims=claims)
    trained = timing[~timing["reused"]]
    return [Markdown(f"Summary written to `{path}`. This execution took {(time.perf_counter() - start) / 60:.1f} "
                     f"min; {plural(len(trained), 'run')} of {len(timing)} trained now "
                     f"({trained['wall_s'].sum() / 60:.1f} min), the rest reused."),
            Markdown("Claims-table rows (the paper has no claim about this remedy):"),
            table(pd.DataFrame(claims)[["claim", "this build", "verdict"]])]
