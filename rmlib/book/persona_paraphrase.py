"""The page of notebook 03 (Section 5.1, Figure 4, footnote 3): a controlled token-level shift.

Its parameters (:class:`Config`), the training loop over models x seeds x reward-model types with its
progress lines, and the page's tables, sentences and figures. What it computes comes from
:mod:`rmlib.tasks.persona` (the data), :mod:`rmlib.analysis.maxmargin` (footnote 3's separator u* of Eq. 6),
:mod:`rmlib.analysis.token_logprobs` (the IM-RM's per-token changes, Eq. 2) and :mod:`rmlib.analysis.claims`
(Figure 4's claims); the per-token view of the trained IM-RM lives in :mod:`rmlib.book.persona_tokens`.
Accuracy is Definition 1 (:mod:`rmlib.metrics`) over every chosen x rejected combination of an evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from IPython.display import Markdown

from . import plural, table
from ..analysis import claims
from ..analysis.maxmargin import hidden_differences, separator_fraction
from ..params import MODEL, NotebookConfig, Param, ParameterError, check_data_dir, param
from ..tasks import persona

RM_LABEL = claims.LABELS  # "ex" -> "EX-RM", "im" -> "IM-RM", "grm" -> "EX-GRM"
FIGURE4_COLUMNS = [("train", "original"), ("train", "paraphrased"), ("test", "original"), ("test", "paraphrased")]
PAPER = {"EX-RM": "1.0", "EX-GRM": "1.0 (App. C.2)"}  # Figure 4; the IM-RM: 1.0 original, near 0 paraphrased
SEPARATOR_COLUMN = "fraction <u*, h+ - h-> > 0"


@dataclass(frozen=True)
class Config(NotebookConfig):
    """The parameters of notebook 03; the defaults are the cpu profile."""

    NOTEBOOK: ClassVar[str] = "03_persona_paraphrase"
    profile: str = param("cpu", choices=("smoke", "cpu", "paper"), help="the profile the values come from")
    results_dir: str = param("results", help="folder of the run records (a run found there is reused)")
    data_dir: str | None = param(None, verify=check_data_dir,
                                 help="folder of the offline data mirror (None: the default mirror)")
    trait: str = param("agreeableness", help="Persona trait whose \" Yes\" statements are the prompts")
    models: list[str] = param(["smollm2-135m-instruct"], each=MODEL, help="initial language models")
    rm_types: list[str] = param(["ex", "im"], each=Param(str, choices=("ex", "im", "grm")),
                                help="reward models: EX-RM (Eq. 1), IM-RM (Eq. 2), EX-GRM (Eq. 7)")
    seeds: list[int] = param([0, 1, 2], each=Param(int, low=0), help="seeds (each draws its own split)")
    n_train: int = param(80, low=1, help="training prompts (one chosen/rejected pair each)")
    n_test: int = param(40, low=1, help="test prompts (all evaluated)")
    n_eval_train_prompts: int | None = param(10, low=1, help="training prompts evaluated (None: all, as the paper)")
    epochs: int = param(2, low=1, help="epochs over the training pairs")
    lr: float = param(2e-5, low=1e-9, high=0.1, help="Adam's learning rate (constant)")
    batch_size: int = param(8, low=1, help="pairs per optimizer step")
    micro_batch_size: int = param(8, low=1, help="pairs per forward pass (gradient accumulation)")
    beta: float = param(0.01, low=1e-6, help="the IM-RM's beta (Eq. 2)")
    precision: str = param("auto", choices=("auto", "fp32", "bf16-mixed"),
                           help="fp32, or bf16 autocast with fp32 master weights; auto: bf16-mixed on a GPU")
    token_view: bool = param(True, help="per-token log-prob changes of one trained IM-RM (models[0], seeds[0])")
    panel: bool = param(True, help="the score-your-own-pairs panel: saves the RMs of models[0], seeds[0] under "
                                   "results_dir/panel_models and loads them back")
    force: bool = param(False, help="retrain even if a results file exists")

    def check(self) -> None:
        super().check()
        if self.token_view and "im" not in self.rm_types:
            raise ParameterError("token_view=True needs 'im' in rm_types (it inspects a trained IM-RM)")
        if self.panel and not {"ex", "im"} <= set(self.rm_types):
            raise ParameterError("panel=True needs 'ex' and 'im' in rm_types (it compares a trained EX-RM and IM-RM)")

    @property
    def setting(self) -> str:
        return f"persona_{self.trait}"

    @property
    def panel_models(self) -> str:
        """Where the panel's reward models (models[0], seeds[0]) are saved."""
        return f"{self.results_dir}/panel_models"

    @property
    def rm_labels(self) -> list[str]:
        return [RM_LABEL[t] for t in self.rm_types]


