"""Page of notebook 01 (Section 3, Hamiltonian cycles: an IM-RM verifies without generating): its
parameters, data, training and sampling runs, the tables, the sentences and the summary.

The graphs, text formats, verifier and sampler are in :mod:`rmlib.tasks.hamiltonian`; the exact mass on valid
cycles (Theorem 1) in :mod:`rmlib.analysis.cycle_mass`; the test of "the IM-RM generates no valid cycle"
against random vertex orderings, from that mass, in :mod:`rmlib.analysis.claims`; the
Theorem 1 view per test pair in :mod:`rmlib.book.gen_vs_verify_views` (with the figures).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from IPython.display import Markdown

from ..analysis import claims, stats
from ..metrics import seed_matrix, summarize
from ..plan import train_param
from ..params import CheckedConfig, Param, check_data_dir, check_model, param
from ..tasks import hamiltonian as ham
from . import plural, table, use_style
from .gen_vs_verify_views import PerPairBound, accuracy_bars

NOTEBOOK = "01_gen_vs_verify"
SETTING = "gen_vs_verify"
RM_LABEL = claims.LABELS  # "ex" -> "EX-RM", "im" -> "IM-RM"
PAPER_SETUP = ("Pythia-1B, N = 10, p = 0.2, 1000/200 graphs, 15 epochs, lr 1e-6, batch 32, 3 seeds")


@dataclass(frozen=True)
class Config(CheckedConfig):
    """The parameters of notebook 01; the defaults are the cpu profile (paper: Appendix D.1)."""

    NOTEBOOK = NOTEBOOK
    profile: str = param("cpu", choices=("smoke", "cpu", "paper"), help="the params/ profile these values came from")
    results_dir: str = param("results", help="folder of the run results (reused unless `force`)")
    data_dir: str | None = param(None, verify=check_data_dir,
                                 help="unused: the graphs are generated (kept for the book's common interface)")
    model: str = param("smollm2-135m-instruct", verify=check_model, help="initial language model (paper: pythia-1b)")
    use_chat_template: bool | None = param(False, help="False: the paper's [USER]{x}[ASSISTANT]{y}[EOS]; "
                                                       "None: the model's own chat template, if any")
    n_vertices: int = param(6, low=3, high=30, help="vertices N per graph (paper: 10)")
    edge_prob: float = param(0.2, low=0.0, high=0.9, help="probability p of each edge beyond the planted cycle")
    n_train: int = param(64, low=1, help="training graphs (paper: 1000)")
    n_test: int = param(32, low=1, help="test graphs (paper: 200)")
    data_seed: int = param(0, low=0, help="seed of the graphs")
    epochs: int = param(12, low=1, help="training epochs (paper: 15)")
    lr: float = param(5e-5, low=1e-9, high=0.1, help="Adam's learning rate (paper: 1e-6)")
    batch_size: int = param(8, low=1, help="pairs per optimizer step (paper: 32)")
    micro_batch_size: int = param(8, low=1, help="pairs per forward pass (gradient accumulation)")
    beta: float = param(0.01, low=1e-6, help="the IM-RM's β (Eq. 2)")
    seeds: list[int] = param([0], each=Param(int, low=0), help="training seeds (paper: 3)")
    precision: str = param("auto", choices=("auto", "fp32", "bf16-mixed"),
                           help='"auto": bf16-mixed on a GPU that has bf16, else fp32 (fp32 master weights)')
    n_generate: int | None = param(None, low=1, help="prompts per split sampled from (None: all, as the paper)")
    temperature: float = param(1.0, low=1e-3, high=10.0, help="sampling temperature (paper: 1)")
    n_show: int = param(4, low=0, help="samples shown per model and split")
    checkpoint_every: int | None = param(None, low=1, help="optimizer steps between resumable checkpoints "
                                                           "(None: no checkpoints; the paper profile: 10)")
    force: bool = param(False, help="retrain (and resample) even if a results file exists")
    train: str = train_param()


def setup() -> float:
    """The page's figure style and warnings; returns the start time (``time.perf_counter``)."""
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")
    use_style()
    return time.perf_counter()


