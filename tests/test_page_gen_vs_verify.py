"""Page 01 (Section 3, Hamiltonian cycles): its Config, data paragraph, tables, Theorem 1 view, figures,
paper comparison and summary, on hand-made records; one end-to-end run with the tiny random model."""

import re
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rmlib.book import gen_vs_verify as page
from rmlib.book.gen_vs_verify_views import PerPairBound, accuracy_bars, theorem1_figure
from rmlib.models import PAPER_MODELS
from rmlib.params import ParameterError
from rmlib.tasks import hamiltonian as ham

PARAMS = Path(__file__).resolve().parents[1] / "params" / "01_gen_vs_verify"


# ---------------------------------------------------------------------------------------------- Config

def test_config_defaults_are_the_cpu_profile():
    cpu = yaml.safe_load((PARAMS / "cpu.yaml").read_text())
    defaults = page.Config()
    assert all(getattr(defaults, key) == value for key, value in cpu.items())
    assert page.Config.from_profile("cpu") == defaults
    # the values cpu.yaml's comments describe (measured timings are for these)
    assert (defaults.model, defaults.n_vertices, defaults.n_train, defaults.n_test, defaults.epochs, defaults.lr,
            defaults.batch_size, defaults.seeds, defaults.use_chat_template) == \
        ("smollm2-135m-instruct", 6, 64, 32, 12, 5e-5, 8, [0], False)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_profile_loads(profile):
    values = yaml.safe_load((PARAMS / f"{profile}.yaml").read_text())
    assert values["profile"] == profile
    # the paper's model is resolved on the Hugging Face Hub, unreachable offline: its name is checked here
    overrides = {"model": "tiny-random"} if values.get("model") in PAPER_MODELS else {}
    cfg = page.Config.from_profile(profile, **overrides)
    assert all(getattr(cfg, k) == v for k, v in values.items() if k not in overrides)
    assert page.Config.from_profile("paper", model="tiny-random").n_vertices == 10


@pytest.mark.parametrize("change, expected", [
    ({"micro_batch_size": 16}, r"'micro_batch_size' = 16 is larger than 'batch_size' = 8"),
    ({"seeds": [1, 1]}, r"'seeds' = \[1, 1\] repeats a value"),
    ({"n_vertices": 2}, r"'n_vertices' = 2 is below its minimum 3"),
    ({"edge_prob": 0.95}, r"'edge_prob' = 0.95 is above its maximum 0.9"),
    ({"n_generate": 0}, r"'n_generate' = 0 is below its minimum 1"),
    ({"n_vertice": 8}, r"unknown parameter\(s\) 'n_vertice' \(did you mean 'n_vertices'\?\)"),
    ({"data_dir": "/no/such/folder"}, r"'data_dir' = '/no/such/folder': the directory /no/such/folder does not"),
])
def test_config_names_the_bad_parameter(change, expected):
    with pytest.raises(ParameterError, match=expected):
        page.Config.from_dict(change)


def test_config_reads_the_notebook_globals():
    cfg = page.Config.from_namespace({"profile": "smoke", "lr": 1e-4, "epochs": 3, "seeds": [3], "page": page, "print_it": print})
    assert (cfg.profile, cfg.lr, cfg.epochs, cfg.seeds) == ("smoke", 1e-4, 3, [3])
    assert "| `beta` | `0.01` | the IM-RM's β (Eq. 2) |" in cfg._repr_markdown_()


# ---------------------------------------------------------------------------------------------- data

def test_data_paragraph_counts_edges_and_example_is_verified():
    cfg = page.Config(n_train=3, n_test=2, n_vertices=5)
    splits = page.make_splits(cfg)
    assert [len(splits["train"]), len(splits["test"])] == [3, 2]
    edges = [r["prompt"].count(ham.EDGE_SEP) for r in splits["train"] + splits["test"]]  # naive count
    text = page.data_markdown(cfg, splits).data
    assert f"; {sum(edges) / 5:.1f} edges per graph on average (the planted cycle's 5 plus ~p x the other 5 pairs)" in text
    assert text.startswith("**Data.** 3 training and 2 test graphs with N = 5 vertices and edge probability p = 0.2")
    lines = page.example_text(splits["train"][0]).splitlines()
    assert lines[0].startswith("prompt:   Vertices: ") and lines[1].startswith("          Edges: ")
    assert lines[2].endswith("-> Hamiltonian cycle: True") and lines[3].endswith("-> Hamiltonian cycle: False")


