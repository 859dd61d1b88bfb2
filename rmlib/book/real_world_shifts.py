"""Page of notebook 04 (Section 5.2, real-world token-level and domain shifts): its parameters, data,
training runs, the results read back from every run with this protocol, and the summary.

The tables, sentences and figures the page shows are in :mod:`rmlib.book.real_world_shifts_views`; the
data in :mod:`rmlib.tasks.realworld`; what is computed from the runs in :mod:`rmlib.analysis.paper_tables`
(Tables 1-10), :mod:`rmlib.analysis.rm_comparisons` (paired EX vs IM comparisons) and
:mod:`rmlib.analysis.overlap` (n-gram overlap with the training data).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

from ..analysis import overlap as ov
from ..analysis.paper_tables import PAPER_CATEGORY, aggregate
from ..analysis.rm_comparisons import claim_rows, compare_rms
from ..datafetch import check_paper_rows
from ..plan import train_param
from ..params import MODEL, CheckedConfig, Param, ParameterError, check_data_dir, param
from ..tasks import realworld as rw
from . import plural, use_style
from .real_world_shifts_views import file_rows, overlap_trend_row

NOTEBOOK = "04_real_world_shifts"
VARIANTS = ("ex:mean", "im:no_ref", "im:no_ref_unscaled")
SETTING_NAMES = {rw.get_setting(n).results_setting: n for n in ("chat", "math")}


@dataclass(frozen=True)
class Config(CheckedConfig):
    """The parameters of notebook 04; the defaults are the cpu profile."""

    NOTEBOOK = NOTEBOOK
    profile: str = param("cpu", choices=("smoke", "cpu", "paper"), help="the params/ profile these values came from")
    results_dir: str = param("results", help="folder of the run results (reused unless `force`)")
    data_dir: str | None = param(None, verify=check_data_dir, help="offline data mirror (None: the default)")
    settings: list[str] = param(["chat", "math"], each=Param(str, choices=("chat", "math")),
                                help="training data: general chat (UltraFeedback) and/or math (RewardMATH)")
    models: list[str] = param(["smollm2-135m-instruct"], each=MODEL, help="initial language models")
    seeds: list[int] = param([0], each=Param(int, low=0), help="training seeds (paper: 3)")
    rm_types: list[str] = param(["ex", "im"], each=Param(str, choices=("ex", "im", "grm")),
                                help='reward models; add "grm" for the EX-GRM comparison (Appendix C.3)')
    epochs: int = param(4, low=1, help="training epochs (paper: 5; cpu: 4, so that both reward models fit "
                                       "their training pairs: the fairness check, Appendix D.3)")
    lr: float = param(2e-5, low=1e-9, high=0.1, help="Adam's learning rate (paper: 1e-6)")
    batch_size: int = param(8, low=1, help="pairs per optimizer step (paper: 32)")
    micro_batch_size: int = param(4, low=1, help="pairs per forward pass (gradient accumulation)")
    beta: float = param(0.01, low=1e-6, help="the IM-RM's β (Eq. 2)")
    precision: str = param("auto", choices=("auto", "fp32", "bf16-mixed"),
                           help='"auto": bf16-mixed on a GPU that has bf16, else fp32')
    max_length: int | None = param(256, low=16, help="token cap of prompt+response; longer rows are dropped, "
                                                     "never truncated (None: no cap)")
    n_train: int | None = param(32, low=1, help="training rows kept after the cap (None: all)")
    n_eval: int | None = param(20, low=1, help="rows per evaluation set kept after the cap (None: all that fit)")
    data_seed: int = param(0, low=0, help="seed of the subsets")
    variants: list[str] | None = param(None, each=Param(str, choices=VARIANTS),
                                       help="Figure 7 variants (chat setting, sweep_models)")
    sweep_lrs: list[float] | None = param(None, each=Param(float, low=1e-9, high=0.1),
                                          help="Figure 6 top: extra learning rates for EX- and IM-RMs")
    sweep_betas: list[float] | None = param(None, each=Param(float, low=1e-6),
                                            help="Figure 6 bottom: extra β values for IM-RMs")
    sweep_models: list[str] | None = param(None, each=MODEL, help="models of the variants and sweeps "
                                                                  "(paper: llama-3.1-8b-instruct; None: models[0])")
    overlap_n: int = param(2, low=1, high=4, help="n of the n-gram overlap measure")
    overlap_buckets: int = param(4, low=1, high=20, help="quantile buckets of overlap")
    checkpoint_every: int | None = param(None, low=1, help="optimizer steps between resumable checkpoints")
    gradient_checkpointing: bool = param(False, help="recompute decoder activations in the backward pass: less "
                                         "memory, ~one more forward pass, same numbers (paper: the 2B-8B models)")
    allow_fewer_rows: bool = param(False, help="paper profile: run even if a data file has fewer rows than the "
                                               "paper's split (else refused; `python -m rmlib.data fetch`)")
    force: bool = param(False, help="retrain even if a results file exists")
    train: str = train_param()

    def check(self) -> None:
        super().check()
        if not {"ex", "im"} <= set(self.rm_types):
            raise ParameterError(f"parameter 'rm_types' = {self.rm_types!r} must contain 'ex' and 'im' "
                                 "(the comparison of Section 5.2)")

    @property
    def sweep_model_names(self) -> list[str]:
        return self.sweep_models or self.models[:1]

    @property
    def protocol(self) -> dict:
        """What a run must share with this notebook to enter its tables (stored in the run's spec)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "max_length": self.max_length,
                "n_train_max": self.n_train, "n_eval_max": self.n_eval, "data_seed": self.data_seed,
                "length_rm_types": ",".join(sorted(self.rm_types))}  # the formats whose lengths the cap checks