# ----------------------------------------------------------------------------------------------- data

def load_settings(cfg: Config) -> tuple[list[str], dict[int, persona.PersonaSetting]]:
    """The trait's " Yes" prompts and, per seed, its split, response assignment and evaluation sets."""
    from ..data import load_persona

    prompts = persona.select_prompts(load_persona(cfg.trait, cfg.data_dir))
    settings = {seed: persona.make_setting(prompts, cfg.n_train, cfg.n_test, seed=seed,
                                           n_eval_train_prompts=cfg.n_eval_train_prompts) for seed in cfg.seeds}
    return prompts, settings


def data_note(cfg: Config, prompts: list[str], settings: dict) -> Markdown:
    sizes = ", ".join(f"`{k}` {len(v.rows)} pairs" for k, v in settings[cfg.seeds[0]].eval_sets.items())
    return Markdown(
        f"**Data.** {len(prompts)} prompts of trait *{cfg.trait}* have `answer_matching_behavior == \" Yes\"`; each "
        f"seed draws its own split of {cfg.n_train} training and {cfg.n_test} test prompts and its own response "
        f"assignment. Every test prompt is evaluated; of the training prompts, the first "
        f"{cfg.n_eval_train_prompts or 'all'} (evaluation is forward passes only): {sizes}.")


def training_pairs(settings: dict, seed: int, n: int = 4):
    """The first ``n`` training pairs of ``seed``, as a table."""
    return table(pd.DataFrame(settings[seed].train_rows[:n]))


# ------------------------------------------------------------------------------------------- training

def train_all(cfg: Config, settings: dict) -> list:
    """Train (or reuse) every model x seed x reward-model type; one progress line per run. For the IM-RM of
    models[0], seeds[0] the per-token view (:func:`rmlib.book.persona_tokens.token_view`) is stored with the
    run; the panel's runs save their models under ``cfg.panel_models``."""
    from ..experiment import run_experiment
    from ..training import TrainConfig
    from .persona_tokens import token_view

    outcomes = []
    for model in cfg.models:
        for seed in cfg.seeds:
            s = settings[seed]
            for rm_type in cfg.rm_types:
                keep = cfg.token_view and model == cfg.models[0] and seed == cfg.seeds[0] and rm_type == "im"
                config = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                     micro_batch_size=cfg.micro_batch_size, seed=seed, progress=True)
                out = run_experiment(cfg.setting, model, rm_type, s.train_rows, s.eval_sets, config, cfg.results_dir,
                                     beta=cfg.beta, precision=cfg.precision, prepare=persona.prepare_model,
                                     force=cfg.force,
                                     after_training=(lambda rm, s=s, seed=seed: token_view(cfg, rm, s, seed))
                                     if keep else None,
                                     save_model_dir=cfg.panel_models if cfg.panel and (model, seed) == (
                                         cfg.models[0], cfg.seeds[0]) else None,
                                     extra={"trait": cfg.trait, "n_train": cfg.n_train, "n_test": cfg.n_test,
                                            "n_eval_train_prompts": cfg.n_eval_train_prompts,
                                            **({"token_view": True} if keep else {})})
                outcomes.append(out)
                print(progress_line(out))
    return outcomes


