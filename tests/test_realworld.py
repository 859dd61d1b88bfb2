"""Section 5.2 helpers: category mapping, loading with a length cap, aggregation, win-rates, overlap."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from rmlib.tasks import realworld as rw
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
    short = [{"id": i, "prompt": f"q{i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(6)]
    long = [{"id": 6 + i, "prompt": f"long q{i}", "chosen": "word " * 200, "rejected": f"short {i}"} for i in range(2)]
    for name in rw.EVAL_SETS:
        _write(tmp_path, name, "test", short + long)
        train = short + long
        if name == "ultrafeedback":
            train = train + [{"id": 8, "prompt": "p", "chosen": "same", "rejected": "same"}]
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


def test_uf_versions_are_filtered_and_subsampled_together_by_id(data_dir):
    """A UF id enters only if all four versions fit; every version then holds the same ids in the same order."""
    tok = load_tokenizer("tiny-random")
    french = [json.loads(line) for line in (data_dir / "ultrafeedback_french" / "test.jsonl").read_text().splitlines()]
    french[2]["chosen"] = "mot " * 200                        # id 2 too long in French only
    _write(data_dir, "ultrafeedback_french", "test", french)
    para = [json.loads(line) for line in (data_dir / "ultrafeedback_paraphrased" / "test.jsonl").read_text().splitlines()]
    _write(data_dir, "ultrafeedback_paraphrased", "test", [r for r in para if r["id"] != 5])  # id 5 not rewritten
    loaded = rw.load_setting("chat", tok, max_length=100, data_dir=data_dir)
    for name in rw.ALIGNED_SETS:
        assert [r["id"] for r in loaded.eval_rows[name]] == [0, 1, 3, 4]
    assert len(loaded.eval_rows["rewardbench_code"]) == 6    # not aligned: its own 6 short rows
    report = loaded.report.set_index(["data_set", "split"])
    uf, fr, pa = (report.loc[(n, "test")] for n in ("ultrafeedback", "ultrafeedback_french", "ultrafeedback_paraphrased"))
    assert (uf["unmatched"], uf["too_long"], uf["too_long_elsewhere"], uf["used"]) == (1, 2, 1, 4)
    assert (fr["unmatched"], fr["too_long"], fr["too_long_elsewhere"], fr["used"]) == (1, 3, 0, 4)
    assert (pa["available"], pa["unmatched"], pa["too_long"], pa["too_long_elsewhere"]) == (7, 0, 2, 1)
    assert "aligned by id" in uf["why"] and "1 more too long in another version" in uf["why"]
    assert list(loaded.report["data_set"]) == [loaded.setting.train_set] + loaded.setting.eval_sets()
    # a seeded subset is drawn once for all four versions
    sub = rw.load_setting("math", tok, max_length=100, n_eval=2, data_dir=data_dir, seed=3)
    ids = [[r["id"] for r in sub.eval_rows[n]] for n in rw.ALIGNED_SETS]
    assert len(ids[0]) == 2 and all(i == ids[0] for i in ids)
    assert [r["prompt"] for r in sub.eval_rows["ultrafeedback_spanish"]] == [r["prompt"] for r in sub.eval_rows["ultrafeedback"]]


def test_align_rows_needs_ids():
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}]
    with pytest.raises(ValueError, match="need an 'id'"):
        rw.align_rows({"ultrafeedback": rows, "ultrafeedback_french": rows}, [], None, None, 0)
    dup = [{"id": 1, **rows[0]}] * 2
    with pytest.raises(ValueError, match="duplicate ids"):
        rw.align_rows({"ultrafeedback": dup, "ultrafeedback_french": dup}, [], None, None, 0)


def test_math_training_rows_are_the_papers_1000_of_2000(tmp_path):
    """The official PreferenceDataModule: rows[randperm(2000, generator seeded 517)[:1000]]."""
    import torch

    rows = [{"id": i, "prompt": f"problem {i}", "chosen": f"right {i}", "rejected": f"wrong {i}"} for i in range(2000)]
    _write(tmp_path, "rewardmath", "train", rows)
    for name in rw.EVAL_SETS:
        _write(tmp_path, name, "test", rows[:3])
    loaded = rw.load_setting("math", data_dir=tmp_path, eval_names=["rewardmath"])
    expected = torch.randperm(2000, generator=torch.Generator().manual_seed(517))[:1000].tolist()
    assert [r["id"] for r in loaded.train_rows] == expected
    row = loaded.report.set_index("split").loc["train"]
    assert (row["available"], row["paper_sample"], row["used"]) == (2000, 1000, 1000)
    sub = rw.load_setting("math", data_dir=tmp_path, eval_names=["rewardmath"], n_train=10, seed=1)
    assert len(sub.train_rows) == 10 and {r["id"] for r in sub.train_rows} <= set(expected)


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
    # the notebook's statistics path on the stored records
    from rmlib.results import iter_runs

    examples = rw.examples_table(list(iter_runs(tmp_path / "results", setting)))
    comparisons = rw.compare_rms(examples, "chat", n_boot=200)
    assert list(comparisons) == [rw.IN_DISTRIBUTION, rw.DOMAIN]
    assert all(c.interval.n_seeds == 2 and c.interval.n_pairs == 3 for c in comparisons.values())
    assert len(rw.claim_rows(comparisons, "chat")) == 2
    overlap = rw.overlap_table(tok, loaded.train_rows, loaded.eval_rows).assign(setting="chat", model="tiny-random")
    with_overlap = examples.merge(overlap, on=["setting", "model", "eval_set", "index"], validate="many_to_one")
    interval, info = rw.overlap_trend(with_overlap, n_buckets=2, n_boot=200)
    assert rw.overlap_trend_sentence(interval, info).endswith(".")


def test_select_protocol_matches_values_and_none():
    frame = pd.DataFrame({"epochs": [1, 2, 2], "max_length": [256, None, 256]})
    assert rw.select_protocol(frame, epochs=2, max_length=None).index.tolist() == [1]
    assert rw.select_protocol(frame, epochs=2, max_length=256).index.tolist() == [2]
    assert rw.select_protocol(frame, n_eval_max=None).index.tolist() == [0, 1, 2]
    assert rw.select_protocol(frame, n_eval_max=24).empty


# ------------------------------------------------------------------------------- Figure 7: IM-RM without reference


def test_no_ref_rewards_follow_the_official_code_or_the_papers_text(tiny):
    """"no_ref" = beta * ln pi(y|x) (official compute_rewards_with_implicit_rm); "no_ref_unscaled" = ln pi(y|x)."""
    import torch

    from rmlib.rewards import ImplicitRM, sequence_logprobs
    from rmlib.scoring import score
    from rmlib.batching import collate

    lm, tok = tiny
    scaled, unscaled = ImplicitRM(lm, tok, beta=0.01, variant="no_ref"), ImplicitRM(lm, tok, beta=0.01, variant="no_ref_unscaled")
    assert not scaled.needs_reference() and not unscaled.needs_reference()
    seqs = [scaled.encode("What is 2+2?", "4"), scaled.encode("What is 2+2?", "Five, I think.")]
    with torch.no_grad():
        logps = torch.stack([sequence_logprobs(lm, collate([s], tok.pad_token_id))[0] for s in seqs])
    torch.testing.assert_close(score(unscaled, seqs), logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score(scaled, seqs), 0.01 * logps, rtol=1e-5, atol=1e-7)
    # the Bradley-Terry loss sees a 100x smaller logit with the official scaling
    out = torch.stack([logps[0], logps[1]])
    loss_scaled, _, _ = scaled.loss(0.01 * out)
    loss_unscaled, _, _ = unscaled.loss(out)
    margin = float(logps[0] - logps[1])
    assert float(loss_scaled) == pytest.approx(math.log1p(math.exp(-0.01 * margin)), rel=1e-5)
    assert float(loss_unscaled) == pytest.approx(math.log1p(math.exp(-margin)), rel=1e-4)
    assert rw.rm_label("im", "no_ref_unscaled") in rw.RM_LABELS


# ------------------------------------------------------------------------------- statistics glue


def test_paper_direction_follows_table_1_with_a_two_point_tie_rule():
    chat = {c: rw.paper_direction("chat", category=c) for c in rw.CATEGORIES}
    math_ = {c: rw.paper_direction("math", category=c) for c in rw.CATEGORIES}
    assert chat == {rw.IN_DISTRIBUTION: 1, rw.TOKEN_LEVEL: 1, rw.DOMAIN: -1}
    assert math_ == {rw.IN_DISTRIBUTION: 0, rw.TOKEN_LEVEL: 1, rw.DOMAIN: 0}
    assert rw.paper_direction("chat", eval_set="rewardmath") == 0          # 0.594 vs 0.593
    assert rw.paper_direction("chat", eval_set="ultrafeedback_french") == 1  # 0.645 vs 0.616
    assert rw.paper_direction("math", "grm", "im", category=rw.DOMAIN) == 1  # 0.563 vs 0.517
    with pytest.raises(ValueError, match="exactly one"):
        rw.paper_direction("chat")


def _examples(spec):
    """Per-pair rows: spec = {(rm, model, seed, eval_set): list of correctness}."""
    rows = []
    for (rm, model, seed, eval_set), correct in spec.items():
        rows += [{"setting": "chat", "model": model, "seed": seed, "rm": rm, "eval_set": eval_set,
                  "category": rw.get_setting("chat").categories[eval_set], "index": i, "correct": c}
                 for i, c in enumerate(correct)]
    return pd.DataFrame(rows)


def test_paired_correctness_concatenates_data_sets_and_models_per_seed():
    spec = {}
    for seed in (0, 1):
        spec[("ex", "m1", seed, "ultrafeedback_french")] = [1, 1, 0]
        spec[("im", "m1", seed, "ultrafeedback_french")] = [0, 1, 0]
        spec[("ex", "m1", seed, "ultrafeedback_paraphrased")] = [1, seed]
        spec[("im", "m1", seed, "ultrafeedback_paraphrased")] = [0, 0]
    spec[("ex", "m1", 2, "ultrafeedback_french")] = [1, 1, 1]  # seed 2 has no IM-RM: left out
    spec[("ex", "m2", 0, "ultrafeedback_french")] = [0, 0, 0]  # model m2 has no IM-RM: left out
    A, B, info = rw.paired_correctness(_examples(spec))
    assert info["seeds"] == [0, 1] and info["skipped"] == [("ultrafeedback_french", "m2")]
    assert info["cells"] == [("ultrafeedback_paraphrased", "m1"), ("ultrafeedback_french", "m1")]  # EVAL_SETS order
    np.testing.assert_array_equal(A, [[1, 0, 1, 1, 0], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(B, [[0, 0, 0, 1, 0], [0, 0, 0, 1, 0]])
    bad = _examples({("ex", "m1", 0, "ultrafeedback"): [1, 0], ("im", "m1", 0, "ultrafeedback"): [1, 0, 1]})
    with pytest.raises(ValueError, match="same pairs"):
        rw.paired_correctness(bad)
    twice = pd.concat([_examples({("ex", "m1", 0, "ultrafeedback"): [1]})] * 2 + [_examples({("im", "m1", 0, "ultrafeedback"): [1]})])
    with pytest.raises(ValueError, match="several runs"):
        rw.paired_correctness(twice)
    with pytest.raises(ValueError, match="no .* cell"):
        rw.paired_correctness(_examples({("ex", "m1", 0, "ultrafeedback"): [1]}))


def test_compare_rms_gives_verdicts_per_category_and_data_set():
    import rmlib.analysis.stats as st

    n = 60
    spec = {}
    for seed in (0, 1, 2):
        for e in rw.get_setting("chat").eval_sets():
            # EX right on every pair; IM right on a third: EX > IM everywhere
            spec[("ex", "m", seed, e)] = [1] * n
            spec[("im", "m", seed, e)] = [1 if i % 3 == 0 else 0 for i in range(n)]
    per_cat = rw.compare_rms(_examples(spec), "chat", n_boot=500)
    assert list(per_cat) == list(rw.CATEGORIES)
    assert per_cat[rw.IN_DISTRIBUTION].verdict == st.VERDICTS[0]     # paper: EX > IM
    assert per_cat[rw.DOMAIN].verdict == st.VERDICTS[1]              # paper: IM > EX under the chat domain shift
    assert per_cat[rw.TOKEN_LEVEL].interval.n_pairs == 3 * n and per_cat[rw.TOKEN_LEVEL].interval.n_seeds == 3
    assert per_cat[rw.TOKEN_LEVEL].interval.estimate == pytest.approx(2 / 3)
    per_set = rw.compare_rms(_examples(spec), "chat", by="eval_set", n_boot=500)
    assert list(per_set) == rw.get_setting("chat").eval_sets()
    assert per_set["rewardmath"].paper_direction == 0 and per_set["rewardmath"].verdict == st.VERDICTS[1]
    lines = rw.comparison_sentences(per_cat, "chat")
    assert lines[0].startswith("* **chat, in-distribution** (paper: EX-RM 0.752, IM-RM 0.646): EX-RM minus IM-RM")
    rows = rw.claim_rows(per_cat, "chat")
    assert {"claim", "paper", "this build", "verdict", "ci_low", "ci_high"} <= set(rows[0])
    assert rows[1]["paper"] == "+0.063 (0.665 vs 0.602)" and rows[1]["claim"].startswith("chat, token-level shift: EX-RM beats IM-RM")
    # a tie of the paper is "agrees" only when the interval lies within the margin
    tie = {(rm, "m", s, "rewardmath"): [1, 0] * 100 for rm in ("ex", "im") for s in (0, 1, 2)}
    tied = rw.compare_rms(_examples(tie).assign(setting="chat"), "chat", by="eval_set", n_boot=500)
    assert tied["rewardmath"].verdict == st.VERDICTS[0]


def test_examples_table_reads_run_records():
    record = {"run_id": "r1", "spec": {"setting": "realworld-math", "model": "m", "seed": 2, "rm_type": "im",
                                       "variant": "no_ref", "lr": 1e-3, "beta": 0.01},
              "evals": {"rewardmath": {"category": rw.IN_DISTRIBUTION, "reward_chosen": [1.0, 0.0],
                                       "reward_rejected": [0.0, 0.0]}}}
    table = rw.examples_table([record])
    assert table["setting"].unique().tolist() == ["math"] and table["rm"].unique().tolist() == ["im:no_ref"]
    assert table["correct"].tolist() == [1.0, 0.5] and (table["seed"] == 2).all()
    with pytest.raises(ValueError, match="no run records"):
        rw.examples_table([])


def test_overlap_trend_is_a_stratified_paired_bootstrap():
    low = {(rm, "m", s, "ultrafeedback"): ([1] * 20 if rm == "ex" else [0] * 20) for rm in ("ex", "im") for s in (0, 1)}
    ex = _examples(low).assign(overlap=0.1)
    high = _examples({(rm, "m", s, "ultrafeedback"): [1] * 20 for rm in ("ex", "im") for s in (0, 1)})
    high = high.assign(index=high["index"] + 20, overlap=0.9)
    examples = pd.concat([ex, high], ignore_index=True)
    interval, info = rw.overlap_trend(examples, n_buckets=2, n_boot=200)
    assert (info["gap_low"], info["gap_high"], info["n_low"], info["n_high"]) == (1.0, 0.0, 20, 20)
    assert interval.estimate == -1.0 and interval.low == interval.high == -1.0 and interval.n_seeds == 2
    assert "shrinks as overlap grows" in rw.overlap_trend_sentence(interval, info)
    # noise only: the interval covers 0 and the sentence says undecided
    rng = np.random.default_rng(0)
    noisy = examples.assign(correct=rng.integers(0, 2, len(examples)).astype(float))
    interval, info = rw.overlap_trend(noisy, n_buckets=2, n_boot=500)
    assert interval.low < 0 < interval.high and "undecided" in rw.overlap_trend_sentence(interval, info)
    flat, info = rw.overlap_trend(examples.assign(overlap=0.5), n_buckets=4)
    assert flat is None and "one overlap bucket" in rw.overlap_trend_sentence(flat, info)


# ------------------------------------------------------------------------------- overlap caveats and sentences


def test_math_overlap_counts_shared_problems_and_solutions():
    train = [{"prompt": "p1", "chosen": "s1", "rejected": "x"}, {"prompt": "p2", "chosen": "s2", "rejected": "y"}]
    rewardmath = [{"prompt": "p1", "chosen": "s1", "rejected": "new"}, {"prompt": "p2", "chosen": "other", "rejected": "z"},
                  {"prompt": "p3", "chosen": "s3", "rejected": "w"}]
    rb = [{"prompt": "p2", "chosen": "reworded", "rejected": "r"}, {"prompt": "p9", "chosen": "a", "rejected": "b"}]
    counts = rw.math_overlap(train, rewardmath, rb)
    assert counts == {"n_train": 2, "n_rewardmath": 3, "rewardmath_shared": 1, "n_rb_math": 2, "rb_math_shared": 1}
    first, second = rw.math_overlap_sentences(counts, "This build")
    assert first == ("This build: 1 of the 3 RewardMATH test rows share their problem and chosen solution with one of "
                     "the 2 training rows; for these only the rejected solution is new.")
    assert second.startswith("This build: 1 of the 2 RB Math prompts are problems of the 2 RewardMATH training rows; ")


def test_real_mirror_overlap_with_the_papers_1000_training_rows():
    from rmlib.data import default_data_dir

    if not (default_data_dir() / "rewardmath" / "train.jsonl").exists():
        pytest.skip("offline data mirror not present")
    counts = rw.paper_math_overlap()
    assert (counts["n_train"], counts["n_rewardmath"], counts["n_rb_math"]) == (1000, 200, 200)
    assert (counts["rewardmath_shared"], counts["rb_math_shared"]) == (179, 170)


def test_real_mirror_uf_versions_align_at_256_smollm2_tokens():
    from rmlib.data import default_data_dir

    if not (default_data_dir() / "ultrafeedback_french" / "test.jsonl").exists():
        pytest.skip("offline data mirror not present")
    tok = load_tokenizer("smollm2-135m-instruct")
    loaded = rw.load_setting("chat", tok, max_length=256, eval_names=list(rw.ALIGNED_SETS))
    ids = [[r["id"] for r in loaded.eval_rows[n]] for n in rw.ALIGNED_SETS]
    assert len(ids[0]) == 34 and all(i == ids[0] for i in ids)
    report = loaded.report.set_index(["data_set", "split"])
    assert report.loc[("ultrafeedback", "test"), "too_long"] == 145  # 55 of 200 fit alone
    assert report.loc[("ultrafeedback_french", "test"), "too_long"] == 165


def test_data_summary_and_fairness_sentences():
    report = pd.DataFrame([
        {"setting": "chat", "data_set": "ultrafeedback", "label": "UF", "split": "train", "used": 32},
        {"setting": "chat", "data_set": "ultrafeedback", "label": "UF", "split": "test", "used": 34},
        {"setting": "chat", "data_set": "rewardbench_code", "label": "RB: Code", "split": "test", "used": 116}])
    text = rw.data_summary(report, 256)
    assert "at most 256 tokens" in text and "*chat*: 32 training rows (paper: 2000)" in text
    assert "UF 34, RB: Code 116" in text and "aligned by id" in text
    assert "no token cap" in rw.data_summary(report, None)
    fit = pd.DataFrame({"setting_name": ["chat", "chat"], "rm": ["ex", "im"], "train_loss": [0.1, 0.5],
                        "train_accuracy": [0.99, 0.80]})
    sentence = rw.fairness_sentence(fit, "chat")
    assert "gap 0.190" in sentence and "do **not** fit" in sentence and "far from converged" in sentence
    fit["train_accuracy"] = [0.997, 0.996]
    assert "As in the paper" in rw.fairness_sentence(fit, "chat")


def test_overlap_trend_row_and_timing_sentence():
    from rmlib.analysis.stats import Interval

    row = rw.overlap_trend_row("chat", "m", Interval(-0.1, -0.3, 0.1, 0.95, 40, 3), {}, 2)
    assert row["value"] == "-0.100 [-0.300, +0.100]" and "undecided" in row["note"]
    assert rw.overlap_trend_row("chat", "m", None, {}, 2)["value"] == "one bucket only"
    timing = pd.DataFrame({"reused": [False, True], "wall_s": [120.0, 1.0], "cpu_s": [240.0, 1.0],
                           "train_s": [100.0, 0.0], "train_tokens": [5000, 0]})
    text = rw.timing_sentence(timing, 180.0)
    assert text.startswith("This execution took 3.0 min") and "1 of 2 runs" in text and "50 tokens/s" in text
    assert "tokens/s" not in rw.timing_sentence(timing.assign(reused=True), 60.0)