# ------------------------------------------------------------------------------------ hand-made records

def _record(rm_type, seed, train, test, ref=None):
    """A run record with the fields the page reads; ``train``/``test``: (reward_chosen, reward_rejected)."""
    def ev(pair):
        chosen, rejected = map(np.asarray, pair)
        return {"accuracy": float(np.mean(chosen > rejected)), "margin": 0.0, "n": len(chosen), "category": None,
                "reward_chosen": chosen.tolist(), "reward_rejected": rejected.tolist()}
    rec = {"run_id": f"{rm_type}{seed}", "spec": {"rm_type": rm_type, "seed": seed, "setting": page.SETTING},
           "evals": {"train": ev(train), "test": ev(test)}}
    if ref is not None:
        rec["after_training"] = {"ref_logp_chosen": list(ref), "samples": []}
    return types.SimpleNamespace(record=rec)


OUTCOMES = [  # test accuracy: EX 2/4 and 3/4, IM 4/4 and 3/4; train: EX 1 and 1, IM 0.5 and 1
    _record("ex", 0, ([1, 1], [0, 0]), ([1, 0, 1, 0], [0, 1, 0, 1])),
    _record("im", 0, ([1, 0], [0, 1]), ([0.02, 0.03, 0.01, 0.05], [-0.01, 0.01, -0.02, 0.04]), ref=[-9, -8, -7, -6]),
    _record("ex", 1, ([1, 1], [0, 0]), ([1, 1, 1, 0], [0, 0, 0, 1])),
    _record("im", 1, ([1, 1], [0, 0]), ([1, 1, 1, 0], [0, 0, 0, 1]), ref=[-1, -1, -1, -1]),
]


def _generations():
    rows = []
    for model, valid in (("IM-RM", [0, 0, 0, 1]), ("initial model", [0, 1, 1, 1])):
        for i, v in enumerate(valid):
            rows.append({"split": "train" if i < 2 else "test", "index": i % 2, "sample": f"{i}[sep]" + "x" * 200,
                         "valid": bool(v), "well_formed": True, "p_random": 0.25, "model": model, "seed": 0})
    return pd.DataFrame(rows)


def test_accuracy_is_the_mean_and_std_over_seeds():
    acc = page.accuracy(OUTCOMES).set_index(["rm", "eval_set"])
    assert acc.loc[("EX-RM", "test"), "mean"] == pytest.approx(0.625)
    assert acc.loc[("EX-RM", "test"), "std"] == pytest.approx(0.125)  # population std of 0.5 and 0.75
    assert acc.loc[("IM-RM", "train"), "mean"] == pytest.approx(0.75)
    assert page.accuracy_table(page.accuracy(OUTCOMES)).data.shape == (2, 5)  # rm, mean x 2 sets, std x 2 sets


def test_generation_table_and_listing():
    gens = _generations()
    shown = page.generation_table(gens).data.set_index(["model", "split"])
    assert shown.loc[("IM-RM", "test"), "valid"] == "0.5" and shown.loc[("initial model", "train"), "valid"] == "0.5"
    assert shown.loc[("IM-RM", "test"), "random ordering"] == "0.25" and shown.loc[("IM-RM", "test"), "samples"] == "2"
    lines = page.sample_listing(gens, seed=0, n_show=1).splitlines()
    assert lines[0] == "--- IM-RM, train prompts (seed 0), first 1 samples:"
    assert lines[1] == f"  [invalid] {('0[sep]' + 'x' * 200)[:110]!r}"
    assert len(lines) == 8 and lines[-1].startswith("  [valid] '2[sep]xxx")
    assert page.sample_listing(gens, seed=5, n_show=1) == ""