def setup() -> float:
    """The page's figure style and warnings; returns the start time (``time.perf_counter``)."""
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")
    use_style()
    pd.set_option("display.width", 160)
    return time.perf_counter()


def load_tokenizers(cfg: Config) -> dict:
    from ..models import PAPER_MODELS, load_tokenizer

    return {m: load_tokenizer(PAPER_MODELS.get(m, m)) for m in cfg.models}


def load_data(cfg: Config):
    """``(loaded, report)``: :func:`rmlib.tasks.realworld.load_setting` per (setting, model) (the rows the runs
    train on: :func:`data_recipe`), and its reports concatenated with ``setting`` and ``model`` columns."""
    from ..plan import realworld_setting

    loaded, reports = {}, []
    for name in cfg.settings:
        for model in cfg.models:
            ls = realworld_setting(**data_recipe(cfg, name, model)["args"])
            loaded[name, model] = ls
            reports.append(ls.report.assign(setting=name, model=model))
    report = pd.concat(reports, ignore_index=True)
    if cfg.profile == "paper":  # before any training: e.g. the mirror's 200 of the 2,000 UF training rows
        check_paper_rows(file_rows(report), allow_fewer=cfg.allow_fewer_rows)
    return loaded, report


def this_builds_math_overlap(cfg: Config, loaded: dict) -> dict | None:
    """:func:`rmlib.analysis.overlap.math_overlap` of this build's math rows (first model), or None."""
    if "math" not in cfg.settings:
        return None
    ls = loaded["math", cfg.models[0]]
    return ov.math_overlap(ls.train_rows, ls.eval_rows["rewardmath"], ls.eval_rows["rewardbench_math"])


# ------------------------------------------------------------------------------------------ training

class Run(NamedTuple):
    setting: str
    model: str
    seed: int
    rm_type: str
    variant: str | None
    lr: float
    beta: float


def run_grid(cfg: Config) -> list[Run]:
    """Every run of the notebook: the reward models of ``rm_types`` per (setting, model, seed), and in the chat
    setting on ``sweep_models`` the Figure 7 variants, the Figure 6 learning rates (EX and IM) and β values (IM)."""
    runs = []
    for name in cfg.settings:
        for model in cfg.models:
            for seed in cfg.seeds:
                runs += [Run(name, model, seed, t, None, cfg.lr, cfg.beta) for t in cfg.rm_types]
                if name != "chat" or model not in cfg.sweep_model_names:
                    continue
                for v in cfg.variants or []:
                    t, variant = v.split(":")
                    runs.append(Run(name, model, seed, t, variant, cfg.lr, cfg.beta))
                for sweep_lr in cfg.sweep_lrs or []:
                    runs += [Run(name, model, seed, t, None, sweep_lr, cfg.beta) for t in ("ex", "im")]
                for sweep_beta in cfg.sweep_betas or []:
                    runs.append(Run(name, model, seed, "im", None, cfg.lr, sweep_beta))
    return runs