def progress_line(outcome) -> str:
    rec = outcome.record
    how = "reused" if outcome.reused else "trained in {:.0f} s".format(rec["timings"]["train"])
    how += f", {rec['precision']['mode']}"
    spec = rec["spec"]
    return (f"{spec['model']:24s} seed {spec['seed']} {RM_LABEL[spec['rm_type']]:6s} {how}; "
            + "  ".join(f"{k} {v['accuracy']:.3f}" for k, v in rec["evals"].items()))


def fit_table(outcomes: list, settings: dict) -> pd.DataFrame:
    """Per run: accuracy on its own training pairs after training (:func:`claims.assigned_accuracy` over the
    stored rewards of ``train/original``, which contains every evaluated prompt's own pair), the last epoch's
    training accuracy and loss, and the training time."""
    fit = []
    for o in outcomes:
        spec, ev = o.record["spec"], o.record["evals"]["train/original"]
        rows = settings[spec["seed"]].eval_sets["train/original"].rows
        last = o.record["history"]["epochs"][-1]
        fit.append({"model": spec["model"], "rm_type": RM_LABEL[spec["rm_type"]], "seed": spec["seed"],
                    "train pairs acc (after)": claims.assigned_accuracy(rows, ev["reward_chosen"], ev["reward_rejected"]),
                    "last-epoch train acc": last["train_accuracy"], "last-epoch loss": last["train_loss"],
                    "train seconds": o.record["timings"]["train"]})
    return pd.DataFrame(fit)


# ------------------------------------------------------------------------------------------- Figure 4

def accuracy_runs(outcomes: list) -> pd.DataFrame:
    """One row per (run, evaluation set) (:func:`rmlib.results.tidy`) with the columns RM, prompts
    (train/test) and responses (original/paraphrased)."""
    from ..results import tidy

    runs = tidy([o.record for o in outcomes])
    runs["RM"] = runs["rm_type"].map(RM_LABEL)
    runs["prompts"] = runs["eval_set"].str.split("/").str[0]
    runs["responses"] = runs["eval_set"].str.split("/").str[1]
    return runs


def figure4_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 0) and number n of runs' accuracies per (RM, prompts, responses): over seeds and,
    as the paper's table, over models."""
    grouped = runs.groupby(["RM", "prompts", "responses"])["accuracy"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=0), "n": grouped.size()})


def figure4_table(cfg: Config, stats: pd.DataFrame) -> tuple[Markdown, object]:
    """The caption and the table "mean ± std" per reward model (rows) and evaluation set (columns)."""
    cells = (stats["mean"].map("{:.3f}".format) + " ± " + stats["std"].map("{:.3f}".format)).unstack(["prompts", "responses"])
    cells = cells.reindex(index=cfg.rm_labels, columns=pd.MultiIndex.from_tuples(FIGURE4_COLUMNS))
    caption = Markdown(f"Accuracy, mean ± std over {plural(int(stats['n'].iloc[0]), 'run')} per cell "
                       f"({plural(len(cfg.models), 'model')} x {plural(len(cfg.seeds), 'seed')}):")
    return caption, table(cells)


def combination_table(cfg: Config, outcomes: list, settings: dict) -> tuple[Markdown, object]:
    """Accuracy on test prompts per paraphrase combination (2 chosen x 2 rejected responses), each averaged
    over prompts (:func:`claims.combination_accuracy`) and then over runs, with the mean of the four."""
    combos = []
    for o in outcomes:
        spec, ev = o.record["spec"], o.record["evals"]["test/paraphrased"]
        rows = settings[spec["seed"]].eval_sets["test/paraphrased"].rows
        per_combination = claims.combination_accuracy(rows, ev["reward_chosen"], ev["reward_rejected"])
        combos.append(per_combination.assign(RM=RM_LABEL[spec["rm_type"]]))
    combos = pd.concat(combos).groupby(["chosen", "rejected", "RM"], sort=False)["accuracy"].mean().unstack("RM")
    combos = combos[cfg.rm_labels]
    combos.loc[("mean of the 4", ""), :] = combos.mean()
    caption = Markdown("Accuracy on test prompts per paraphrase combination (chosen x rejected response), "
                       "mean over runs:")
    return caption, table(combos)