def test_per_pair_bound_by_hand():
    b = PerPairBound(np.array([1.0, 0.2]), np.array([-1.0, 0.4]), np.array([-10.0, -20.0]), beta=0.5)
    np.testing.assert_allclose(b.margin, [4.0, -0.4])
    np.testing.assert_allclose(b.logp_change, [2.0, 0.4])
    np.testing.assert_allclose(b.theta_logp_chosen, [-8.0, -19.6])
    assert (b.within, b.verified, b.within_and_verified) == (0.5, 0.5, 0.5)
    text = b.markdown().data
    assert "On the 2 test pairs, the IM-RM verifies (r(y+) > r(y-)) **50%**" in text
    assert "median change of ln π(y+|x) is +1.20 nats against a median margin δ/β of 1.80 nats" in text
    assert "from -15.0 under π_ref to -13.8 nats under π_θ, i.e. a probability of about 1.0e-06" in text
    assert "for 50% of the first seed's test pairs r(y-) ≤ 0" in b.comparison_sentence()
    with pytest.raises(ValueError, match="one chosen reward, rejected reward and reference"):
        PerPairBound(np.ones(2), np.ones(3), np.ones(2), beta=0.1)


def test_per_pair_bound_reads_the_first_im_run():
    b = page.per_pair_bound(OUTCOMES, beta=0.01)
    np.testing.assert_allclose(b.logp_change, [2, 3, 1, 5])
    np.testing.assert_allclose(b.ref_logp_chosen, [-9, -8, -7, -6])
    assert (b.within, b.verified) == (0.5, 1.0)


def test_figures_draw_their_marks():
    fig = accuracy_bars(page.accuracy(OUTCOMES), "title")
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 4 and [round(p.get_height(), 3) for p in bars] == [1.0, 0.625, 0.75, 0.875]
    fig = theorem1_figure(PerPairBound(np.array([1.0, 0.2, 3.0]), np.array([-1.0, 0.4, 0.0]),
                                       np.array([-10.0, -20.0, -5.0]), beta=0.5))
    left, right = fig.axes
    assert len(left.collections[0].get_offsets()) == 3 and len(left.get_lines()) == 3  # y = x, two zero lines
    assert len(right.patches) == 2 * 29  # two histograms of 29 bins


def test_paper_comparison_claims_and_summary():
    cfg = page.Config(model="tiny-random", epochs=1, seeds=[0, 1])
    verification = page.verification_claims(OUTCOMES)
    assert [c.interval.estimate for _, _, c in verification] == pytest.approx([0.875 - 0.5, 0.625 - 0.5, 0.25])
    gens, bound = _generations(), page.per_pair_bound(OUTCOMES, cfg.beta)
    text = page.paper_comparison(cfg, verification, gens, bound).data
    assert text.startswith("**Setup.** tiny-random (the paper template), N = 6, p = 0.2, 64/32 graphs, 1 epoch, "
                           "lr 5e-05, batch 8, 2 seeds; the paper: Pythia-1B")
    bullets = [line for line in text.splitlines() if line.startswith("* ")]
    assert len(bullets) == 3 + 2 + 1
    assert bullets[3].startswith("* IM-RM: 1 of 4 samples are valid cycles") and "initial model: 3 of 4" in bullets[4]
    rows = page.summary_rows(cfg, page.accuracy(OUTCOMES), gens, bound)
    assert rows[0] == {"quantity": "EX-RM accuracy, train / test", "value": "1.000 / 0.625", "paper": "~1.00 / ~0.99",
                       "note": "mean over 2 seeds"}
    assert rows[2]["value"] == "0.000 / 0.500"  # IM-RM train / test valid fractions
    assert rows[2]["note"] == "initial model: 0.500 / 1.000; random orderings: 0.250"
    assert rows[3]["value"] == "0.50"
    table = page.claim_rows(verification, gens)
    assert len(table) == 4 and table[-1]["this build"].startswith("0.250 [0.006, 0.806] vs random 0.250")