def data_recipe(cfg: Config, setting: str, model: str) -> dict:
    """The recipe of a setting's rows (:func:`rmlib.plan.realworld_data`), shared with notebook 05's
    'original' condition."""
    return {"builder": "realworld", "args": {
        "setting": setting, "model": model, "length_rm_types": sorted(cfg.rm_types), "max_length": cfg.max_length,
        "n_train": cfg.n_train, "n_eval": cfg.n_eval, "data_dir": cfg.data_dir, "seed": cfg.data_seed}}


def run_config(cfg: Config, setting: str, model: str, seed: int, rm_type: str, variant=None, lr=None, beta=None):
    """The :class:`~rmlib.runconfig.RunConfig` of one run with this notebook's protocol (notebook 05's
    'original' runs are made by this function too, so they are the same runs)."""
    from ..runconfig import RunConfig

    return RunConfig(setting=rw.get_setting(setting).results_setting, model=model, rm_type=rm_type, variant=variant,
                     beta=cfg.beta if beta is None else beta, seed=seed, lr=cfg.lr if lr is None else lr,
                     epochs=cfg.epochs, batch_size=cfg.batch_size, micro_batch_size=cfg.micro_batch_size,
                     precision=cfg.precision, max_length=cfg.max_length, checkpoint_every=cfg.checkpoint_every,
                     gradient_checkpointing=cfg.gradient_checkpointing, extra=cfg.protocol)


def plan(cfg: Config, device: str = "here") -> list:
    """The notebook's runs as :class:`rmlib.plan.PlanEntry` (one per :func:`run_grid` run; precision pinned
    for ``device``); nothing is trained or loaded but the data (and a tokenizer when ``max_length`` caps)."""
    from .. import plan as plans

    if cfg.profile == "paper":  # refuse fewer rows than the paper's splits before anything is planned
        load_data(cfg)
    return [plans.make_entry(NOTEBOOK, cfg.profile, run_config(cfg, r.setting, r.model, r.seed, r.rm_type, r.variant,
                                                                r.lr, r.beta),
                             data_recipe(cfg, r.setting, r.model), cfg.results_dir, device=device,
                             label=f"{r.setting} {r.model} seed {r.seed} {rw.rm_label(r.rm_type, r.variant)} "
                                   f"lr {r.lr:g}"
                                   + (f" beta {r.beta:g}" if r.rm_type == "im" else ""))
            for r in run_grid(cfg)]


def progress_line(i: int, runs: list, outcome) -> str:
    """One line per run: which, reused or trained (seconds), precision and accuracy per evaluation set."""
    rec, t = outcome.record, outcome.timings
    how = "reused" if outcome.reused else f"trained+evaluated in {t['wall_s']:.0f} s (cpu {t['cpu_s']:.0f} s)"
    return (f"[{i + 1}/{len(runs)}] {runs[i].label} {how} ({rec['precision']['mode']}); "
            + " ".join(f"{rw.LABELS[k]} {v['accuracy']:.2f}" for k, v in rec["evals"].items()))


def timing_table(runs: list, outcomes: list) -> pd.DataFrame:
    """One row per run: wall and CPU seconds, training throughput, final training loss/accuracy."""
    timing = []
    for entry, out in zip(runs, outcomes):
        rec, spec = out.record, out.record["spec"]
        hist = rec["history"]
        timing.append({"setting": SETTING_NAMES.get(spec["setting"], spec["setting"]), "model": spec["model"],
                       "seed": spec["seed"],
                       "rm": rw.rm_label(spec["rm_type"], spec["variant"]), "lr": spec["lr"], "beta": spec["beta"],
                       "reused": out.reused, "wall_s": out.timings["wall_s"], "cpu_s": out.timings["cpu_s"],
                       "train_s": rec["timings"]["train"], "train_tokens": hist["tokens"],
                       "train_tok_per_s": hist["tokens"] / max(hist["seconds"], 1e-9),
                       "final_loss": hist["epochs"][-1]["train_loss"],
                       "final_acc": hist["epochs"][-1]["train_accuracy"]})
    return pd.DataFrame(timing)


# ----------------------------------------------------------------------------- results of every run

class Results(NamedTuple):
    every: pd.DataFrame   # every run of this code under results_dir for the settings, one row per data set
    proto: pd.DataFrame   # those made with this notebook's protocol
    main: pd.DataFrame    # of these, the default lr and β and the standard variants: the main tables