def per_model_table(runs: pd.DataFrame):
    """Mean accuracy per model and reward model; None with a single model (Figure 4's table says it all)."""
    if runs["model"].nunique() < 2:
        return None
    return table(runs.pivot_table(index=["model", "RM"], columns=["prompts", "responses"], values="accuracy",
                                  aggfunc="mean"))


def figure4_plot(cfg: Config, stats: pd.DataFrame):
    """Figure 4 as bars: one group per evaluation set, one bar per reward model (mean, std as error bar)."""
    from matplotlib.figure import Figure

    order = cfg.rm_labels
    fig = Figure(figsize=(6.9, 3.2))
    ax = fig.subplots()
    width = 0.8 / len(order)
    for i, rm in enumerate(order):
        means = [stats.loc[(rm, *c), "mean"] for c in FIGURE4_COLUMNS]
        stds = [stats.loc[(rm, *c), "std"] for c in FIGURE4_COLUMNS]
        ax.bar(np.arange(4) + (i - (len(order) - 1) / 2) * width, means, width, yerr=stds, label=rm, capsize=2)
    ax.set_xticks(range(4), [f"{p} prompts\n{r}" for p, r in FIGURE4_COLUMNS])
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def comparison_note(cfg: Config, fit: pd.DataFrame, tested: list) -> Markdown:
    """The comparison with Figure 4: the training-fit precondition (:func:`claims.fit_sentence`) and each
    tested claim of :func:`claims.figure4_claims` with its sentence and verdict."""
    lowest_fit = fit.groupby("rm_type", sort=False)["train pairs acc (after)"].min().to_dict()
    head = (f"**Comparison with Figure 4** ({cfg.profile} profile; models: {', '.join(cfg.models)}; "
            f"{plural(cfg.epochs, 'epoch')}, lr {cfg.lr:g}, batch {cfg.batch_size}, {plural(len(cfg.seeds), 'seed')}; "
            "intervals resample test prompts and seeds).")
    return Markdown("\n".join([head, "", f"* {claims.fit_sentence(lowest_fit)}"]
                              + [f"* *{claim}* (paper: {paper}). {c.sentence()}" for claim, paper, c in tested]))


# ----------------------------------------------------------------------------------------- footnote 3

def separator_table(cfg: Config, settings: dict) -> pd.DataFrame:
    """Footnote 3 per model and seed: with the initial model's EX-RM features, the max-margin separator u*
    (Eq. 6) of the training pairs and the fraction of paraphrased pairs with <u*, h+ - h-> > 0
    (:func:`rmlib.analysis.maxmargin.separator_fraction`). A model whose training pairs are not separable
    is reported by a printed line and left out."""
    from ..models import load_model
    from ..rewards import build_reward_model

    sep_rows = []
    for model in cfg.models:
        for seed in cfg.seeds:
            s = settings[seed]
            lm, tok = load_model(model, dtype="float32", seed=seed)
            persona.prepare_model(lm, tok)
            ex0 = build_reward_model("ex", lm, tok, seed=seed)
            train_d = hidden_differences(ex0, s.train_rows)
            evals = {name: hidden_differences(ex0, s.eval_sets[name].rows)
                     for name in ("train/paraphrased", "test/paraphrased")}
            try:
                out = separator_fraction(train_d, evals)
            except ValueError as err:  # NotSeparable
                print(f"{model} seed {seed}: {err}")
                continue
            for name, frac in out["fractions"].items():
                sep_rows.append({"model": model, "seed": seed, "eval_set": name, SEPARATOR_COLUMN: frac,
                                 "min training margin": out["train_min_margin"]})
            del lm, tok, ex0
    return pd.DataFrame(sep_rows)


