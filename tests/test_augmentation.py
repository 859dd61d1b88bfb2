"""Notebook 05: its data (rmlib.tasks.augmentation: rows, schedules) and its effects
(rmlib.analysis.augmentation_effects: statistics, verdicts, claims).
The page's sentences, tables, figures and Config: tests/test_page_augmentation.py."""

import json

import numpy as np
import pandas as pd
import pytest

from rmlib.analysis import augmentation_effects as fx
from rmlib.tasks import augmentation as aug
from rmlib.tasks import realworld as rw
from rmlib.analysis import stats
from rmlib.data import MalformedRow
from rmlib.models import load_tokenizer

# ------------------------------------------------------------------------------------------- data

def _write(folder, name, split, rows, raw_lines=()):
    path = folder / name / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(raw_lines))
    return path


def _originals():
    rows = [{"id": 10 + i, "prompt": f"q{i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"}
            for i in range(6)]
    rows.append({"id": 16, "prompt": "long original", "chosen": "word " * 200, "rejected": "short"})
    rows.append({"id": 17, "prompt": "long paraphrase", "chosen": "fine", "rejected": "also fine"})
    rows.append({"id": 18, "prompt": "p", "chosen": "same", "rejected": "same"})  # malformed: dropped
    return rows


def _paraphrase(row):
    chosen = "word " * 200 if row["prompt"] == "long paraphrase" else f"fine reply {row['id']}"
    return {"id": row["id"], "prompt": row["prompt"], "chosen": chosen, "rejected": f"poor reply {row['id']}",
            "orig_chosen": row["chosen"], "orig_rejected": row["rejected"]}


@pytest.fixture
def data_dir(tmp_path):
    short = [{"id": i, "prompt": f"t{i}", "chosen": f"right {i}", "rejected": f"wrong {i}"} for i in range(5)]
    for name in rw.EVAL_SETS:
        _write(tmp_path, name, "test", short)
    _write(tmp_path, "ultrafeedback", "train", _originals())
    paraphrased = [_paraphrase(r) for r in _originals()]
    paraphrased[-1]["chosen"] = paraphrased[-1]["rejected"]  # the malformed original's paraphrase: ignored
    _write(tmp_path, aug.PARAPHRASED, "train", paraphrased)
    return tmp_path


def test_pairs_hold_each_prompt_in_both_forms_and_long_pairs_drop_together(data_dir):
    tok = load_tokenizer("tiny-random")
    data = aug.load_augmentation(tok, max_length=100, data_dir=data_dir)
    assert [r["id"] for r in data.originals] == [10, 11, 12, 13, 14, 15]
    assert [r["id"] for r in data.paraphrases] == [10, 11, 12, 13, 14, 15]
    for original, paraphrase in zip(data.originals, data.paraphrases):
        assert original["prompt"] == paraphrase["prompt"] and original["chosen"] != paraphrase["chosen"]
        assert paraphrase["chosen"] == f"fine reply {original['id']}"
    assert data.counts == {"usable": 8, "too_long_original": 1, "too_long_paraphrase_only": 1, "fit": 6, "used": 6}
    # notebook 04's rows keep id 17 (its original fits): not the same rows, so 'original' is not reused
    assert 17 in [r["id"] for r in data.loaded.train_rows] and not data.same_rows_as_realworld
    rows = aug.augmented_rows(data.originals, data.paraphrases)
    assert len(rows) == 12 and rows[0] is data.originals[0] and rows[1] is data.paraphrases[0]


def test_subsample_is_shared_and_equals_notebook_04_when_all_paraphrases_fit(data_dir):
    tok = load_tokenizer("tiny-random")
    data = aug.load_augmentation(tok, max_length=1000, n_train=3, data_dir=data_dir, seed=1)
    assert [r["id"] for r in data.originals] == [r["id"] for r in data.paraphrases]
    assert len(data.originals) == 3 and data.same_rows_as_realworld
    assert data.originals == data.loaded.train_rows