def finished(start: float) -> str:
    return f"notebook ran in {time.perf_counter() - start:.0f} s"


# ---------------------------------------------------------------------------------------------- data

def make_splits(cfg: Config) -> dict[str, list[dict]]:
    """``{"train": rows, "test": rows}`` of :func:`rmlib.tasks.hamiltonian.make_splits` (Appendix D.1)."""
    from ..plan import hamiltonian_data

    train_rows, eval_sets = hamiltonian_data(cfg.n_train, cfg.n_test, cfg.n_vertices, cfg.edge_prob, cfg.data_seed)
    return {"train": train_rows, "test": eval_sets["test"].rows}


def data_markdown(cfg: Config, splits: dict) -> Markdown:
    """The data in one paragraph: sizes, N, p and the mean number of edges per graph, N + p (N(N-1)/2 - N)
    in expectation (the planted cycle's N edges plus each other pair with probability p)."""
    n_edges = [len(ham.parse_prompt(r["prompt"]).edges) for r in splits["train"] + splits["test"]]
    n = cfg.n_vertices
    return Markdown(
        f"**Data.** {cfg.n_train} training and {cfg.n_test} test graphs with N = {n} vertices and edge "
        f"probability p = {cfg.edge_prob} (data seed {cfg.data_seed}); {np.mean(n_edges):.1f} edges per graph on "
        f"average (the planted cycle's {n} plus ~p x the other {n * (n - 1) // 2 - n} pairs). Both responses "
        f"start at vertex 0, so the first token tells nothing. One example:")


def example_text(row: dict) -> str:
    """A preference row as text, each response with the verifier's answer."""
    graph = ham.parse_prompt(row["prompt"])
    return "\n".join([
        "prompt:   " + row["prompt"].replace("\n", "\n          "),
        f"chosen:   {row['chosen']} -> Hamiltonian cycle: {ham.is_hamiltonian_cycle(graph, row['chosen'])}",
        f"rejected: {row['rejected']} -> Hamiltonian cycle: {ham.is_hamiltonian_cycle(graph, row['rejected'])}"])


# ---------------------------------------------------------------------------------------------- runs

def plan(cfg: Config, device: str = "here") -> list:
    """For every seed an EX-RM and an IM-RM trained from the same initial model, as
    :class:`rmlib.plan.PlanEntry`; the IM-RM's entry samples from its language model right after training
    (:func:`im_generation`, stored with the run)."""
    from .. import plan as plans
    from ..runconfig import RunConfig

    recipe = {"builder": "hamiltonian", "args": {"n_train": cfg.n_train, "n_test": cfg.n_test,
                                                 "n_vertices": cfg.n_vertices, "edge_prob": cfg.edge_prob,
                                                 "seed": cfg.data_seed}}
    runs = []
    for seed in cfg.seeds:
        for rm_type in ("ex", "im"):
            extra = {"n_vertices": cfg.n_vertices, "edge_prob": cfg.edge_prob, "n_train": cfg.n_train,
                     "n_test": cfg.n_test, "data_seed": cfg.data_seed}
            hook = None
            if rm_type == "im":
                extra.update(temperature=cfg.temperature, n_generate=cfg.n_generate)
                hook = {"name": "hamiltonian_samples",
                        "args": {"temperature": cfg.temperature, "seed": seed, "n_generate": cfg.n_generate,
                                 "initial_model": cfg.model, "use_chat_template": cfg.use_chat_template}}
            run = RunConfig(setting=SETTING, model=cfg.model, rm_type=rm_type, beta=cfg.beta, seed=seed, lr=cfg.lr,
                            epochs=cfg.epochs, batch_size=cfg.batch_size, micro_batch_size=cfg.micro_batch_size,
                            precision=cfg.precision, use_chat_template=cfg.use_chat_template,
                            checkpoint_every=cfg.checkpoint_every, extra=extra)
            runs.append(plans.make_entry(NOTEBOOK, cfg.profile, run, recipe, cfg.results_dir, device=device,
                                         task="hamiltonian", after_training=hook,
                                         label=f"seed {seed} {RM_LABEL[rm_type]}"))
    return runs


