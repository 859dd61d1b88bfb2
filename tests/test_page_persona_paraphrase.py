"""The page of notebook 03 (rmlib.book.persona_paraphrase, persona_figure4, persona_tokens): its Config and the
tables, sentences and figures built from synthetic run records whose accuracies are known by hand."""

import json
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from rmlib.analysis import claims
from rmlib.book import persona_paraphrase as page
from rmlib.book import persona_figure4 as figure4, persona_tokens
from rmlib.metrics import accuracy
from rmlib.params import ParameterError
from rmlib.tasks import persona

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params" / "03_persona_paraphrase"


# ------------------------------------------------------------------------------------------- Config

def test_config_defaults_are_the_cpu_profile():
    cpu = yaml.safe_load((PARAMS / "cpu.yaml").read_text())
    defaults = page.Config()
    assert all(getattr(defaults, key) == value for key, value in cpu.items())
    assert page.Config.from_profile("cpu") == defaults
    # the values the cpu profile had before its defaults moved into the Config
    assert (defaults.models, defaults.rm_types, defaults.seeds) == (["smollm2-135m-instruct"], ["ex", "im"], [0, 1, 2])
    assert (defaults.n_train, defaults.n_test, defaults.n_eval_train_prompts, defaults.epochs, defaults.lr,
            defaults.batch_size, defaults.micro_batch_size, defaults.beta) == (80, 40, 10, 2, 2e-5, 8, 8, 0.01)
    assert all(f.metadata["help"] for f in fields(page.Config))


def test_every_profile_loads_and_overrides_only_what_differs():
    smoke = page.Config.from_profile("smoke")
    assert smoke.models == ["tiny-random"] and smoke.rm_types == ["ex", "im", "grm"] and smoke.lr == 1e-4
    paper_yaml = yaml.safe_load((PARAMS / "paper.yaml").read_text())
    assert paper_yaml["models"][0] == "pythia-1b"
    paper = page.Config.from_profile("paper", models=["tiny-random"])  # the paper's models need the Hub
    assert (paper.epochs, paper.lr, paper.batch_size, paper.n_eval_train_prompts) == (50, 1e-6, 32, None)
    for name in ("smoke", "paper"):
        values = yaml.safe_load((PARAMS / f"{name}.yaml").read_text())
        assert all(getattr(page.Config(), k) != v for k, v in values.items()), name


def test_config_cross_checks_raise_before_any_work():
    with pytest.raises(ParameterError, match="token_view=True needs 'im'"):
        page.Config.from_profile("smoke", rm_types=["ex", "grm"], panel=False)
    with pytest.raises(ParameterError, match="panel=True needs 'ex' and 'im'"):
        page.Config.from_profile("smoke", rm_types=["im"])
    with pytest.raises(ParameterError, match="micro_batch_size"):
        page.Config.from_profile("smoke", micro_batch_size=16)
    with pytest.raises(ParameterError, match="rm_types"):
        page.Config.from_profile("smoke", rm_types=["ex", "im", "dpo"])
    with pytest.raises(ParameterError, match="unknown parameter"):
        page.Config.from_namespace({"profile": "smoke", "epoch": 3})
    assert page.Config.from_profile("smoke", rm_types=["ex", "grm"], token_view=False, panel=False).rm_labels == \
        ["EX-RM", "EX-GRM"]


# ------------------------------------------------------------------------------ synthetic run records
# Rewards by response: the original chosen responses 1, the original rejected 0 (every original pair right);
# paraphrases: EX-RM ranks certainly > both rejected, absolutely < both (2 of the 4 combinations right);
# IM-RM ranks every paraphrased pair wrong.