def test_conditions_equalize_steps_and_keep_notebook_04_identity(data_dir):
    tok = load_tokenizer("tiny-random")
    data = aug.load_augmentation(tok, max_length=1000, n_train=4, data_dir=data_dir)
    protocol = {"epochs": 2, "batch_size": 2}
    original, steps, epochs, placebo = data.conditions(2, 2, protocol)
    assert original.results_setting == "realworld-chat" and original.extra == protocol  # notebook 04's run ids
    assert steps.results_setting == epochs.results_setting == aug.RESULTS_SETTING
    assert steps.extra["condition"] == aug.SAME_STEPS
    assert len(original.train_rows) == 4 and len(steps.train_rows) == len(epochs.train_rows) == 8
    assert aug.total_steps(4, 2, original.epochs) == aug.total_steps(8, 2, steps.epochs, steps.max_steps) == 4
    assert aug.total_steps(8, 2, epochs.epochs) == 8
    # the placebo: the original rows in another order, the original's schedule, stored apart
    assert sorted(r["id"] for r in placebo.train_rows) == sorted(r["id"] for r in original.train_rows)
    assert placebo.train_rows != original.train_rows and (placebo.epochs, placebo.max_steps) == (2, None)
    assert placebo.results_setting == aug.RESULTS_SETTING and placebo.extra["condition"] == aug.PLACEBO
    # when the rows are not notebook 04's, 'original' is stored apart, marked with its condition
    other = aug.load_augmentation(tok, max_length=100, data_dir=data_dir).conditions(2, 2, protocol)[0]
    assert other.results_setting == aug.RESULTS_SETTING and other.extra["condition"] == aug.ORIGINAL


@pytest.mark.parametrize("n, m, batch, epochs, expected", [
    (32, 64, 8, 2, (1, None)),      # cpu profile: half the epochs
    (199, 398, 32, 5, (3, 35)),     # paper profile: 7 x 5 = 35 steps; 13 per augmented epoch -> 3 epochs cut
    (5, 10, 4, 1, (1, 2)),          # 2 steps; 3 per augmented epoch -> cut at 2
])
def test_same_steps_schedule(n, m, batch, epochs, expected):
    assert aug.same_steps_schedule(n, m, batch, epochs) == expected
    aug_epochs, max_steps = expected
    assert aug.total_steps(m, batch, aug_epochs, max_steps) == aug.total_steps(n, batch, epochs)
    with pytest.raises(ValueError, match="batch_size"):
        aug.same_steps_schedule(n, m, 0, epochs)


def test_bad_paraphrase_rows_are_named_by_file_and_line(data_dir):
    tok = load_tokenizer("tiny-random")
    path = data_dir / aug.PARAPHRASED / "train.jsonl"
    good = path.read_text().splitlines()
    for i, mutate, message in [
        (2, lambda r: {**r, "rejected": r["chosen"]}, "line 3: chosen and rejected responses are identical"),
        (0, lambda r: {**r, "prompt": "another prompt"}, "line 1: id 10 does not paraphrase"),
        (4, lambda r: {k: v for k, v in r.items() if k != "orig_rejected"}, "line 5: missing field 'orig_rejected'"),
    ]:
        lines = list(good)
        lines[i] = json.dumps(mutate(json.loads(lines[i])))
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(MalformedRow, match=f"{path}.*{message}"):
            aug.load_augmentation(tok, max_length=100, data_dir=data_dir)
    path.write_text("\n".join(good[:1] + ["{not json"] + good[2:]) + "\n")
    with pytest.raises(MalformedRow, match="line 2: invalid JSON"):
        aug.load_augmentation(tok, max_length=100, data_dir=data_dir)
    path.write_text("\n".join(good[1:]) + "\n")  # id 10 has no paraphrase: not a training prompt here
    # (the official split: 2,000 UF training rows, 200 of them paraphrased)
    data = aug.load_augmentation(tok, max_length=100, data_dir=data_dir)
    assert [r["id"] for r in data.originals] == [11, 12, 13, 14, 15] and data.counts["usable"] == 7
    path.unlink()
    with pytest.raises(FileNotFoundError, match="offline mirror"):
        aug.load_augmentation(tok, max_length=100, data_dir=data_dir)


@pytest.mark.mirror_rows
def test_real_mirror_pairs_at_256_smollm2_tokens_are_notebook_04s_rows():
    """The cpu profile: all 48 UF training rows that fit 256 tokens have a fitting paraphrase, so the
    'original' condition is notebook 04's 32 rows and its runs are reused."""
    tok = load_tokenizer("smollm2-135m-instruct")
    data = aug.load_augmentation(tok, max_length=256, n_train=32, n_eval=20, seed=0)
    assert data.counts["usable"] == 199 and data.counts["too_long_paraphrase_only"] == 0
    assert data.counts["fit"] == 48 and data.same_rows_as_realworld and len(data.paraphrases) == 32