def separator_note(cfg: Config, separator: pd.DataFrame, stats: pd.DataFrame) -> Markdown:
    """u*'s fraction on the paraphrased test pairs against the paper's, and against the trained EX-RM's
    accuracy on the same pairs (within 0.05: consistent; above or below: what that means for Theorem 2)."""
    if separator.empty:
        return Markdown("The training pairs were not linearly separable for any model, so $u^*$ does not exist.")
    frac = separator[separator.eval_set == "test/paraphrased"][SEPARATOR_COLUMN]
    text = (f"With the initial model's hidden states, $u^*$ ranks correctly a fraction **{frac.mean():.3f}** of the "
            f"paraphrased test pairs (mean over {plural(len(frac), 'model/seed combination')}; min {frac.min():.3f}); "
            "the paper reports 1.00 for instruct models and about 0.97 for base models. ")
    if "ex" not in cfg.rm_types:
        return Markdown(text)
    ex_test = stats.loc[("EX-RM", "test", "paraphrased"), "mean"]
    text += f"The trained EX-RM's accuracy on the same pairs is {ex_test:.3f}"
    if abs(ex_test - frac.mean()) <= 0.05:
        return Markdown(text + ", consistent with the separator's prediction.")
    if ex_test > frac.mean():
        return Markdown(text + ", well above the separator's fraction: the initial representations alone do not "
                        "explain the EX-RM's generalization here. Theorem 2 holds the hidden representations fixed "
                        "and trains only the head; in these runs all parameters are trained, and the representations "
                        "that the EX-RM ends with separate the paraphrases although the initial ones do not.")
    return Markdown(text + ", below the separator's fraction: training all parameters for a finite number of steps "
                    "has not reached Theorem 2's idealized limit (fixed representations, head trained to convergence).")


# ------------------------------------------------------------------------------------ panel and summary

def score_panel(cfg: Config, outcomes: list, settings: dict):
    """The score-your-own-pairs panel over the saved reward models of models[0], seeds[0] (None if off)."""
    if not cfg.panel:
        return None
    from ..widgets.score_panel import open_panel

    return open_panel([o.record for o in outcomes], settings[cfg.seeds[0]], cfg.models[0], cfg.seeds[0])


def summary_rows(cfg: Config, stats: pd.DataFrame, separator: pd.DataFrame, wall_seconds: float) -> list[dict]:
    """The page's key numbers with the paper's: Figure 4's 12 (or 8) accuracies, footnote 3's fraction, wall time."""
    rows = []
    for rm in cfg.rm_labels:
        for p in ("train", "test"):
            for r in ("original", "paraphrased"):
                paper = ("1.0" if r == "original" else "near 0") if rm == "IM-RM" else PAPER[rm]
                rows.append({"quantity": f"{rm} accuracy, {p} prompts, {r} responses",
                             "value": round(float(stats.loc[(rm, p, r), "mean"]), 4), "paper": paper,
                             "note": f"mean over {plural(int(stats.loc[(rm, p, r), 'n']), 'run')}"})
    if not separator.empty:
        f = separator[separator.eval_set == "test/paraphrased"][SEPARATOR_COLUMN]
        rows.append({"quantity": "footnote 3: fraction of paraphrased test pairs with <u*, h+ - h-> > 0 (initial model)",
                     "value": round(float(f.mean()), 4), "paper": "1.00 (instruct), ~0.97 (base)",
                     "note": ", ".join(cfg.models)})
    rows.append({"quantity": "notebook wall time (s)", "value": round(wall_seconds, 1), "paper": "",
                 "note": f"{cfg.profile} profile"})
    return rows


def write_page_summary(cfg: Config, stats: pd.DataFrame, separator: pd.DataFrame, tested: list,
                       wall_seconds: float):
    """Write results/summaries/03_persona_paraphrase.json (:func:`rmlib.results.write_summary`) with the
    summary rows and the tested claims; returns the rows as a table."""
    from ..results import write_summary

    rows = summary_rows(cfg, stats, separator, wall_seconds)
    write_summary(cfg.results_dir, cfg.NOTEBOOK, rows, profile=cfg.profile,
                  claims=[c.claim_row(claim, paper) for claim, paper, c in tested])
    return table(pd.DataFrame(rows))