def test_exact_mass_table_and_claim_from_records():
    """Hand-made masses: 8 test graphs where the IM-RM puts 1e-4 on valid cycles, pi_ref 1e-6, chance 0.05:
    the generation claim decides ("agrees": 8 of 8 below, exact sign test p = 2 x 0.5^8)."""
    graphs = [{"split": split, "index": i, "n_orders": 4, "log_mass": np.log(1e-4), "log_mass_initial": np.log(1e-6),
               "p_random": 0.05} for split in ("train", "test") for i in range(8)]
    outcomes = [types.SimpleNamespace(record={"spec": {"rm_type": "im", "seed": 0},
                                              "after_training": {"cycle_mass": {"graphs": graphs, "ref_check": 0.01}}}),
                types.SimpleNamespace(record={"spec": {"rm_type": "ex", "seed": 0}})]
    by_split = page.mass_claims(page.cycle_masses(outcomes))
    vs_random, vs_initial, _ = by_split["test"]
    assert vs_random.verdict == "agrees with the paper" and vs_random.test.p_value == pytest.approx(2 * 0.5 ** 8)
    assert vs_initial.test.wins_a == 8 and vs_initial.mean_a == pytest.approx(1e-4)
    shown = page.mass_table(page.cycle_masses(outcomes), by_split).data
    assert list(shown["split"]) == ["train", "test"] and list(shown["random ordering"]) == ["0.05", "0.05"]
    text = page.paper_comparison(page.Config(model="tiny-random"), [], _generations(),
                                 page.per_pair_bound(OUTCOMES, 0.01), by_split).data
    assert text.count("agrees with the paper") == 1 and "Sampled check" in text


# ---------------------------------------------------------------------------------------------- end to end

def _train_as_the_notebook_does(cfg, splits):
    """Notebook 01's training cell: the loop over the plan, then the samples."""
    from rmlib import plan as plans

    outcomes = []
    for entry in page.plan(cfg):
        outcomes.append(plans.run_entry(entry, force=cfg.force))
        print(page.progress_line(entry, outcomes[-1]))
    return outcomes, page.generations_of(cfg, outcomes, splits)


def test_page_runs_end_to_end_with_the_tiny_model(tmp_path, capsys):
    cfg = page.Config(model="tiny-random", n_vertices=4, n_train=4, n_test=2, epochs=1, lr=1e-3, batch_size=4,
                      micro_batch_size=4, seeds=[0], n_generate=2, results_dir=str(tmp_path))
    splits = page.make_splits(cfg)
    outcomes, gens = _train_as_the_notebook_does(cfg, splits)
    assert re.search(r"seed 0 EX-RM: trained in \d+ s \(fp32\); train accuracy [\d.]+  test accuracy", capsys.readouterr().out)
    assert [o.record["spec"]["rm_type"] for o in outcomes] == ["ex", "im"]
    assert sorted(gens.groupby(["model", "split"]).size().items()) == [
        (("IM-RM", "test"), 2), (("IM-RM", "train"), 2), (("initial model", "test"), 2), (("initial model", "train"), 2)]
    bound = page.per_pair_bound(outcomes, cfg.beta)
    assert bound.ref_logp_chosen.shape == (2,) and np.all(bound.ref_logp_chosen < 0)
    verification = page.verification_claims(outcomes)
    masses = page.cycle_masses(outcomes)  # the exact mass, stored with the IM-RM run
    assert len(masses) == 6 and (masses.log_mass < 0).all() and (masses.log_mass_initial < 0).all()
    by_split = page.mass_claims(masses)
    assert list(by_split) == ["train", "test"] and by_split["test"][0].log_ratio.size == 2
    claim_table = page.claim_rows(verification, gens, by_split)
    assert claim_table[-1]["claim"] == page.GENERATION_CLAIM and claim_table[-1]["n_pairs"] == 2
    assert "within" in page.mass_markdown(by_split, outcomes).data
    path = page.write(cfg, page.summary_rows(cfg, page.accuracy(outcomes), gens, bound, by_split), claim_table)
    assert Path(path).exists()
    again, _ = _train_as_the_notebook_does(cfg, splits)  # stored runs are reused
    assert all(o.reused for o in again)


@pytest.mark.parametrize("precision, autocast", [("bf16-mixed", True), ("fp32", False)])
def test_baseline_samples_are_drawn_at_the_im_rms_precision(monkeypatch, precision, autocast):
    """The initial model's samples are drawn under the IM-RMs' resolved precision (their samples are drawn inside
    their runs, under the run's autocast), so the two generation rates compare the same numerics."""
    import torch

    seen = []
    monkeypatch.setattr(ham, "sample_and_verify", lambda *a, **k: seen.append(torch.is_autocast_enabled("cpu")) or [])
    cfg = page.Config.from_profile("smoke", seeds=[0])
    page.initial_model_samples(cfg, {"train": [], "test": []}, precision=precision)
    assert seen == [autocast]