PROMPTS = [f"statement {i}" for i in range(30)]
REWARD = {"ex": {**{c: 1.0 for c in persona.CHOSEN}, **{r: 0.0 for r in persona.REJECTED},
                 persona.PARAPHRASED_CHOSEN[0]: 2.0, persona.PARAPHRASED_CHOSEN[1]: -1.0,
                 persona.PARAPHRASED_REJECTED[0]: 0.5, persona.PARAPHRASED_REJECTED[1]: 0.5},
          "im": {**{c: 1.0 for c in persona.CHOSEN}, **{r: 0.0 for r in persona.REJECTED},
                 **{c: -1.0 for c in persona.PARAPHRASED_CHOSEN}, **{r: 1.0 for r in persona.PARAPHRASED_REJECTED}}}


def fake_outcome(setting, seed, rm_type, model="m", token_view=None):
    evals = {}
    for name, ev in setting.eval_sets.items():
        rc = [REWARD[rm_type][r["chosen"]] for r in ev.rows]
        rr = [REWARD[rm_type][r["rejected"]] for r in ev.rows]
        evals[name] = {"reward_chosen": rc, "reward_rejected": rr, "accuracy": accuracy(rc, rr), "margin": 1.0,
                       "n": len(rc), "category": ev.category}
    record = {"spec": {"setting": "persona_x", "model": model, "rm_type": rm_type, "seed": seed,
                       "extra": {"token_view": True} if token_view else {}},
              "evals": evals, "history": {"epochs": [{"train_accuracy": 0.9, "train_loss": 0.3}]},
              "timings": {"train": 12.0}, "precision": {"mode": "fp32"}, "run_id": f"{model}-{rm_type}-{seed}"}
    if token_view:
        record["after_training"] = token_view
    return SimpleNamespace(record=record, reused=False)


@pytest.fixture(scope="module")
def runs():
    settings = {s: persona.make_setting(PROMPTS, 6, 4, seed=s, n_eval_train_prompts=2) for s in (0, 1)}
    outcomes = [fake_outcome(settings[s], s, t) for s in (0, 1) for t in ("ex", "im")]
    cfg = page.Config.from_profile("smoke", rm_types=["ex", "im"], seeds=[0, 1])
    stats = figure4.accuracy_stats(figure4.accuracy_runs(outcomes))
    return cfg, settings, outcomes, stats


def test_figure4_stats_and_table_by_hand(runs):
    cfg, settings, outcomes, stats = runs
    assert stats.loc[("EX-RM", "test", "original"), "mean"] == 1.0
    assert stats.loc[("EX-RM", "test", "paraphrased"), "mean"] == 0.5
    assert stats.loc[("IM-RM", "train", "paraphrased"), "mean"] == 0.0
    assert (stats["n"] == 2).all() and (stats["std"] == 0).all()
    caption, shown = figure4.accuracy_table(cfg, stats)
    assert caption.data.startswith("Accuracy, mean ± std over 2 runs per cell (1 model x 2 seeds)")
    assert shown.data.iloc[0].tolist() == ["EX-RM", "1.000 ± 0.000", "0.500 ± 0.000", "1.000 ± 0.000", "0.500 ± 0.000"]
    assert shown.data.columns.tolist()[1:] == ["train original", "train paraphrased", "test original", "test paraphrased"]


def test_combination_table_per_paraphrase_pair(runs):
    cfg, settings, outcomes, _ = runs
    caption, shown = figure4.combination_table(cfg, outcomes, settings)
    rows = shown.data.set_index(["chosen", "rejected"])
    first, second = persona.PARAPHRASED_CHOSEN
    assert rows.loc[(first, persona.PARAPHRASED_REJECTED[0]), "RM EX-RM"] == "1"
    assert rows.loc[(second, persona.PARAPHRASED_REJECTED[1]), "RM EX-RM"] == "0"
    assert rows.loc[("mean of the 4", ""), "RM EX-RM"] == "0.5" and rows.loc[("mean of the 4", ""), "RM IM-RM"] == "0"
    assert len(rows) == 5