def im_generation(rm, ref_logps, train_rows, eval_sets, temperature: float, seed: int, n_generate: int | None,
                  initial_model: str, use_chat_template: bool | None = None):
    """Right after an IM-RM's training (stored with the run; :data:`rmlib.plan.AFTER_TRAINING`): samples of its
    language model, ln pi_ref(y+|x) of the test chosen cycles from the run's reference log-probs, and the exact
    mass on valid cycles of the IM-RM's LM and of pi_ref per graph (Theorem 1,
    :func:`rmlib.analysis.cycle_mass.cycle_mass`)."""
    from ..analysis.cycle_mass import cycle_mass
    from ..scoring import encode_pairs

    splits = {name: ev.rows for name, ev in eval_sets.items()}
    samples = ham.sample_and_verify(rm.lm, rm.tokenizer, rm.formatter, splits, temperature, seed, n_generate)
    test_chosen, _ = encode_pairs(rm, splits["test"])
    mass = cycle_mass(rm, ref_logps, splits, initial_model=initial_model, seed=seed,
                      use_chat_template=use_chat_template)
    return {"samples": samples, "ref_logp_chosen": [ref_logps[s] for s in test_chosen], "cycle_mass": mass}


def progress_line(entry, outcome) -> str:
    rec = outcome.record
    how = "reused" if outcome.reused else f"trained in {rec['timings']['train']:.0f} s"
    return (f"{entry.label}: {how} ({rec['precision']['mode']}); "
            + "  ".join(f"{k} accuracy {v['accuracy']:.3f}" for k, v in rec["evals"].items()))


def generations_of(cfg: Config, outcomes, splits: dict) -> pd.DataFrame:
    """One row per sample (split, index, sample, valid, well_formed, p_random, model, seed): the IM-RMs' samples
    stored with their runs, and the untrained initial model's (:func:`initial_model_samples`)."""
    ims = [o for o in outcomes if o.record["spec"]["rm_type"] == "im"]
    generations = [{**s, "model": "IM-RM", "seed": o.record["spec"]["seed"]} for o in ims
                   for s in o.record["after_training"]["samples"]]
    im_mode = ims[0].record["precision"]["mode"] if ims else "fp32"  # the baseline samples at the IM-RMs' numerics
    return pd.DataFrame(generations + initial_model_samples(cfg, splits, precision=im_mode))


def initial_model_samples(cfg: Config, splits: dict, precision: str = "fp32") -> list[dict]:
    """The baseline: samples of the initial model pi_ref itself (with the same added tokens), drawn with
    the IM-RMs' seeds (common random numbers, :func:`rmlib.tasks.hamiltonian.sample_and_verify`) and under
    the IM-RMs' resolved precision (``"bf16-mixed"``: bf16 autocast over the fp32 weights, as the IM-RM's
    samples are drawn inside its run), so that the two are compared at the same numerics."""
    from contextlib import nullcontext

    import torch

    from ..models import load_for_task

    lm0, tok0, formatter0 = load_for_task(cfg.model, "hamiltonian", dtype="float32",
                                          use_chat_template=cfg.use_chat_template)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm0.to(device)
    numerics = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    with numerics:
        return [{**s, "model": "initial model", "seed": seed} for seed in cfg.seeds
                for s in ham.sample_and_verify(lm0, tok0, formatter0, splits, cfg.temperature, seed, cfg.n_generate)]


# ---------------------------------------------------------------------------------------------- results

def accuracy(outcomes) -> pd.DataFrame:
    """Accuracy (Definition 1) per reward model and evaluation set: mean and std over seeds (columns rm,
    eval_set, mean, std, n_seed)."""
    from ..results import tidy

    results = tidy([o.record for o in outcomes])
    results["rm"] = results["rm_type"].map(RM_LABEL)
    return summarize(results, ["rm", "eval_set"]).reset_index()