def collect_results(cfg: Config) -> Results:
    """The tidy results of every run under ``results_dir`` for the notebook's settings, whatever machine made
    it, and the two selections the tables use (:class:`Results`)."""
    from ..results import results_table

    frames = []
    for name in cfg.settings:
        frame = results_table(cfg.results_dir, rw.get_setting(name).results_setting)
        if not frame.empty:
            frames.append(frame.assign(setting_name=name))
    every = rw.add_rm_column(pd.concat(frames, ignore_index=True))
    proto = rw.select_protocol(every, **cfg.protocol)
    main = proto[(proto["lr"] == cfg.lr) & (proto["beta"].isna() | (proto["beta"] == cfg.beta))
                 & proto["rm"].isin(["ex", "im", "grm"])]
    return Results(every, proto, main)


def read_examples(cfg: Config, main: pd.DataFrame) -> pd.DataFrame:
    """Per-pair correctness of every run in the main tables (:func:`rmlib.tasks.realworld.examples_table`)."""
    from ..results import iter_runs

    main_ids = set(main["run_id"])
    records = [r for name in cfg.settings for r in iter_runs(cfg.results_dir, rw.get_setting(name).results_setting)
               if r["run_id"] in main_ids]
    return rw.examples_table(records)


def aggregates(cfg: Config, main: pd.DataFrame):
    """``(per category, per data set)``: {setting: :func:`rmlib.analysis.paper_tables.aggregate`}."""
    def of(name, by):
        return aggregate(main[main["setting_name"] == name], by=by)
    return ({name: of(name, ("category",)) for name in cfg.settings},
            {name: of(name, ("category", "eval_set")) for name in cfg.settings})


def compare_all(cfg: Config, examples: pd.DataFrame, fit: pd.DataFrame | None = None) -> dict:
    """``{(setting, by): compare_rms(...)}`` of the EX-RM vs the IM-RM, per category (with the thesis contrast) and
    per data set; ``fit`` (:func:`rmlib.analysis.paper_tables.training_fit`) gates the verdicts on the fairness check."""
    return {(name, by): compare_rms(examples, name, "ex", "im", by=by, fit=fit)
            for name in cfg.settings for by in ("category", "eval_set")}


def compare_grm(cfg: Config, examples: pd.DataFrame, main: pd.DataFrame, fit: pd.DataFrame | None = None) -> dict:
    """``{setting: compare_rms(...)}`` of the EX-GRM vs the IM-RM per category; {} without EX-GRM runs."""
    if not has_grm(main):
        return {}
    return {name: compare_rms(examples, name, "grm", "im", fit=fit) for name in cfg.settings}


def has_grm(main: pd.DataFrame) -> bool:
    return "grm" in set(main["rm"])


def with_overlap(cfg: Config, tokenizers: dict, loaded: dict, examples: pd.DataFrame) -> pd.DataFrame:
    """``examples`` with each pair's n-gram ``overlap`` with its setting's training responses
    (:func:`rmlib.analysis.overlap.overlap_table`, ``n = overlap_n``)."""
    overlap = pd.concat([ov.overlap_table(tokenizers[model], loaded[name, model].train_rows,
                                          loaded[name, model].eval_rows, n=cfg.overlap_n).assign(setting=name, model=model)
                         for name in cfg.settings for model in cfg.models], ignore_index=True)
    return examples.merge(overlap, on=["setting", "model", "eval_set", "index"], validate="many_to_one")


def overlap_trends(cfg: Config, with_overlap: pd.DataFrame) -> dict:
    """``{(setting, model): overlap_trend(...)}`` of EX vs IM (:func:`rmlib.analysis.overlap.overlap_trend`)."""
    return {key: ov.overlap_trend(part, "ex", "im", n_buckets=cfg.overlap_buckets)
            for key, part in with_overlap.groupby(["setting", "model"])}


# ------------------------------------------------------------------------------------------ summary