def test_fit_table_reads_each_runs_own_training_pairs(runs):
    cfg, settings, outcomes, _ = runs
    fit = page.fit_table(outcomes, settings)
    assert fit["rm_type"].tolist() == ["EX-RM", "IM-RM", "EX-RM", "IM-RM"]
    assert (fit["train pairs acc (after)"] == 1.0).all() and (fit["last-epoch loss"] == 0.3).all()
    note = figure4.comparison_note(cfg, fit, claims.figure4_claims([o.record for o in outcomes], settings, n_boot=200))
    assert note.data.startswith("**Comparison with Figure 4** (smoke profile; models: tiny-random; 1 epoch, lr 0.0001")
    assert "Every reward model fit its training pairs" in note.data
    assert note.data.count("\n* ") == 1 + 4  # the fit and the four claims without EX-GRM


def test_per_model_table_only_with_several_models(runs):
    _, settings, outcomes, _ = runs
    assert figure4.per_model_table(figure4.accuracy_runs(outcomes)) is None
    more = outcomes + [fake_outcome(settings[0], 0, "ex", model="other")]
    assert len(figure4.per_model_table(figure4.accuracy_runs(more)).data) == 3


def test_figure4_plot_draws_one_bar_per_rm_and_set(runs):
    cfg, _, _, stats = runs
    fig = figure4.bar_plot(cfg, stats)
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 2 * 4 and [b.get_height() for b in bars[:4]] == [1.0, 0.5, 1.0, 0.5]


def test_separator_note_branches(runs):
    cfg, _, _, stats = runs  # the EX-RM's test/paraphrased accuracy is 0.5
    sep = lambda fracs: pd.DataFrame({"eval_set": "test/paraphrased", figure4.SEPARATOR_COLUMN: fracs})
    assert "consistent with the separator's prediction" in figure4.separator_note(cfg, sep([0.5, 0.54]), stats).data
    below = figure4.separator_note(cfg, sep([1.0, 1.0]), stats).data
    assert "**1.000**" in below and "mean over 2 model/seed combinations" in below and "below the separator" in below
    assert "well above the separator's fraction" in figure4.separator_note(cfg, sep([0.2]), stats).data
    assert "not linearly separable" in figure4.separator_note(cfg, pd.DataFrame(), stats).data
    no_ex = page.Config.from_profile("smoke", rm_types=["im"], panel=False)
    assert figure4.separator_note(no_ex, sep([0.2]), stats).data.endswith("about 0.97 for base models. ")


def test_summary_rows_and_written_summary(runs, tmp_path):
    cfg, settings, outcomes, stats = runs
    sep = pd.DataFrame({"eval_set": ["train/paraphrased", "test/paraphrased"], figure4.SEPARATOR_COLUMN: [0.1, 0.75]})
    rows = page.summary_rows(cfg, stats, sep, 12.345)
    assert len(rows) == 2 * 4 + 2
    assert rows[3] == {"quantity": "EX-RM accuracy, test prompts, paraphrased responses", "value": 0.5,
                       "paper": "1.0", "note": "mean over 2 runs"}
    assert rows[5]["paper"] == "near 0" and rows[4]["paper"] == "1.0"
    assert rows[-2]["value"] == 0.75 and rows[-1]["value"] == 12.3
    assert len(page.summary_rows(cfg, stats, pd.DataFrame(), 1.0)) == 2 * 4 + 1
    tested = claims.figure4_claims([o.record for o in outcomes], settings, n_boot=200)
    shown = page.write_page_summary(cfg.replace(results_dir=str(tmp_path)), stats, sep, tested, 1.0)
    written = yaml.safe_load((tmp_path / "summaries" / "03_persona_paraphrase.json").read_text())
    assert len(written["rows"]) == len(shown.data) == 10 and len(written["claims"]) == 4


def test_data_note_progress_line_and_training_pairs(runs):
    cfg, settings, outcomes, _ = runs
    note = page.data_note(cfg, PROMPTS, settings).data
    assert note.startswith("**Data.** 30 prompts of trait *agreeableness*")
    assert "`train/original` 32 pairs, `train/paraphrased` 8 pairs, `test/original` 64 pairs" in note
    assert note.endswith("**Data source.** local mirror: persona/agreeableness 1,000 rows.")
    assert page.progress_line(outcomes[1]) == ("m                        seed 0 IM-RM  trained in 12 s, fp32; "
                                               "train/original 1.000  train/paraphrased 0.000  "
                                               "test/original 1.000  test/paraphrased 0.000")
    assert len(page.training_pairs(settings, 0).data) == 4


