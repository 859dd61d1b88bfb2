"""Notebook 05's page (rmlib.book.augmentation, rmlib.book.augmentation_figures): its Config, sentences, tables,
summary rows and figures, on constructed runs (no model is trained here)."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rmlib.analysis import augmentation_effects as fx
from rmlib.book import augmentation as page
from rmlib.book.augmentation_figures import accuracy_figure, gap_change_figure
from rmlib.params import ParameterError
from rmlib.tasks import augmentation as aug

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- config

def test_config_defaults_are_the_cpu_profile():
    cpu = yaml.safe_load((ROOT / "params/05_augmentation/cpu.yaml").read_text())
    defaults = asdict(page.Config())
    assert all(defaults[k] == v for k, v in cpu.items()), cpu
    assert defaults == {"profile": "cpu", "results_dir": "results", "data_dir": None,
                        "models": ["smollm2-135m-instruct"], "seeds": [0], "rm_types": ["ex", "im"], "epochs": 4,
                        "lr": 2e-5, "batch_size": 8, "micro_batch_size": 4, "beta": 0.01, "precision": "auto",
                        "max_length": 256, "n_train": 32, "n_eval": 20, "data_seed": 0,
                        "conditions": ["original", "augmented_same_steps", "placebo"], "length_rm_types": ["ex", "im"],
                        "checkpoint_every": None, "gradient_checkpointing": False, "force": False,
                        "train": "missing"}


def test_cpu_profile_copies_notebook_04s_chat_protocol():
    """Reuse of notebook 04's runs needs the same training and data parameters."""
    from rmlib.book.real_world_shifts import Config as RealWorldConfig

    p04, p05 = asdict(RealWorldConfig.from_profile("cpu")), asdict(page.Config.from_profile("cpu"))
    for key in ("models", "rm_types", "epochs", "lr", "batch_size", "micro_batch_size", "beta", "max_length",
                "n_train", "n_eval", "data_seed"):
        assert p05[key] == p04[key], key
    assert set(p05["seeds"]) <= set(p04["seeds"])
    assert p05["length_rm_types"] == p04["rm_types"]  # the protocol names the formats the cap checks


def test_every_profile_loads():
    smoke = page.Config.from_profile("smoke")
    assert smoke.models == ["tiny-random"] and smoke.conditions == list(aug.CONDITIONS) and smoke.n_train == 8
    paper = page.Config.from_profile("paper", models=["tiny-random"])  # the paper's models need the Hub
    assert (paper.epochs, paper.lr, paper.batch_size, paper.seeds) == (5, 1e-6, 32, [0, 1, 2])
    assert paper.max_length is None and paper.n_train is None
    assert "gemma-2-2b-it" in yaml.safe_load((ROOT / "params/05_augmentation/paper.yaml").read_text())["models"]


def test_cross_checks_raise_before_any_work():
    with pytest.raises(ParameterError, match="rm_types must be \\['ex', 'im'\\]"):
        page.Config.from_dict({"rm_types": ["ex"]})
    with pytest.raises(ParameterError, match="must contain 'original'"):
        page.Config.from_dict({"conditions": ["augmented_same_steps", "augmented_same_epochs"]})
    with pytest.raises(ParameterError, match="must contain 'original'"):
        page.Config.from_dict({"conditions": ["original"]})
    with pytest.raises(ParameterError, match="at least one augmented condition"):
        page.Config.from_dict({"conditions": ["original", "placebo"]})  # a control alone tests nothing
    with pytest.raises(ParameterError, match="conditions"):
        page.Config.from_dict({"conditions": ["original", "augmented"]})
    with pytest.raises(ParameterError, match="micro_batch_size"):
        page.Config.from_dict({"micro_batch_size": 16})
    with pytest.raises(ParameterError, match="unknown parameter"):
        page.Config.from_dict({"n_trian": 3})


def test_protocol_is_notebook_04s_and_treated_follows_the_canonical_order():
    cfg = page.Config.from_dict({"conditions": ["augmented_same_epochs", "original", "augmented_same_steps"]})
    assert cfg.treated == [aug.SAME_STEPS, aug.SAME_EPOCHS]
    assert cfg.protocol == {"epochs": 4, "batch_size": 8, "max_length": 256, "n_train_max": 32, "n_eval_max": 20,
                            "data_seed": 0, "length_rm_types": "ex,im"}


# ------------------------------------------------------------------------------------ constructed runs