def accuracy_table(acc: pd.DataFrame):
    return table(acc.pivot(index="rm", columns="eval_set", values=["mean", "std"]))


def accuracy_figure(acc: pd.DataFrame, cfg: Config):
    """Figure 3 (left) for this build: :func:`~rmlib.book.gen_vs_verify_views.accuracy_bars`."""
    return accuracy_bars(acc, f"{cfg.model}, N = {cfg.n_vertices}")


def generation_table(generations: pd.DataFrame):
    """Per model and split: the fractions of valid and of well-formed samples, the random orderings'
    expected valid fraction (mean of p_random) and the number of samples."""
    by = generations.groupby(["model", "split"])
    return table(by[["valid", "well_formed", "p_random"]].mean().rename(columns={"p_random": "random ordering"})
                 .join(by.size().rename("samples")))


def cycle_masses(outcomes) -> pd.DataFrame:
    """One row per IM-RM seed and graph: split, index, seed, n_orders (|C(x)|), log_mass (the IM-RM's LM),
    log_mass_initial (pi_ref), p_random, from the runs' stored ``after_training["cycle_mass"]``."""
    return pd.DataFrame([{**g, "seed": o.record["spec"]["seed"]} for o in outcomes
                         if o.record["spec"]["rm_type"] == "im"
                         for g in o.record["after_training"]["cycle_mass"]["graphs"]])


def mass_claims(masses: pd.DataFrame) -> dict:
    """Per split: :func:`rmlib.analysis.claims.generation_mass_claims` over its graphs (seeds x graphs)."""
    out = {}
    for split, part in masses.groupby("split", sort=False):
        wide = {c: part.pivot(index="seed", columns="index", values=c).to_numpy()
                for c in ("log_mass", "log_mass_initial", "p_random")}
        out[split] = claims.generation_mass_claims(wide["log_mass"], wide["log_mass_initial"], wide["p_random"][0])
    return out


def mass_table(masses: pd.DataFrame, by_split: dict):
    """Per split: mean exact mass on valid cycles of the IM-RM's LM, of the initial model and of a random
    ordering (the chance rate), the mean |C(x)|, and the two paired sign tests with the verdict."""
    rows = []
    for split, (vs_random, vs_initial, _) in by_split.items():
        part = masses[masses.split == split]
        rows.append({"split": split, "graphs": vs_random.log_ratio.size, "seeds": vs_random.n_seeds,
                     "valid orderings |C(x)|": part.groupby("index")["n_orders"].first().mean(),
                     "IM-RM": vs_random.mean_a, "initial model": vs_initial.mean_b,
                     "random ordering": vs_random.mean_b,
                     "IM-RM > initial (graphs)": f"{vs_initial.test.wins_a} of {vs_initial.log_ratio.size}",
                     "p (IM vs initial)": vs_initial.test.p_value,
                     "IM-RM < random (graphs)": f"{vs_random.test.wins_b} of {vs_random.log_ratio.size}",
                     "p (IM vs random)": vs_random.test.p_value, "verdict": vs_random.verdict})
    return table(pd.DataFrame(rows).set_index("split"))


def mass_markdown(by_split: dict, outcomes) -> Markdown:
    """The descriptive comparisons per split (IM-RM vs initial model, initial model vs random orderings;
    :meth:`rmlib.analysis.claims.MassComparison.sentence`; the claim's verdict is stated in the comparison
    with the paper), and how closely the reloaded initial model reproduced the runs' reference log-probs."""
    lines = []
    for split, (_, vs_initial, initial_vs_random) in by_split.items():
        lines += [f"* {split} graphs, {c.label_a} vs {c.label_b}: {c.sentence()}." for c in (vs_initial, initial_vs_random)]
    checks = [o.record["after_training"]["cycle_mass"]["ref_check"] for o in outcomes
              if o.record["spec"]["rm_type"] == "im"]
    ref_check = max((c for c in checks if c is not None), default=None)
    if ref_check is not None:
        lines.append(f"* The reloaded initial model reproduces the runs' reference log-probs ln pi_ref(y+|x) of the "
                     f"chosen cycles to within {ref_check:.2g} nats.")
    return Markdown("\n".join(lines))