def test_separator_table_with_the_tiny_model():
    cfg = page.Config.from_profile("smoke", seeds=[0])
    settings = {0: persona.make_setting(PROMPTS, 6, 4, seed=0, n_eval_train_prompts=2)}
    sep = figure4.separator_table(cfg, settings)
    assert sep["eval_set"].tolist() == ["train/paraphrased", "test/paraphrased"]
    assert sep[figure4.SEPARATOR_COLUMN].between(0, 1).all()
    assert sep["min training margin"].iloc[0] == pytest.approx(1.0, abs=1e-4)  # Eq. 6's binding constraints


# ---------------------------------------------------------------------------------------- token view

def token_record(paraphrase_changes=(0.1, 0.3)):
    """Two tokens per response; the paraphrased chosen response gains ``paraphrase_changes[0]`` in all."""
    responses = ["original chosen", "original rejected", "paraphrased chosen", "paraphrased rejected"]
    changes = {"original chosen": (0.5, 0.25), "original rejected": (-0.5, 0.1),
               "paraphrased chosen": (paraphrase_changes[0], 0.0), "paraphrased rejected": (0.0, paraphrase_changes[1])}
    tokens = [{"response": r, "position": k, "token": f" t{k}", "logp_trained": -1.0 + c, "logp_initial": -1.0,
               "change": c} for r in responses for k, c in enumerate(changes[r])]
    return {"prompt": "Is it so?", "responses": responses, "tokens": tokens, "cached_ref_logps": [-2.0] * 4}


def test_token_rewards_check_and_note(capsys):
    record = token_record()
    rewards = persona_tokens.token_rewards(record, beta=0.1)
    assert rewards.to_dict() == pytest.approx({"original chosen": 0.075, "original rejected": -0.04,
                                               "paraphrased chosen": 0.01, "paraphrased rejected": 0.03})
    persona_tokens.print_token_check(record)
    out = capsys.readouterr().out
    assert "prompt: 'Is it so?'" in out and out.strip().endswith("cached ln pi_ref(y|x)|: 0.0")
    note = persona_tokens.token_note(record, beta=0.1).data
    assert "*original chosen*: token ` t0` +0.50 nats" in note and "*original rejected*: token ` t0` -0.50 nats" in note
    assert "original chosen +0.75, original rejected -0.40" in note and "the wrong way round" in note
    assert "ranked correctly" in persona_tokens.token_note(token_record((0.3, 0.1)), beta=0.1).data
    assert len(persona_tokens.reward_table(record, 0.1).data) == 4 and len(persona_tokens.token_table(record).data) == 8


def test_token_figure_has_one_panel_and_bar_per_response_token():
    fig = persona_tokens.token_figure(token_record())
    assert [ax.get_title() for ax in fig.axes] == token_record()["responses"]
    assert [len(ax.patches) for ax in fig.axes] == [2, 2, 2, 2]


def test_no_token_view_shows_nothing(capsys):
    outcomes = [SimpleNamespace(record={"spec": {"extra": {}}})]
    assert persona_tokens.token_record(outcomes) is None
    assert persona_tokens.token_figure(None) is None and persona_tokens.token_note(None, 0.1) is None
    assert persona_tokens.token_table(None) is None and persona_tokens.reward_table(None, 0.1) is None
    persona_tokens.print_token_check(None)
    assert "token view skipped" in capsys.readouterr().out
    stored = token_record()
    flagged = [SimpleNamespace(record={"spec": {"extra": {}}}),
               SimpleNamespace(record={"spec": {"extra": {"token_view": True}}, "after_training": stored})]
    assert persona_tokens.token_record(flagged) is stored