# ------------------------------------------------------------------------------------ statistics

def _examples(correct: dict, n_pairs: int, seeds=(0,)):
    """A tidy examples table from {(condition, rm): per-pair correctness}, pairs split over two UF sets."""
    rows = []
    for (condition, rm), values in correct.items():
        for seed in seeds:
            for i, v in enumerate(values):
                eval_set = "ultrafeedback_french" if i < n_pairs // 2 else "ultrafeedback_spanish"
                rows.append({"condition": condition, "rm": rm, "seed": seed, "model": "m", "eval_set": eval_set,
                             "index": i % (n_pairs // 2), "correct": float(v)})
    return pd.DataFrame(rows)


def test_gap_change_verdicts_and_claims_on_constructed_runs():
    n = 200
    ex = np.ones(n)
    im_before = np.r_[np.ones(60), np.zeros(140)]        # gap +0.70
    im_after = np.r_[np.ones(160), np.zeros(40)]         # gap +0.20: clearly narrower
    examples = _examples({(aug.ORIGINAL, "ex"): ex, (aug.ORIGINAL, "im"): im_before,
                          (aug.SAME_STEPS, "ex"): ex, (aug.SAME_STEPS, "im"): im_after}, n)
    [change] = fx.gap_changes(examples, treated=(aug.SAME_STEPS,), groups=(fx.TRANSLATION,), n_boot=2000)
    narrows, not_narrow, _ = fx.GAP_VERDICTS
    assert change.verdict == narrows and change.before == pytest.approx(0.7)
    assert change.interval.n_clusters == 100  # a prompt's French and Spanish versions are one cluster
    assert change.after == pytest.approx(0.2) and change.interval.estimate == pytest.approx(-0.5)
    assert change.test.wins_b == 100 and change.test.wins_a == 0
    [cost_ex, cost_im] = fx.accuracy_changes(examples, treated=(aug.SAME_STEPS,), groups=(fx.TRANSLATION,),
                                              n_boot=2000)
    assert cost_im.verdict == fx.ACCURACY_VERDICTS[0] and cost_ex.verdict == fx.ACCURACY_VERDICTS[3]  # unchanged
    assert (cost_ex.before, cost_ex.after) == (1.0, 1.0) and cost_ex.mdd > 0
    # the reverse: augmentation widens the gap
    swapped = _examples({(aug.ORIGINAL, "ex"): ex, (aug.ORIGINAL, "im"): im_after,
                         (aug.SAME_STEPS, "ex"): ex, (aug.SAME_STEPS, "im"): im_before}, n)
    [wider] = fx.gap_changes(swapped, treated=(aug.SAME_STEPS,), groups=(fx.TRANSLATION,), n_boot=2000)
    assert wider.verdict == not_narrow
    rows = fx.claim_rows([change, wider], [cost_im])
    assert all(r["paper"] == "not in the paper (the book's own question)" for r in rows)
    assert rows[0]["this build"].startswith("-0.50 [") and "(same steps) narrows" in rows[0]["claim"]
    assert rows[0]["verdict"] == narrows and rows[1]["verdict"] == not_narrow
    assert len(rows) == 2  # a cost under translation is no claim row; the in-distribution cost is
    [cost_row] = fx.claim_rows([], [in_distribution(cost_im)])
    assert cost_row["verdict"] == fx.ACCURACY_VERDICTS[0] and "in-distribution accuracy" in cost_row["claim"]


def in_distribution(change):
    return fx.Change(**{**change.__dict__, "group": fx.IN_DISTRIBUTION})


def test_undecided_gap_change_states_the_detectable_difference():
    n = 20
    ex = np.r_[np.ones(12), np.zeros(8)]
    im_before = np.r_[np.ones(10), np.zeros(10)]
    im_after = np.r_[np.ones(11), np.zeros(9)]
    examples = _examples({(aug.ORIGINAL, "ex"): ex, (aug.ORIGINAL, "im"): im_before,
                          (aug.SAME_EPOCHS, "ex"): ex, (aug.SAME_EPOCHS, "im"): im_after}, n)
    [change] = fx.gap_changes(examples, treated=(aug.SAME_EPOCHS,), groups=(fx.TRANSLATION,), n_boot=2000)
    assert change.verdict == "undecided at this size"
    assert change.mdd > abs(change.interval.estimate)
    [row] = fx.claim_rows([change], [])
    assert row["verdict"] == f"undecided at this size (smallest detectable difference {change.mdd:.2f})"


def test_gap_verdict_has_a_direction_fixed_in_advance():
    def iv(low, high):
        return stats.Interval((low + high) / 2, low, high, 0.95, 10, 1)
    narrows, not_narrow, undecided = fx.GAP_VERDICTS
    assert fx.gap_verdict(iv(-0.3, -0.1)) == narrows  # whatever side the baseline gap is on
    assert fx.gap_verdict(iv(-0.3, -0.04)) == undecided  # not beyond the margin
    assert fx.gap_verdict(iv(0.1, 0.3)) == not_narrow and fx.gap_verdict(iv(-0.04, 0.02)) == not_narrow
    assert fx.gap_verdict(iv(-0.1, 0.3)) == undecided
    assert fx.gap_verdict(iv(-0.3, -0.1), test=stats.SignTest(2, 0, 0, 0.5)) == undecided  # the exact test must reject


def test_correctness_refuses_arms_that_scored_other_pairs():
    examples = _examples({(aug.ORIGINAL, "ex"): np.ones(4), (aug.ORIGINAL, "im"): np.ones(4)}, 4)
    examples.loc[examples["rm"] == "im", "index"] += 5
    with pytest.raises(ValueError, match="did not score the same pairs"):
        fx.correctness(examples, [(aug.ORIGINAL, "ex"), (aug.ORIGINAL, "im")], fx.GROUPS[fx.TRANSLATION])
    with pytest.raises(ValueError, match="no 'ex' runs of condition 'augmented_same_steps'"):
        fx.correctness(examples, [(aug.SAME_STEPS, "ex")], fx.GROUPS[fx.TRANSLATION])


def test_accuracy_table_pools_a_groups_sets_per_seed_then_averages_seeds():
    n = 4  # two pairs in UF French, two in UF Spanish
    examples = _examples({(aug.ORIGINAL, "im"): [1, 0, 0, 0], (aug.SAME_STEPS, "im"): [1, 1, 1, 0]}, n, seeds=(0, 1))
    examples.loc[(examples["seed"] == 1) & (examples["condition"] == aug.ORIGINAL), "correct"] = 0.5  # ties
    table = fx.accuracy_table(examples)
    assert list(table["group"]) == [fx.TRANSLATION] * 2 and list(table["condition"]) == [aug.ORIGINAL, aug.SAME_STEPS]
    original, steps = table.to_dict("records")
    assert original["accuracy"] == pytest.approx((0.25 + 0.5) / 2) and original["std"] == pytest.approx(0.125)
    assert steps["accuracy"] == pytest.approx(0.75) and steps["std"] == 0
    assert original["n_pairs"] == 4 and original["n_seeds"] == 2


def test_groups_cover_notebook_04s_test_sets_once_and_signed_never_shows_minus_zero():
    assert sorted(s for sets in fx.GROUPS.values() for s in sets) == sorted(rw.EVAL_SETS)
    assert fx.group_of("ultrafeedback_spanish") == fx.TRANSLATION and fx.group_of("rewardmath") == fx.DOMAIN
    with pytest.raises(ValueError, match="'mmlu' is in no group"):
        fx.group_of("mmlu")
    assert (fx.signed(0.123), fx.signed(-0.001), fx.signed(-0.25)) == ("+0.12", "+0.00", "-0.25")
    with pytest.raises(ValueError, match="no run records"):
        fx.examples_table({aug.ORIGINAL: []})


def test_change_row_states_interval_and_measure():
    iv = stats.Interval(-0.2, -0.3, -0.1, 0.95, 40, 1)
    test = stats.mcnemar_exact(np.r_[np.zeros(8), np.ones(2)], np.ones(10))
    change = fx.Change(fx.TRANSLATION, aug.SAME_STEPS, "im", 0.6, 0.4, iv, test, 0.27, "lowers accuracy")
    row = change.as_row()
    assert row["measure"] == "IM-RM accuracy" and row["condition"] == "augmented, same steps"
    assert row["95% CI"] == "[-0.30, -0.10]" and (row["ci_low"], row["ci_high"], row["n_pairs"]) == (-0.3, -0.1, 40)
    assert fx.Change(**{**change.__dict__, "what": "gap"}).as_row()["measure"] == "EX - IM gap"