def sample_listing(generations: pd.DataFrame, seed: int, n_show: int) -> str:
    """The first ``n_show`` samples of ``seed`` per model and split, marked valid or invalid (110 characters)."""
    lines = []
    for (label, split), frame in generations[generations.seed == seed].groupby(["model", "split"], sort=False):
        lines.append(f"--- {label}, {split} prompts (seed {seed}), first {n_show} samples:")
        lines += [f"  [{'valid' if row.valid else 'invalid'}] {row['sample'][:110]!r}"
                  for _, row in frame.head(n_show).iterrows()]
    return "\n".join(lines)


def per_pair_bound(outcomes, beta: float) -> PerPairBound:
    """:class:`PerPairBound` of the first seed's IM-RM on the test pairs."""
    first = next(o.record for o in outcomes if o.record["spec"]["rm_type"] == "im")
    test = first["evals"]["test"]
    return PerPairBound(np.array(test["reward_chosen"]), np.array(test["reward_rejected"]),
                        np.array(first["after_training"]["ref_logp_chosen"]), beta)


# ------------------------------------------------------------------------------------- paper comparison

def verification_claims(outcomes) -> list[tuple[str, str, stats.Comparison]]:
    """The paper's verification claims (Figure 3, test pairs) as ``(claim, paper, comparison)``, each
    comparison over test pairs (one per graph) with seeds as a level (:func:`rmlib.analysis.stats.compare`).
    "IM-RM verifies unseen graphs above chance" is the precondition of the generation claim (a check); the
    EX-RM's accuracy is judged by size (the paper's ~0.99 inside the interval); "IM at least as good as EX" is
    non-inferiority with the one margin."""
    test = {rm: seed_matrix([o.record for o in outcomes if o.record["spec"]["rm_type"] == rm], "test")
            for rm in ("ex", "im")}
    return [
        ("IM-RM verifies unseen graphs: test accuracy above chance", "~0.99",
         stats.compare(test["im"], 0.5, +1, "IM-RM", "chance (0.5)", rule="check")),
        ("EX-RM verifies unseen graphs: test accuracy ~0.99", "~0.99",
         stats.compare(test["ex"], 0.5, +1, "EX-RM", "chance (0.5)", rule="size", paper_value=0.49)),
        ("IM-RM verifies at least as well as the EX-RM (test)", "IM slightly above EX",
         stats.compare(test["im"], test["ex"], +1, "IM-RM", "EX-RM", rule="non-inferiority", paper_value=0.0)),
    ]


def setup_sentence(cfg: Config) -> str:
    template = "the paper template" if cfg.use_chat_template is False else "its own chat template, if any"
    return (f"{cfg.model} ({template}), N = {cfg.n_vertices}, p = {cfg.edge_prob}, {cfg.n_train}/{cfg.n_test} graphs, "
            f"{plural(cfg.epochs, 'epoch')}, lr {cfg.lr:g}, batch {cfg.batch_size}, {plural(len(cfg.seeds), 'seed')}; "
            f"the paper: {PAPER_SETUP}. Intervals resample test pairs and seeds (`rmlib.analysis.stats`).")


