"""Preference loading: the offline mirror, malformed rows, the Hub path's processing."""

import json

import pytest

from rmlib import data
from rmlib.data import DataNotAvailable, MalformedRow, load_preferences, paper_filter, read_jsonl


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


GOOD = {"prompt": "p", "chosen": "a", "rejected": "b"}


def test_mirror_loads_every_set():
    for name in data.DATASETS:
        prefs = load_preferences(name, "test", on_error="drop")
        assert len(prefs) == 200 and prefs.dropped == 0
        assert all(isinstance(r[k], str) and r[k] for r in prefs for k in data.FIELDS)


def test_malformed_rows_name_file_and_line(tmp_path):
    cases = [({"prompt": "p", "chosen": "a"}, "missing field 'rejected'"),
             ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "empty chosen"),
             ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical"),
             ({"prompt": 3, "chosen": "a", "rejected": "b"}, "field 'prompt' is int"),
             ("{not json", "invalid JSON")]
    for bad, message in cases:
        path = tmp_path / "uf" / "train.jsonl"
        write_rows(path, [GOOD, GOOD, bad])
        with pytest.raises(MalformedRow, match=f"train.jsonl line 3: .*{message}"):
            read_jsonl(path)
        prefs = read_jsonl(path, on_error="drop")
        assert len(prefs) == 2 and prefs.dropped == 1 and "line 3" in prefs.notes[0]


def test_real_mirror_has_one_identical_pair_in_uf_train():
    with pytest.raises(MalformedRow, match="ultrafeedback/train.jsonl line 63: chosen and rejected responses are identical"):
        load_preferences("ultrafeedback", "train")
    assert load_preferences("ultrafeedback", "train", on_error="drop").dropped == 1


def test_bad_names_and_directories(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown data set 'ultrafedback'; accepted: ultrafeedback"):
        load_preferences("ultrafedback")
    for source in ("local", "auto"):  # an explicit directory that is missing is named, never bypassed
        with pytest.raises(DataNotAvailable, match="nowhere .*does not exist"):
            load_preferences("ultrafeedback", "train", data_dir=tmp_path / "nowhere", source=source)
    monkeypatch.setenv("RMLIB_DATA_DIR", str(tmp_path))
    write_rows(tmp_path / "rewardmath" / "train.jsonl", [GOOD] * 5)
    assert len(load_preferences("rewardmath", "train")) == 5
    with pytest.raises(DataNotAvailable, match="not on the Hub"):
        load_preferences("ultrafeedback_french", "train")  # absent locally, and GPT-4.1 rewrites have no hub copy


def test_limit_is_seeded_and_keeps_order():
    a = load_preferences("rewardmath", "train", limit=20, seed=1).rows
    b = load_preferences("rewardmath", "train", limit=20, seed=1).rows
    c = load_preferences("rewardmath", "train", limit=20, seed=2).rows
    full = load_preferences("rewardmath", "train").rows
    assert a == b and a != c
    positions = [full.index(r) for r in a]
    assert positions == sorted(positions)


def test_paper_filter_on_lengths_and_translate(tiny):
    _, tok = tiny
    rows = [{"prompt": "Translate this to French", "chosen": "a", "rejected": "b"},
            {"prompt": "ok", "chosen": "word " * 600, "rejected": "b"},
            {"prompt": "ok", "chosen": "fine", "rejected": "also fine"}]
    assert paper_filter(rows, tok, max_tokens=512, drop_translate=True) == rows[2:]
    assert paper_filter(rows, tok, max_tokens=512, drop_translate=False) == [rows[0], rows[2]]


def test_hub_processing_of_ultrafeedback(monkeypatch, tiny):
    """The Hub path with a stand-in for datasets.load_dataset (no network here)."""
    _, tok = tiny
    fake = [{"prompt": f"q{i}", "chosen": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"good {i}"}],
             "rejected": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"bad {i}"}],
             "score_chosen": 8.0, "score_rejected": 8.0 if i % 5 == 0 else 3.0} for i in range(50)]
    import datasets
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    prefs = data.from_hub("ultrafeedback", "test", tokenizer=tok)
    assert len(prefs) == 40  # score ties removed
    assert all(r["chosen"].startswith("good") and r["rejected"].startswith("bad") for r in prefs)