def summary_rows(cfg: Config, cat_agg: dict, fit: pd.DataFrame, main: pd.DataFrame, trends: dict) -> list[dict]:
    """The summary's rows: accuracy per category and reward model (with the paper's Table 1/6), the fairness
    check, and the overlap trends."""
    rows = []
    models = ", ".join(sorted(main["model"].unique()))
    for name in cfg.settings:
        agg = cat_agg[name].set_index(["category", "rm"])
        for c in rw.CATEGORIES:
            for rm in ("ex", "im", "grm"):
                if (c, rm) in agg.index:
                    rows.append({"quantity": f"{name}: {c} accuracy, {rw.RM_LABELS[rm]}",
                                 "value": round(float(agg.loc[(c, rm), "accuracy_mean"]), 3),
                                 "paper": f"{PAPER_CATEGORY[name, c][rm][0]:.3f}",
                                 "note": f"{plural(int(agg.loc[(c, rm), 'n_seeds']), 'seed')}, models: {models}"})
        f = fit[fit["setting_name"] == name].set_index("rm")
        rows.append({"quantity": f"{name}: final training accuracy EX / IM",
                     "value": f"{f.loc['ex', 'train_accuracy']:.3f} / {f.loc['im', 'train_accuracy']:.3f}",
                     "paper": "> 0.993 for both", "note": "fairness check (Appendix D.3)"})
    return rows + [overlap_trend_row(name, model, *trend, n=cfg.overlap_n) for (name, model), trend in trends.items()]


def claims(cfg: Config, comparisons: dict, grm_comparisons: dict) -> list[dict]:
    """The claims table's rows (:func:`rmlib.analysis.rm_comparisons.claim_rows`): EX vs IM per category, then
    EX-GRM vs IM."""
    rows = [row for name in cfg.settings for row in claim_rows(comparisons[name, "category"], name)]
    return rows + [row for name, comps in grm_comparisons.items() for row in claim_rows(comps, name, "grm", "im")]


def write(cfg: Config, rows: list[dict], claim_list: list[dict]):
    """``results_dir/summaries/04_real_world_shifts.json`` (:func:`rmlib.results.write_summary`); its path."""
    from ..results import write_summary

    return write_summary(cfg.results_dir, NOTEBOOK, rows, profile=cfg.profile, claims=claim_list)


# ------------------------------------------------------------------- sweeps, variants and overlap buckets

def sweep_runs(cfg: Config, proto: pd.DataFrame) -> pd.DataFrame | None:
    """The chat-setting runs of ``sweep_models`` (Figures 6, 7), each labelled by its ``configuration`` (reward
    model, lr, β); None without variants or sweeps, or without chat-setting runs."""
    chat = proto[proto["setting_name"] == "chat"] if "chat" in cfg.settings else proto.iloc[:0]
    runs = chat[chat["model"].isin(cfg.sweep_model_names)].copy()
    if not (cfg.variants or cfg.sweep_lrs or cfg.sweep_betas) or runs.empty:
        return None
    runs["configuration"] = [f"{rw.RM_LABELS.get(r, r)}, lr {l:g}" + (f", β {b:g}" if r in ("im", "im:no_ref") else "")
                             for r, l, b in zip(runs["rm"], runs["lr"], runs["beta"])]
    runs["data set"] = runs["eval_set"].map(rw.LABELS)
    return runs


def sweep_table(extra_runs: pd.DataFrame | None) -> pd.DataFrame | None:
    """Accuracy per category (mean over seeds of per-seed means, :func:`aggregate`) of every configuration of
    :func:`sweep_runs` (None if that is None)."""
    if extra_runs is None:
        return None
    summary = aggregate(extra_runs.assign(rm=extra_runs["configuration"]), by=("category",), metrics=("accuracy",))
    return summary.pivot(index="rm", columns="category", values="accuracy_mean").reindex(columns=list(rw.CATEGORIES))


def accuracy_by_overlap(cfg: Config, with_overlap: pd.DataFrame, by=("setting", "model"),
                        n_buckets: int | None = None) -> pd.DataFrame:
    """:func:`rmlib.analysis.overlap.accuracy_by_overlap` within each group of ``by`` (buckets: ``n_buckets``,
    default ``overlap_buckets``), the groups' keys as columns."""
    parts = [ov.accuracy_by_overlap(part, n_buckets=n_buckets or cfg.overlap_buckets).assign(**dict(zip(by, key)))
             for key, part in with_overlap.groupby(list(by))]
    return pd.concat(parts, ignore_index=True)


def overlap_halves_by_category(cfg: Config, with_overlap: pd.DataFrame) -> pd.DataFrame:
    """:func:`accuracy_by_overlap` in the lower and upper half of overlap within each category (at most two
    buckets), which removes part of the confound between overlap and data set."""
    return accuracy_by_overlap(cfg, with_overlap, ("setting", "model", "category"), min(cfg.overlap_buckets, 2))