def test_token_view_of_an_untrained_im_rm_is_zero_and_matches_its_reference(fresh_tiny):
    from rmlib.models import add_task_tokens
    from rmlib.rewards import build_reward_model
    from rmlib.scoring import reference_logps

    lm, tok = fresh_tiny
    add_task_tokens(lm, tok, "persona")
    rm = build_reward_model("im", lm, tok, beta=0.01)
    setting = persona.make_setting(PROMPTS, 6, 4, seed=0, n_eval_train_prompts=2)
    row = setting.train_rows[0]
    ref_logps = reference_logps(rm, [rm.encode(row["prompt"], text) for text in (row["chosen"], row["rejected"],
                                persona.PARAPHRASED_CHOSEN[0], persona.PARAPHRASED_REJECTED[0])])  # as training does
    record = persona_tokens.token_view(page.Config.from_profile("smoke"), rm, setting, seed=0, ref_logps=ref_logps)
    assert record["prompt"] == setting.train_rows[0]["prompt"] and len(record["cached_ref_logps"]) == 4
    frame = persona_tokens.token_frame(record)
    assert np.abs(frame["change"]).max() < 1e-4  # same weights: pi_theta = pi_ref
    summed = frame.groupby("response", sort=False)["logp_initial"].sum().to_numpy()
    assert np.allclose(summed, record["cached_ref_logps"], atol=1e-4)


def _train_as_the_notebook_does(cfg) -> list:
    """Notebook 03's training cell: the loop over the plan, one progress line per run."""
    from rmlib import plan as plans

    outcomes = []
    for entry in page.plan(cfg):
        outcomes.append(plans.run_entry(entry, force=cfg.force))
        print(page.progress_line(outcomes[-1]))
    return outcomes


def test_the_training_loop_stores_the_token_view_with_the_im_run_and_reuses_runs(tmp_path, capsys):
    data_dir = tmp_path / "data"  # a persona file of PROMPTS: the plan's recipe rebuilds the split from it
    (data_dir / "persona").mkdir(parents=True)
    (data_dir / "persona" / "agreeableness.jsonl").write_text(
        "".join(json.dumps({"question": p, "answer_matching_behavior": " Yes"}) + "\n" for p in PROMPTS))
    cfg = page.Config.from_profile("smoke", results_dir=str(tmp_path), data_dir=str(data_dir), rm_types=["ex", "im"],
                                   n_train=8, n_test=4, n_eval_train_prompts=2, panel=False, seeds=[0])
    settings = {0: persona.make_setting(PROMPTS, cfg.n_train, cfg.n_test, seed=0, n_eval_train_prompts=2)}
    outcomes = _train_as_the_notebook_does(cfg)
    assert [o.record["spec"]["rm_type"] for o in outcomes] == ["ex", "im"]
    stored = persona_tokens.token_record(outcomes)
    assert stored["prompt"] == settings[0].train_rows[0]["prompt"] and len(stored["responses"]) == 4
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny-random")]
    assert len(lines) == 2 and "trained in" in lines[1] and "test/paraphrased" in lines[1]
    again = _train_as_the_notebook_does(cfg)
    assert all(o.reused for o in again) and persona_tokens.token_record(again) == stored


def test_split_seed_gives_every_seed_the_same_split_as_the_official_code():
    """split_seed (paper profile: 875, the official dataset_prep_random_seed): one split and response draw for
    every seed; without it each seed draws its own."""
    assert yaml.safe_load((PARAMS / "paper.yaml").read_text())["split_seed"] == 875
    fixed = page.Config.from_profile("smoke", seeds=[0, 1], split_seed=875)
    prompts, settings = page.load_settings(fixed)
    assert settings[0].train_rows == settings[1].train_rows and settings[0].test_prompts == settings[1].test_prompts
    assert settings[0].train_rows == persona.make_setting(prompts, fixed.n_train, fixed.n_test, seed=875).train_rows
    _, own = page.load_settings(fixed.replace(split_seed=None))
    assert own[0].train_prompts != own[1].train_prompts