def paper_comparison(cfg: Config, verification, generations: pd.DataFrame, bound: PerPairBound,
                     by_split: dict | None = None) -> Markdown:
    """The setup against the paper's, then one bullet per claim: the verification claims, the generation
    claim from the exact masses on the test graphs (``by_split``, :func:`mass_claims`), the sampled check of
    every sampled model (:func:`rmlib.analysis.claims.generation_sentence`) and the per-pair view."""
    bullets = [f"*{claim}* (paper: {paper}). {c.sentence()}" for claim, paper, c in verification]
    if by_split is not None:
        bullets.append(f"*{GENERATION_CLAIM}* (paper: 0 valid samples). Exact mass on valid cycles, test graphs: "
                       f"{by_split['test'][0].sentence()}.")
    bullets += [("Sampled check (the verdict above is from the exact mass): " if by_split is not None else "")
                + claims.generation_sentence(label, part["valid"], part["p_random"], part["well_formed"],
                                             with_verdict=by_split is None)
                for label, part in generations.groupby("model", sort=False)]
    bullets.append(bound.comparison_sentence())
    return Markdown("\n".join([f"**Setup.** {setup_sentence(cfg)}", ""] + [f"* {b}" for b in bullets]))


def summary_rows(cfg: Config, acc: pd.DataFrame, generations: pd.DataFrame, bound: PerPairBound,
                 by_split: dict | None = None) -> list[dict]:
    """The key numbers for the book's results overview (:func:`rmlib.results.write_summary`)."""
    acc_of = {(r.rm, r.eval_set): r["mean"] for _, r in acc.iterrows()}
    valid_of = generations.groupby(["model", "split"])["valid"].mean().to_dict()
    im = generations[generations.model == "IM-RM"]
    baseline = claims.generation_vs_random(im["valid"], im["p_random"])[1]

    def train_test(of, key):
        return f"{of[(key, 'train')]:.3f} / {of[(key, 'test')]:.3f}"

    rows = [{"quantity": f"{rm} accuracy, train / test", "value": train_test(acc_of, rm), "paper": "~1.00 / ~0.99",
             "note": f"mean over {plural(len(cfg.seeds), 'seed')}"} for rm in ("EX-RM", "IM-RM")]
    return rows + [
        {"quantity": "IM-RM valid generated cycles, train / test", "value": train_test(valid_of, "IM-RM"),
         "paper": "0 / 0",
         "note": f"initial model: {train_test(valid_of, 'initial model')}; random orderings: {baseline:.3f}"},
        {"quantity": "IM-RM test pairs with r(y-) <= 0 (per-pair analogue of Theorem 1)",
         "value": f"{bound.within:.2f}", "paper": "", "note": "first seed; Theorem 1 itself is an existence result"},
    ] + ([] if by_split is None else [
        {"quantity": "IM-RM exact mass on valid cycles pi(C(x)|x), train / test",
         "value": " / ".join(f"{by_split[s][0].mean_a:.3g}" for s in ("train", "test")), "paper": "",
         "note": "initial model: " + " / ".join(f"{by_split[s][1].mean_b:.3g}" for s in ("train", "test"))
                 + "; random orderings: " + " / ".join(f"{by_split[s][0].mean_b:.3g}" for s in ("train", "test"))}])


GENERATION_CLAIM = "The IM-RM does not generate valid cycles (no more often than random orderings)"


def claim_rows(verification, generations: pd.DataFrame, by_split: dict | None = None) -> list[dict]:
    """The claims table: the verification claims and "the IM-RM does not generate valid cycles", decided by
    the exact masses on the test graphs when ``by_split`` (:func:`mass_claims`) is given, else by the samples."""
    if by_split is not None:
        return [c.claim_row(claim, paper) for claim, paper, c in verification] + [
            by_split["test"][0].claim_row(GENERATION_CLAIM, "0 valid samples")]
    im = generations[generations.model == "IM-RM"]
    interval, baseline, _, verdict = claims.generation_vs_random(im["valid"], im["p_random"])
    return [c.claim_row(claim, paper) for claim, paper, c in verification] + [
        {"claim": GENERATION_CLAIM, "paper": "0 valid",
         "this build": f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}] vs random {baseline:.3f}",
         "verdict": verdict}]


def write(cfg: Config, rows: list[dict], claim_table: list[dict]):
    """``results/summaries/01_gen_vs_verify.json``; returns its path."""
    from ..results import write_summary

    return write_summary(cfg.results_dir, NOTEBOOK, rows, profile=cfg.profile, claims=claim_table)