def _examples(correct: dict, n_pairs: int):
    """A tidy examples table from {(condition, rm): per-pair correctness}; the pairs are split over the two
    translation sets and repeated, with the same values, on UF (in-distribution)."""
    rows = []
    for (condition, rm), values in correct.items():
        for eval_sets in (("ultrafeedback_french", "ultrafeedback_spanish"), ("ultrafeedback", "ultrafeedback")):
            for i, v in enumerate(values):
                rows.append({"condition": condition, "rm": rm, "seed": 0, "model": "m",
                             "eval_set": eval_sets[i >= n_pairs // 2], "index": i, "correct": float(v)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def changes():
    n = 200
    ex = np.ones(n)
    im_before = np.r_[np.ones(60), np.zeros(140)]        # gap +0.70
    im_after = np.r_[np.ones(160), np.zeros(40)]         # gap +0.20: clearly narrower
    examples = _examples({(aug.ORIGINAL, "ex"): ex, (aug.ORIGINAL, "im"): im_before,
                          (aug.SAME_STEPS, "ex"): ex, (aug.SAME_STEPS, "im"): im_after}, n)
    groups = (fx.IN_DISTRIBUTION, fx.TRANSLATION)
    gaps = fx.gap_changes(examples, treated=(aug.SAME_STEPS,), groups=groups, n_boot=2000)
    costs = fx.accuracy_changes(examples, treated=(aug.SAME_STEPS,), groups=groups, n_boot=2000)
    return examples, gaps, costs


def test_sentences_state_both_gaps_the_interval_and_the_verdict(changes):
    _, gaps, costs = changes
    text = page.gap_sentence(gaps[1])
    assert text.startswith("**translation (held out)**, augmented, same steps: the EX-RM minus IM-RM accuracy gap")
    assert "+0.70 with the original rows and +0.20 with augmentation; change -0.50 (95% CI " in text
    assert ("200 prompts, 1 seed (one training run: evaluation noise only); sign-flip test over prompts "
            f"p < 0.001): {fx.GAP_VERDICTS[0]}.") in text
    ex_cost = page.accuracy_sentence(costs[0])
    assert "EX-RM accuracy 1.00 -> 1.00, change +0.00" in ex_cost
    assert fx.ACCURACY_VERDICTS[3] in ex_cost
    assert "IM-RM accuracy 0.30 -> 0.80, change +0.50" in page.accuracy_sentence(costs[1])
    answer = page.answer_lines(gaps, costs)
    assert answer[0].startswith("*Augmented, same steps*: augmentation narrows the EX-IM gap under held-out "
                                "translation by more than 0.05 (+0.70 -> +0.20, change -0.50, 95% CI")
    assert len(answer) == 3  # the translation gap, then the EX-RM's and IM-RM's in-distribution change
    assert answer[2].startswith("In-distribution (augmented, same steps), the IM-RM's accuracy changes by +0.50")
    assert answer[2].endswith(f": {fx.ACCURACY_VERDICTS[0]}.")
    assert page.answer(gaps, costs).data.startswith("**Answer.**\n\n* *Augmented")


def test_undecided_answer_states_the_detectable_change(changes):
    _, gaps, _ = changes
    undecided = fx.Change(**{**gaps[1].__dict__, "verdict": fx.GAP_VERDICTS[2]})
    [line] = page.answer_lines([undecided], [])
    assert "undecided whether augmentation changes the EX-IM gap" in line
    assert f"; this size could detect a change of about {undecided.mdd:.2f})." in line
    assert f"smallest detectable difference about {undecided.mdd:.2f}" in page.gap_sentence(undecided)


def test_findings_tables_and_summary_rows(changes):
    _, gaps, costs = changes
    sentences, gap_table = page.gap_findings(gaps)
    assert sentences.data.count("\n* ") == 1 and list(gap_table.data.columns) == [
        "group", "condition", "gap, original", "gap, augmented", "change", "95% CI", "verdict"]
    assert list(gap_table.data["verdict"]) == [fx.GAP_VERDICTS[0]] * 2
    cost_sentences, _, cost_table = page.cost_findings(costs)
    assert cost_sentences.data.count("* **") == 4 and len(cost_table.data) == 4
    rows = page.summary_rows(gaps, costs)
    assert len(rows) == 2 + 2  # every gap change, each RM's in-distribution accuracy
    assert rows[1]["quantity"] == ("translation (held out): EX-RM minus IM-RM gap, augmented, same steps "
                                   "(original -> augmented)")
    assert rows[1]["value"] == "+0.700 -> +0.200" and rows[1]["note"].startswith("change -0.500 [")
    assert rows[3] == {"quantity": "in-distribution: IM-RM accuracy, augmented, same steps",
                       "value": "0.300 -> 0.800", "paper": "not in the paper", "note": fx.ACCURACY_VERDICTS[0]}


def test_accuracy_tables_show_the_gap_per_group_and_condition(changes):
    examples, _, _ = changes
    accuracy = page.accuracy_by_group(examples)
    assert set(accuracy["condition"]) == {"original", "augmented, same steps"}
    assert set(accuracy["reward model"]) == {"EX-RM", "IM-RM"}
    timing = pd.DataFrame({"condition": ["original", "original"], "rm": ["EX-RM", "IM-RM"],
                           "final_loss": [0.5, 0.7], "final_acc": [0.9, 0.6]})
    _, fit, _, wide = page.accuracy_tables(accuracy, timing)
    assert len(fit.data) == 1
    gaps = dict(zip(zip(wide.data["group"], wide.data["condition"]), wide.data["EX - IM"]))
    assert gaps["translation (held out)", "original"] == "0.7" and gaps["translation (held out)", "augmented, same steps"] == "0.2"
    assert set(wide.data["pairs"]) == {"200"}


def test_figures_draw_one_bar_per_group_and_condition_and_one_interval_per_change(changes):
    examples, gaps, _ = changes
    accuracy = page.accuracy_by_group(examples)
    fig = accuracy_figure(accuracy, [aug.ORIGINAL, aug.SAME_STEPS])
    assert [ax.get_title() for ax in fig.axes] == ["EX-RM", "IM-RM"]
    heights = [p.get_height() for p in fig.axes[1].patches if p.get_height() > 0]
    assert sorted(round(h, 3) for h in heights) == [0.3, 0.3, 0.8, 0.8]  # 2 groups with data x 2 conditions
    fig = gap_change_figure(gaps)
    [ax] = fig.axes
    assert len(ax.containers) == len(gaps)  # one error bar per change
    assert [t.get_text() for t in ax.get_yticklabels()] == ["translation (held out)\naugmented, same steps",
                                                            "in-distribution\naugmented, same steps"]
