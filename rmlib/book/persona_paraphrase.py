"""The page of notebook 03 (Section 5.1, Figure 4, footnote 3): a controlled token-level shift.

Its parameters (:class:`Config`), the data note, the training loop over models x seeds x reward-model types
with its progress lines, the training-fit table, the score panel and the summary. What it computes comes from
:mod:`rmlib.tasks.persona` (the data), :mod:`rmlib.analysis.maxmargin` (footnote 3's separator u* of Eq. 6),
:mod:`rmlib.analysis.token_logprobs` (the IM-RM's per-token changes, Eq. 2) and :mod:`rmlib.analysis.claims`
(Figure 4's claims). The page's Figure 4 and footnote 3 are in :mod:`rmlib.book.persona_figure4`, its per-token
view of the trained IM-RM in :mod:`rmlib.book.persona_tokens`.
Accuracy is Definition 1 (:mod:`rmlib.metrics`) over every chosen x rejected combination of an evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
from IPython.display import Markdown

from . import plural, table
from .persona_figure4 import SEPARATOR_COLUMN
from ..analysis import claims
from ..datafetch import source_line
from ..plan import train_param
from ..params import MODEL, CheckedConfig, Param, ParameterError, check_data_dir, param
from ..tasks import persona

RM_LABEL = claims.LABELS  # "ex" -> "EX-RM", "im" -> "IM-RM", "grm" -> "EX-GRM"
PAPER = {"EX-RM": "1.0", "EX-GRM": "1.0 (App. C.2)"}  # Figure 4; the IM-RM: 1.0 original, near 0 paraphrased


@dataclass(frozen=True)
class Config(CheckedConfig):
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
    seeds: list[int] = param([0, 1, 2], each=Param(int, low=0), help="seeds (each draws its own split "
                                                                       "unless split_seed is set)")
    split_seed: int | None = param(None, low=0, help="seed of one prompt split and response draw shared by every "
                                                      "seed (None: each seed draws its own; paper: 875, as the "
                                                      "official code fixes it)")
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
    checkpoint_every: int | None = param(None, low=1, help="optimizer steps between resumable checkpoints "
                                                           "(None: no checkpoints; the paper profile: 10)")
    force: bool = param(False, help="retrain even if a results file exists")
    train: str = train_param()

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

def split_of(cfg: Config, seed: int) -> int:
    """The seed of a run's prompt split and response draw: its own seed, or ``split_seed`` for every seed."""
    return seed if cfg.split_seed is None else cfg.split_seed


def load_settings(cfg: Config) -> tuple[list[str], dict[int, persona.PersonaSetting]]:
    """The trait's " Yes" prompts and, per seed, its split, response assignment and evaluation sets."""
    from ..plan import persona_prompts, persona_setting

    prompts = persona_prompts(cfg.trait, cfg.data_dir)
    settings = {seed: persona_setting(cfg.trait, cfg.data_dir, cfg.n_train, cfg.n_test, split_of(cfg, seed),
                                        cfg.n_eval_train_prompts)
                for seed in cfg.seeds}
    return prompts, settings


def data_note(cfg: Config, prompts: list[str], settings: dict) -> Markdown:
    sizes = ", ".join(f"`{k}` {len(v.rows)} pairs" for k, v in settings[cfg.seeds[0]].eval_sets.items())
    return Markdown(
        f"**Data.** {len(prompts)} prompts of trait *{cfg.trait}* have `answer_matching_behavior == \" Yes\"`; each "
        + (f"seed draws its own split of {cfg.n_train} training and {cfg.n_test} test prompts and its own response "
           "assignment. " if cfg.split_seed is None else
           f"seed trains on the same split of {cfg.n_train} training and {cfg.n_test} test prompts and response "
           f"assignment (drawn with split_seed {cfg.split_seed}, as the official code fixes it) and differs in "
           "initialization and order only. ") +
        f"Every test prompt is evaluated; of the training prompts, the first "
        f"{cfg.n_eval_train_prompts or 'all'} (evaluation is forward passes only): {sizes}. "
        + source_line([f"persona/{cfg.trait}.jsonl"], cfg.data_dir))


def training_pairs(settings: dict, seed: int, n: int = 4):
    """The first ``n`` training pairs of ``seed``, as a table."""
    return table(pd.DataFrame(settings[seed].train_rows[:n]))


# ------------------------------------------------------------------------------------------- training

def plan(cfg: Config, device: str = "here") -> list:
    """Every model x seed x reward-model type as :class:`rmlib.plan.PlanEntry`. The IM-RM of models[0],
    seeds[0] stores the per-token view (:func:`rmlib.book.persona_tokens.token_view_hook`) with the run; the
    panel's runs save their models under ``cfg.panel_models``."""
    from .. import plan as plans
    from ..runconfig import RunConfig

    runs = []
    for model in cfg.models:
        for seed in cfg.seeds:
            recipe = {"builder": "persona", "args": {
                "trait": cfg.trait, "data_dir": cfg.data_dir, "n_train": cfg.n_train, "n_test": cfg.n_test,
                "seed": split_of(cfg, seed), "n_eval_train_prompts": cfg.n_eval_train_prompts}}
            for rm_type in cfg.rm_types:
                keep = cfg.token_view and model == cfg.models[0] and seed == cfg.seeds[0] and rm_type == "im"
                run = RunConfig(setting=cfg.setting, model=model, rm_type=rm_type, beta=cfg.beta, seed=seed,
                                lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                micro_batch_size=cfg.micro_batch_size, precision=cfg.precision,
                                checkpoint_every=cfg.checkpoint_every,
                                extra={"trait": cfg.trait, "n_train": cfg.n_train, "n_test": cfg.n_test,
                                       "n_eval_train_prompts": cfg.n_eval_train_prompts,
                                       **({"token_view": True} if keep else {})})
                panel = cfg.panel and (model, seed) == (cfg.models[0], cfg.seeds[0])
                runs.append(plans.make_entry(
                    cfg.NOTEBOOK, cfg.profile, run, recipe, cfg.results_dir, device=device, task="persona",
                    after_training={"name": "persona_token_view", "args": {"model": model, "seed": seed}} if keep else None,
                    save_model_dir=cfg.panel_models if panel else None, label=f"{model} seed {seed} {RM_LABEL[rm_type]}"))
    return runs


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
