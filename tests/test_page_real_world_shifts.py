"""Page 04 (Section 5.2): its parameters, run plan, and the tables, sentences and figures it shows
(rmlib.book.real_world_shifts, _views, _figures), on synthetic results; no model is trained."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rmlib.analysis import paper_tables
from rmlib.book import real_world_shifts as page, real_world_shifts_figures as figures, real_world_shifts_views as show
from rmlib.params import ParameterError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- Config

def test_config_defaults_are_the_cpu_profile():
    cpu = yaml.safe_load((ROOT / "params" / page.NOTEBOOK / "cpu.yaml").read_text())
    defaults = asdict(page.Config())
    assert all(defaults[k] == v for k, v in cpu.items())
    assert page.Config.from_profile("cpu") == page.Config()


def test_every_profile_loads():
    smoke = page.Config.from_profile("smoke")
    assert smoke.models == ["tiny-random"] and smoke.rm_types == ["ex", "im", "grm"] and smoke.n_eval == 4
    # the paper's models need the Hub or its cache to resolve; the rest of the profile is checked offline
    paper = page.Config.from_profile("paper", models=["tiny-random"], sweep_models=["tiny-random"])
    assert (paper.epochs, paper.lr, paper.batch_size, paper.max_length, paper.seeds) == (5, 1e-6, 32, None, [0, 1, 2])


@pytest.mark.parametrize("change, expected", [
    ({"rm_types": ["ex", "grm"]}, r"must contain 'ex' and 'im'"),
    ({"micro_batch_size": 16}, r"'micro_batch_size' = 16 is larger than 'batch_size' = 8"),
    ({"seeds": [1, 1]}, r"repeats a value"),
    ({"variants": ["ex:max"]}, r"'variants\[0\]' = 'ex:max' is not accepted"),
    ({"overlap_n": 5}, r"above its maximum 4"),
    ({"settings": ["code"]}, r"'settings\[0\]' = 'code' is not accepted"),
])
def test_config_names_the_bad_parameter(change, expected):
    with pytest.raises(ParameterError, match=expected):
        page.Config.from_dict(change)


def test_protocol_and_sweep_models():
    cfg = page.Config()
    assert cfg.protocol == {"epochs": 4, "batch_size": 8, "max_length": 256, "n_train_max": 32, "n_eval_max": 20,
                            "data_seed": 0, "length_rm_types": "ex,im"}
    assert cfg.sweep_model_names == ["smollm2-135m-instruct"]
    assert page.Config.from_dict({"sweep_models": ["tiny-random"]}).sweep_model_names == ["tiny-random"]


def test_plan_adds_variants_and_sweeps_only_in_the_chat_setting_of_the_sweep_models():
    cfg = page.Config.from_dict({"models": ["tiny-random", "smollm2-135m-instruct"], "seeds": [0, 1],
                                 "sweep_models": ["tiny-random"], "variants": ["im:no_ref"], "sweep_lrs": [1e-4],
                                 "sweep_betas": [0.1, 0.2]})
    runs = page.run_grid(cfg)
    # per (setting, model, seed): ex, im; chat x tiny-random adds 1 variant + 2 (lr sweep) + 2 (beta sweep)
    assert len(runs) == 2 * 2 * 2 * 2 + 2 * 5
    extra = [r for r in runs if (r.variant, r.lr, r.beta) != (None, cfg.lr, cfg.beta)]
    assert {(r.setting, r.model) for r in extra} == {("chat", "tiny-random")}
    assert [(r.rm_type, r.variant, r.lr, r.beta) for r in extra if r.seed == 0] == [
        ("im", "no_ref", 2e-5, 0.01), ("ex", None, 1e-4, 0.01), ("im", None, 1e-4, 0.01), ("im", None, 2e-5, 0.1),
        ("im", None, 2e-5, 0.2)]


# --------------------------------------------------------------------------------- synthetic results

def _main():
    """Tidy results of one seed and model: EX beats IM on UF (0.9 vs 0.5), loses on RB: Code (0.4 vs 0.6)."""
    rows = []
    for rm, acc in (("ex", (0.9, 0.4)), ("im", (0.5, 0.6))):
        for (eval_set, category), a in zip((("ultrafeedback", "in-distribution"), ("rewardbench_code", "domain shift")), acc):
            rows.append({"setting_name": "chat", "model": "m", "seed": 0, "rm": rm, "eval_set": eval_set,
                         "category": category, "accuracy": a, "margin": 1.0, "run_id": f"{rm}0",
                         "train_loss": 0.1, "train_accuracy": 0.99})
    return pd.DataFrame(rows)


def test_with_paper_appends_table_1_and_table_3_accuracies():
    agg = paper_tables.aggregate(_main(), by=("category",))
    t1 = paper_tables.with_paper(paper_tables.paper_style_table(agg), "chat", ("ex", "im"))
    assert t1.loc["in-distribution", ("paper accuracy", "EX-RM")] == 0.752
    assert t1.loc["domain shift", ("paper accuracy", "IM-RM")] == 0.720
    agg = paper_tables.aggregate(_main(), by=("category", "eval_set"))
    t3 = paper_tables.with_paper(paper_tables.paper_style_table(agg, by=("category", "eval_set")), "chat",
                                 ("ex",), level="eval_set")
    assert t3[("paper accuracy", "EX-RM")].tolist() == [0.752, 0.754]
    with pytest.raises(ValueError, match="level must be"):
        paper_tables.with_paper(t1, "chat", ("ex",), level="model")


def test_summary_rows_state_category_accuracy_fairness_and_paper():
    cfg = page.Config.from_dict({"settings": ["chat"]})
    main = _main()
    cat_agg, _ = page.aggregates(cfg, main)
    fit = paper_tables.training_fit(main, by=("setting_name",))
    rows = page.summary_rows(cfg, cat_agg, fit, main, {})
    assert rows[0] == {"quantity": "chat: in-distribution accuracy, EX-RM", "value": 0.9, "paper": "0.752",
                       "note": "1 seed, models: m"}
    assert rows[-1]["value"] == "0.990 / 0.990" and len(rows) == 5


def test_win_figure_draws_three_bars_per_data_set_and_skips_missing_reward_models():
    fig, tables = figures.win_figure(["chat"], _main(), "ex")
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 3 * 2  # EX wins / tie / IM wins, for UF and RB: Code
    assert tables["chat"]["ex_wins"].tolist() == [100.0, 0.0] and tables["chat"]["paper (a/tie/b)"][0] == "100/0/0"
    assert figures.win_figure(["chat"], _main(), "grm") == (None, {})
    assert len(show.win_tables(tables)) == 2


def test_accuracy_figure_draws_one_bar_per_data_set_and_reward_model():
    fig = figures.accuracy_figure(_main())
    heights = [p.get_height() for p in fig.axes[0].patches if p.get_height() > 0]
    assert sorted(np.round(heights, 3)) == [0.4, 0.5, 0.6, 0.9]


def test_sweep_runs_label_configurations_and_tabulate_per_category():
    proto = pd.concat([_main(), _main().assign(rm="im:no_ref", lr=1e-4)], ignore_index=True)
    proto["lr"] = proto["lr"].fillna(2e-5)
    proto["beta"] = [None if rm == "ex" else 0.01 for rm in proto["rm"]]
    assert page.sweep_runs(page.Config(), proto) is None  # no variants or sweeps asked for
    cfg = page.Config.from_dict({"models": ["tiny-random"], "variants": ["im:no_ref"]})
    runs = page.sweep_runs(cfg, proto.assign(model="tiny-random"))
    assert set(runs["configuration"]) == {"EX-RM, lr 2e-05", "IM-RM, lr 2e-05, β 0.01", "IM-RM (no ref), lr 0.0001, β 0.01"}
    frame = page.sweep_table(runs)
    assert frame.loc["EX-RM, lr 2e-05", "in-distribution"] == 0.9 and page.sweep_table(None) is None
    assert "section skipped" in show.sweep_table_or_note(None).data
    assert len(figures.sweep_figure(runs).axes) == 1 and figures.sweep_figure(None) is None


def test_accuracy_by_overlap_per_group_and_the_gap_table():
    examples = pd.DataFrame({"setting": "chat", "model": "m", "category": "in-distribution", "eval_set": "ultrafeedback",
                             "index": [0, 1, 2, 3] * 2, "rm": ["ex"] * 4 + ["im"] * 4,
                             "overlap": [0.1, 0.2, 0.8, 0.9] * 2, "correct": [1, 1, 1, 1, 0, 0, 1, 1.0]})
    cfg = page.Config.from_dict({"overlap_buckets": 2})
    by = page.accuracy_by_overlap(cfg, examples)
    assert by[["bucket", "rm", "accuracy"]].values.tolist() == [[0, "ex", 1.0], [0, "im", 0.0], [1, "ex", 1.0], [1, "im", 1.0]]
    assert set(by[["setting", "model"]].drop_duplicates().itertuples(index=False)) == {("chat", "m")}
    gap = show.gap_table(by).data
    assert gap["rm ex - im"].tolist() == ["1", "0"] and gap["rm pairs per rm"].tolist() == ["2", "2"]
    halves = page.overlap_halves_by_category(page.Config(), examples)
    assert halves["bucket"].max() == 1 and (halves["category"] == "in-distribution").all()
    assert len(figures.overlap_figure(by, 2).axes) == 1


# ------------------------------------------------------------------------------------------ sentences

def test_cut_reasons_and_malformed_notes():
    report = pd.DataFrame({"setting": ["chat", "chat", "math"], "label": ["UF", "RB: Code", "RB: Math"],
                           "split": ["test"] * 3, "why": ["10 fit", "10 fit", ""]})
    assert show.cut_reasons(report).data == ("**How each set was cut**, per reason:\n\n"
                                             "* 10 fit: chat UF (test), chat RB: Code (test)")

    class Loaded:
        notes = ["/somewhere/data/ultrafeedback/train.jsonl line 63: identical"]
    assert show.malformed_notes({("chat", "m"): Loaded()}, "/somewhere/data") == \
        "dropped malformed row: data_dir/ultrafeedback/train.jsonl line 63: identical"


def test_caveats_and_data_markdown():
    counts = {"n_train": 2, "n_rewardmath": 3, "rewardmath_shared": 1, "n_rb_math": 2, "rb_math_shared": 1}
    text = show.caveats_markdown(counts, None, "m").data
    assert text.count("\n* ") == 1 and text.startswith("* Paper's rows (1000 training rows, full test sets): 1 of the 3")
    assert show.caveats_markdown(counts, counts, "m").data.count("This build's rows (m)") == 2
    report = pd.DataFrame([{"setting": "chat", "model": "smollm2-135m-instruct", "data_set": "ultrafeedback", "label": "UF",
                            "split": "train", "used": 32}])
    text = show.data_markdown(page.Config(), report).data
    assert "Training: 4 epochs at lr 2e-05, batch 8 (paper: 5 epochs, lr 1e-6, batch 32); seeds [0] (paper: 3)" in text


def test_data_summary_and_fairness_sentences():
    report = pd.DataFrame([
        {"setting": "chat", "data_set": "ultrafeedback", "label": "UF", "split": "train", "used": 32},
        {"setting": "chat", "data_set": "ultrafeedback", "label": "UF", "split": "test", "used": 34},
        {"setting": "chat", "data_set": "rewardbench_code", "label": "RB: Code", "split": "test", "used": 116}])
    text = show.data_summary(report, 256)
    assert "at most 256 tokens" in text and "*chat*: 32 training rows (paper: 2000)" in text
    assert "UF 34, RB: Code 116" in text and "aligned by id" in text
    assert "no token cap" in show.data_summary(report, None)
    fit = pd.DataFrame({"setting_name": ["chat", "chat"], "rm": ["ex", "im"], "train_loss": [0.1, 0.5],
                        "train_accuracy": [0.99, 0.80]})
    sentence = show.fairness_sentence(fit, "chat")
    assert "gap 0.190" in sentence and "do **not** fit" in sentence and "far from converged" in sentence
    fit["train_accuracy"] = [0.997, 0.996]
    assert "As in the paper" in show.fairness_sentence(fit, "chat")


def test_overlap_trend_row_and_timing_sentence():
    from rmlib.analysis.stats import Interval

    row = show.overlap_trend_row("chat", "m", Interval(-0.1, -0.3, 0.1, 0.95, 40, 3), {}, 2)
    assert row["value"] == "-0.100 [-0.300, +0.100]" and "undecided" in row["note"]
    assert show.overlap_trend_row("chat", "m", None, {}, 2)["value"] == "one bucket only"
    timing = pd.DataFrame({"reused": [False, True], "wall_s": [120.0, 1.0], "cpu_s": [240.0, 1.0],
                           "train_s": [100.0, 0.0], "train_tokens": [5000, 0]})
    text = show.timing_sentence(timing, 180.0)
    assert text.startswith("This execution took 3.0 min") and "1 of 2 runs" in text and "50 tokens/s" in text
    assert "tokens/s" not in show.timing_sentence(timing.assign(reused=True), 60.0)
