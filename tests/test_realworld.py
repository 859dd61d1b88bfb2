"""Section 5.2 helpers: category mapping, loading with a length cap, aggregation, win-rates, overlap."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from rmlib import realworld as rw
from rmlib.models import load_tokenizer

# ------------------------------------------------------------------------------- category mapping


def test_chat_setting_categories_match_section_5_2():
    chat = rw.get_setting("chat")
    assert chat.train_set == "ultrafeedback" and chat.train_size == 2000
    assert chat.eval_sets(rw.IN_DISTRIBUTION) == ["ultrafeedback"]
    assert chat.eval_sets(rw.TOKEN_LEVEL) == ["ultrafeedback_paraphrased", "ultrafeedback_french",
                                              "ultrafeedback_spanish"]
    assert chat.eval_sets(rw.DOMAIN) == ["rewardbench_math", "rewardmath", "rewardbench_code"]


def test_math_setting_categories_match_section_5_2():
    math_ = rw.get_setting("math")
    assert math_.train_set == "rewardmath" and math_.train_size == 1000
    assert math_.eval_sets(rw.IN_DISTRIBUTION) == ["rewardmath"]
    assert math_.eval_sets(rw.TOKEN_LEVEL) == ["rewardbench_math"]
    assert math_.eval_sets(rw.DOMAIN) == ["ultrafeedback", "ultrafeedback_paraphrased", "ultrafeedback_french",
                                          "ultrafeedback_spanish", "rewardbench_code"]


def test_both_settings_evaluate_all_seven_sets_and_names_are_checked():
    for setting in rw.SETTINGS.values():
        assert sorted(setting.eval_sets()) == sorted(rw.EVAL_SETS)
    assert rw.get_setting("chat").results_setting != rw.get_setting("math").results_setting
    with pytest.raises(ValueError, match="unknown setting 'code'"):
        rw.get_setting("code")
    with pytest.raises(ValueError, match="unknown category"):
        rw.get_setting("chat").eval_sets("ood")


# ------------------------------------------------------------------------------- loading


def _write(folder, name, split, rows):
    path = folder / name / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def data_dir(tmp_path):
    """Every data set with 6 short rows, 2 long rows (~200 words per response) and, in the UF training
    file, one malformed row (chosen == rejected)."""
    short = [{"prompt": f"q{i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(6)]
    long = [{"prompt": f"long q{i}", "chosen": "word " * 200, "rejected": f"short {i}"} for i in range(2)]
    for name in rw.EVAL_SETS:
        _write(tmp_path, name, "test", short + long)
        train = short + long
        if name == "ultrafeedback":
            train = train + [{"prompt": "p", "chosen": "same", "rejected": "same"}]
        _write(tmp_path, name, "train", train)
    return tmp_path


def test_load_setting_drops_long_and_malformed_rows_and_reports_them(data_dir):
    tok = load_tokenizer("tiny-random")
    loaded = rw.load_setting("chat", tok, rm_types=("ex", "im", "grm"), max_length=100, data_dir=data_dir)
    report = loaded.report.set_index(["data_set", "split"])
    train = report.loc[("ultrafeedback", "train")]
    assert (train["available"], train["malformed"], train["too_long"], train["used"]) == (9, 1, 2, 6)
    for name in rw.EVAL_SETS:
        assert report.loc[(name, "test"), "too_long"] == 2 and report.loc[(name, "test"), "used"] == 6
        assert all(not r["prompt"].startswith("long") for r in loaded.eval_rows[name])
    assert [r["prompt"] for r in loaded.train_rows] == [f"q{i}" for i in range(6)]
    sets = loaded.eval_sets()
    assert sets["ultrafeedback"].category == rw.IN_DISTRIBUTION
    assert sets["rewardmath"].category == rw.DOMAIN


def test_load_setting_caps_counts_and_subsamples_reproducibly(data_dir):
    tok = load_tokenizer("tiny-random")
    a = rw.load_setting("math", tok, max_length=100, n_train=3, n_eval=4, data_dir=data_dir, seed=1)
    b = rw.load_setting("math", tok, max_length=100, n_train=3, n_eval=4, data_dir=data_dir, seed=1)
    assert len(a.train_rows) == 3 and all(len(v) == 4 for v in a.eval_rows.values())
    assert a.train_rows == b.train_rows and a.eval_rows == b.eval_rows
    assert a.report.set_index("data_set").loc["rewardbench_math", "role"] == rw.TOKEN_LEVEL
    # without a cap nothing is dropped for length
    c = rw.load_setting("math", data_dir=data_dir)
    assert (c.report["too_long"] == 0).all() and len(c.eval_rows["ultrafeedback"]) == 8


def test_load_setting_errors_are_clear(data_dir):
    tok = load_tokenizer("tiny-random")
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        rw.load_setting("chat", None, max_length=10, data_dir=data_dir)
    with pytest.raises(ValueError, match="no rows left .* max_length=5"):
        rw.load_setting("chat", tok, max_length=5, data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown evaluation set"):
        rw.load_setting("chat", eval_names=["ultrafeedback", "mmlu"], data_dir=data_dir)
    with pytest.raises(ValueError, match="n_eval must be"):
        rw.load_setting("chat", n_eval=0, data_dir=data_dir)


def test_grm_format_is_longer_and_counted(data_dir):
    """The EX-GRM verification prompt adds tokens, so a cap can drop a row for GRMs only."""
    tok = load_tokenizer("tiny-random")
    row = {"prompt": "q", "chosen": "a b c", "rejected": "d"}
    ex_len = len(rw.length_encoders(tok, ("ex",))[0]("q", "a b c"))
    grm_len = len(rw.length_encoders(tok, ("grm",))[0]("q", "a b c"))
    assert grm_len > ex_len
    assert rw.fits(row, rw.length_encoders(tok, ("ex",)), ex_len)
    assert not rw.fits(row, rw.length_encoders(tok, ("ex", "grm")), ex_len)
    with pytest.raises(ValueError, match="unknown reward-model type"):
        rw.length_encoders(tok, ("ex", "dpo"))


def test_real_mirror_uf_training_file_has_199_usable_rows():
    from rmlib.data import default_data_dir

    if not (default_data_dir() / "ultrafeedback" / "train.jsonl").exists():
        pytest.skip("offline data mirror not present")
    loaded = rw.load_setting("chat", eval_names=["ultrafeedback"])
    row = loaded.report.set_index("split").loc["train"]
    assert (row["available"], row["malformed"], row["used"]) == (200, 1, 199)


# ------------------------------------------------------------------------------- aggregation


def _results():
    """2 models x 2 data sets (one category) x 3 seeds, for ex and im, with hand-chosen accuracies."""
    rows = []
    for seed in (0, 1, 2):
        for model in ("m1", "m2"):
            for eval_set in ("ultrafeedback_french", "ultrafeedback_spanish"):
                for rm, base in (("ex", 0.8), ("im", 0.6)):
                    acc = base + 0.01 * seed + (0.1 if model == "m2" else 0.0) + (0.02 if eval_set.endswith("spanish") else 0)
                    rows.append({"model": model, "seed": seed, "eval_set": eval_set, "category": rw.TOKEN_LEVEL,
                                 "rm_type": rm, "variant": None, "accuracy": acc, "margin": 2 * acc,
                                 "run_id": f"{model}-{seed}-{rm}", "train_loss": 0.1, "train_accuracy": 0.95,
                                 "setting": "realworld-chat"})
    return rw.add_rm_column(pd.DataFrame(rows))


def test_aggregate_is_mean_and_std_over_seeds_of_per_seed_means():
    agg = rw.aggregate(_results(), by=("category",)).set_index("rm")
    # per seed, ex: mean over m1/m2 x french/spanish = 0.8 + 0.01 s + 0.05 + 0.01
    per_seed = np.array([0.86, 0.87, 0.88])
    assert agg.loc["ex", "accuracy_mean"] == pytest.approx(per_seed.mean())
    assert agg.loc["ex", "accuracy_std"] == pytest.approx(per_seed.std())  # ddof=0
    assert agg.loc["im", "accuracy_mean"] == pytest.approx(0.67)
    assert agg.loc["ex", "margin_mean"] == pytest.approx(2 * 0.87)
    assert agg.loc["ex", "n_seeds"] == 3 and agg.loc["ex", "n_cells"] == 4


def test_aggregate_per_data_set_averages_over_models_only():
    agg = rw.aggregate(_results(), by=("category", "eval_set")).set_index(["eval_set", "rm"])
    assert agg.loc[("ultrafeedback_spanish", "ex"), "accuracy_mean"] == pytest.approx(0.8 + 0.01 + 0.05 + 0.02)
    assert agg.loc[("ultrafeedback_spanish", "ex"), "n_cells"] == 2
    # the std over seeds is not the std over models: models differ by 0.1, seeds by 0.01
    assert agg.loc[("ultrafeedback_spanish", "ex"), "accuracy_std"] == pytest.approx(np.std([0, 0.01, 0.02]))


def test_paper_style_table_formats_mean_pm_std():
    table = rw.paper_style_table(rw.aggregate(_results()))
    assert list(table.columns) == [("accuracy", "EX-RM"), ("accuracy", "IM-RM"), ("margin", "EX-RM"),
                                   ("margin", "IM-RM")]
    assert table.loc[rw.TOKEN_LEVEL, ("accuracy", "EX-RM")] == "0.870 ± 0.008"


def test_aggregate_rejects_missing_columns():
    with pytest.raises(ValueError, match="lacks column"):
        rw.aggregate(_results().drop(columns="seed"))


def test_rm_label_marks_non_default_variants():
    assert rw.rm_label("ex", "last") == "ex" and rw.rm_label("im", "ref") == "im"
    assert rw.rm_label("ex", "mean") == "ex:mean" and rw.rm_label("im", "no_ref") == "im:no_ref"
    assert rw.rm_label("grm", None) == "grm"


def test_win_rates_use_matched_pairs_and_the_one_percent_tie_rule():
    rows = []
    # per (model, seed) on one data set: ex-im = +0.05 (ex wins), +0.005 (tie), -0.03 (im wins), +0.01 (tie)
    for (model, seed), diff in zip([("m1", 0), ("m1", 1), ("m2", 0), ("m2", 1)], [0.05, 0.005, -0.03, 0.01]):
        rows += [{"model": model, "seed": seed, "eval_set": "ultrafeedback", "category": rw.IN_DISTRIBUTION,
                  "rm": "ex", "accuracy": 0.6 + diff},
                 {"model": model, "seed": seed, "eval_set": "ultrafeedback", "category": rw.IN_DISTRIBUTION,
                  "rm": "im", "accuracy": 0.6}]
    rows.append({"model": "m3", "seed": 0, "eval_set": "ultrafeedback", "category": rw.IN_DISTRIBUTION,
                 "rm": "ex", "accuracy": 0.9})  # no IM counterpart: ignored
    rows += [{"model": "m1", "seed": 0, "eval_set": "rewardbench_code", "category": rw.DOMAIN, "rm": r,
              "accuracy": a} for r, a in (("ex", 0.5), ("im", 0.7))]
    frame = pd.DataFrame(rows)
    per_set = rw.win_rates(frame).set_index("eval_set")
    assert per_set.loc["ultrafeedback", ["ex_wins", "tie", "im_wins"]].tolist() == [25.0, 50.0, 25.0]
    assert per_set.loc["ultrafeedback", "n"] == 4
    assert per_set.loc["rewardbench_code", "im_wins"] == 100.0
    assert list(per_set.index) == ["ultrafeedback", "rewardbench_code"]  # the paper's order
    per_cat = rw.win_rates(frame, group="category").set_index("category")
    assert per_cat.loc[rw.DOMAIN, "im_wins"] == 100.0


def test_training_fit_counts_each_run_once():
    fit = rw.training_fit(_results()).set_index("rm")
    assert fit.loc["ex", "runs"] == 6 and fit.loc["ex", "train_accuracy"] == pytest.approx(0.95)


# ------------------------------------------------------------------------------- token overlap


def test_ngrams_and_containment_on_hand_made_cases():
    assert rw.ngrams([1, 2, 3, 2, 3], 2) == {(1, 2), (2, 3), (3, 2)}
    assert rw.ngrams([1], 2) == set()
    reference = rw.training_ngrams([[1, 2, 3], [7, 8]], 2)  # {(1,2), (2,3), (7,8)}
    assert reference == {(1, 2), (2, 3), (7, 8)}
    assert rw.containment([1, 2, 3], reference, 2) == 1.0
    assert rw.containment([1, 2, 9, 9], reference, 2) == pytest.approx(1 / 3)  # (1,2) of {(1,2),(2,9),(9,9)}
    assert rw.containment([3, 2, 1], reference, 2) == 0.0  # same unigrams, no shared bigram
    assert rw.containment([3, 2, 1], rw.training_ngrams([[1, 2, 3]], 1), 1) == 1.0
    assert math.isnan(rw.containment([5], reference, 2))
    with pytest.raises(ValueError, match="n must be"):
        rw.ngrams([1, 2], 0)


def test_pair_overlap_is_the_mean_of_both_containments():
    reference = {(1, 2), (2, 3)}
    assert rw.pair_overlap([1, 2, 3], [4, 5], reference, 2) == pytest.approx(0.5)
    assert math.isnan(rw.pair_overlap([1, 2, 3], [4], reference, 2))


def test_overlap_table_uses_response_tokens_only():
    tok = load_tokenizer("tiny-random")
    train = [{"prompt": "unrelated words here", "chosen": "the cat sat on the mat", "rejected": "dogs bark"}]
    evals = {"ultrafeedback": [{"prompt": "x", "chosen": "the cat sat on the mat", "rejected": "dogs bark"},
                               {"prompt": "x", "chosen": "unrelated words here", "rejected": "zebra quantum"}]}
    table = rw.overlap_table(tok, train, evals, n=2)
    assert table["overlap"].tolist()[0] == 1.0
    assert table["overlap"].tolist()[1] < 0.5  # the prompt's words do not count as training text


def test_accuracy_by_overlap_buckets_pairs_by_quantiles():
    examples = pd.DataFrame({
        "eval_set": ["a"] * 8, "index": list(range(4)) * 2, "rm": ["ex"] * 4 + ["im"] * 4,
        "overlap": [0.1, 0.2, 0.8, 0.9] * 2,
        "correct": [1, 1, 1, 1, 0, 0, 1, 1.0]})
    out = rw.accuracy_by_overlap(examples, n_buckets=2).set_index(["bucket", "rm"])
    assert out.loc[(0, "ex"), "accuracy"] == 1.0 and out.loc[(0, "im"), "accuracy"] == 0.0
    assert out.loc[(1, "im"), "accuracy"] == 1.0 and out.loc[(1, "im"), "n"] == 2
    assert out.loc[(1, "im"), "overlap_min"] == 0.8
    # all overlaps equal: one bucket; NaN overlaps are left out
    same = examples.assign(overlap=[0.5] * 7 + [float("nan")])
    single = rw.accuracy_by_overlap(same, n_buckets=4)
    assert set(single["bucket"]) == {0} and single["n"].sum() == 7


def test_example_correctness_counts_ties_as_half():
    record = {"evals": {"rewardmath": {"category": rw.DOMAIN, "reward_chosen": [1.0, 0.0, 2.0],
                                       "reward_rejected": [0.0, 1.0, 2.0]}}}
    assert rw.example_correctness(record)["correct"].tolist() == [1.0, 0.0, 0.5]


# ------------------------------------------------------------------------------- end to end (tiny model)


def test_tiny_end_to_end_run_merges_into_tables(data_dir, tmp_path):
    from rmlib.experiment import run_experiment
    from rmlib.results import results_table
    from rmlib.training import TrainConfig

    tok = load_tokenizer("tiny-random")
    loaded = rw.load_setting("chat", tok, max_length=100, n_train=4, n_eval=3, data_dir=data_dir,
                             eval_names=["ultrafeedback", "rewardbench_code"])
    setting = loaded.setting.results_setting
    for rm_type in ("ex", "im"):
        for seed in (0, 1):
            out = run_experiment(setting, "tiny-random", rm_type, loaded.train_rows, loaded.eval_sets(),
                                 TrainConfig(epochs=1, lr=1e-3, batch_size=4, micro_batch_size=2, seed=seed,
                                             progress=False), tmp_path / "results", max_length=100)
            assert not out.reused
    frame = rw.add_rm_column(results_table(tmp_path / "results", setting))
    assert len(frame) == 2 * 2 * 2
    table = rw.paper_style_table(rw.aggregate(frame))
    assert list(table.index) == [rw.IN_DISTRIBUTION, rw.DOMAIN]
    wins = rw.win_rates(frame)
    assert np.allclose(wins[["ex_wins", "tie", "im_wins"]].sum(axis=1), 100.0)
    assert (wins["n"] == 2).all()


def test_select_protocol_matches_values_and_none():
    frame = pd.DataFrame({"epochs": [1, 2, 2], "max_length": [256, None, 256]})
    assert rw.select_protocol(frame, epochs=2, max_length=None).index.tolist() == [1]
    assert rw.select_protocol(frame, epochs=2, max_length=256).index.tolist() == [2]
    assert rw.select_protocol(frame, n_eval_max=None).index.tolist() == [0, 1, 2]
    assert rw.select_protocol(frame, n_eval_max=24).empty
