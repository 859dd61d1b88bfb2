"""`python -m rmlib.data fetch`: download through a file:// copy of the official layout, blob-hash checks,
conversion, the data directory's source, the paper profile's row check and a fresh clone's message."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rmlib import data, datafetch
from rmlib import data_manifest as manifest

MIRROR = data.project_root().parent / "shared" / "data"
ROWS = 5  # rows per split of the fixture (the first rows of the mirror's files)


def mirror_rows(rel: str) -> list[dict]:
    with open(MIRROR / rel, encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(ROWS))]


def official_rows(name: str, rows: list[dict]) -> list[dict]:
    """The mirror's rows in the official Arrow folders' columns (the inverse of datafetch.convert_rows)."""
    if name == "ultrafeedback":
        return [{k: r[k] for k in data.FIELDS} for r in rows]
    if name in datafetch.REWRITES:
        return [{"orig_index": r["id"], **{k: v for k, v in r.items() if k != "id"}} for r in rows]
    return rows


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A local copy of the two repositories laid out as <base>/<owner>/<repo>/<commit>/<path>, built with
    datasets' save_to_disk from the mirror's first rows, and the blob hashes of its files (from git itself)."""
    from datasets import Dataset

    if not MIRROR.is_dir():
        pytest.skip("needs the offline mirror ../shared/data to build the fixture")
    base = tmp_path_factory.mktemp("served")
    official = base / manifest.OFFICIAL_REPO / manifest.OFFICIAL_COMMIT
    blobs, expected = {}, {}
    for name, splits in manifest.OFFICIAL_BLOBS.items():
        blobs[name] = {}
        for split, files in splits.items():
            rows = mirror_rows(f"{name}/{split}.jsonl")
            expected[f"{name}/{split}.jsonl"] = rows if name != "ultrafeedback" else \
                [{**r, "id": i} for i, r in enumerate(rows)]  # official UF rows have no id: their position
            folder = official / manifest.OFFICIAL_FOLDERS[name] / split
            Dataset.from_list(official_rows(name, rows)).save_to_disk(str(folder))
            assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # the layout the manifest pins
            blobs[name][split] = {f: git_hash(folder / f) for f in files}
    trait = base / manifest.PERSONA_REPO / manifest.PERSONA_COMMIT / "persona" / "agreeableness.jsonl"
    trait.parent.mkdir(parents=True)
    trait.write_bytes((MIRROR / "persona" / "agreeableness.jsonl").read_bytes())
    return base, blobs, {"agreeableness": git_hash(trait)}, expected


def git_hash(path: Path) -> str:
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_blob_hash_is_gits():
    assert datafetch.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    assert datafetch.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_manifest_pins_every_split():
    assert set(manifest.OFFICIAL_BLOBS) == set(data.DATASETS) == set(datafetch.OFFICIAL_ROWS)
    assert manifest.OFFICIAL_BLOBS["ultrafeedback"]["train"]["data-00000-of-00001.arrow"] == \
        "068de45f39d955fb035465ea9d36220779e1a1e4"
    assert len(manifest.PERSONA_BLOBS) == 135 and "agreeableness" in manifest.PERSONA_BLOBS


def test_fetch_through_file_url_converts_the_rows(served, tmp_path):
    base, blobs, persona_blobs, expected = served
    dest = tmp_path / "data"
    record = datafetch.fetch(dest, base_url=base.as_uri(), blobs=blobs, persona_blobs=persona_blobs, log=lambda _: None)
    for rel, rows in expected.items():
        assert [json.loads(line) for line in open(dest / rel, encoding="utf-8")] == rows, rel
        assert record["files"][rel]["rows"] == ROWS
    assert (dest / "persona" / "agreeableness.jsonl").read_bytes() == \
        (MIRROR / "persona" / "agreeableness.jsonl").read_bytes()
    assert data.load_persona("agreeableness", dest)[0]["question"]
    prefs = data.load_preferences("ultrafeedback_french", "test", data_dir=dest)
    assert prefs.rows == expected["ultrafeedback_french/test.jsonl"]
    assert prefs.source == datafetch.source_of(dest) == \
        "official download (princeton-pli/exrm-vs-imrm@58357b5, anthropics/evals@84fcc67)"
    assert data.load_preferences("rewardmath", "test").source == "local mirror"
    line = datafetch.source_line(["ultrafeedback/train.jsonl", "persona/agreeableness.jsonl"], dest)
    assert line == ("**Data source.** official download (princeton-pli/exrm-vs-imrm@58357b5, anthropics/evals@84fcc67): "
                    "ultrafeedback/train 5 rows (official split: 2,000), persona/agreeableness 1,000 rows.")


def test_corrupted_download_is_refused(served, tmp_path):
    base, blobs, persona_blobs, _ = served
    arrow = manifest.OFFICIAL_FOLDERS["rewardmath"] + "/test/data-00000-of-00001.arrow"
    bad = tmp_path / "bad"
    bad_file = bad / manifest.OFFICIAL_REPO / manifest.OFFICIAL_COMMIT / arrow
    bad_file.parent.mkdir(parents=True)
    good = (base / manifest.OFFICIAL_REPO / manifest.OFFICIAL_COMMIT / arrow).read_bytes()
    bad_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one flipped bit
    expected = blobs["rewardmath"]["test"]["data-00000-of-00001.arrow"]
    one = {"rewardmath": {"test": {"data-00000-of-00001.arrow": expected}}}
    with pytest.raises(datafetch.HashMismatch) as err:
        datafetch.fetch(tmp_path / "out", base_url=bad.as_uri(), blobs=one, traits=(), log=lambda _: None)
    message = str(err.value)
    assert arrow in message and expected in message and datafetch.git_blob_sha1(bad_file.read_bytes()) in message
    assert not (tmp_path / "out" / ".official" / arrow).exists() and not (tmp_path / "out" / "rewardmath").exists()


def test_paper_profile_refuses_fewer_rows():
    with pytest.raises(datafetch.FewerRowsThanPaper, match=r"ultrafeedback/train: 200 rows, the paper's split has "
                                                          r"2,000.*python -m rmlib.data fetch.*allow_fewer_rows"):
        datafetch.check_paper_rows({("ultrafeedback", "train"): 200, ("ultrafeedback", "test"): 200})
    with pytest.raises(datafetch.FewerRowsThanPaper, match="rewardmath/train: 1,000 rows"):
        datafetch.check_paper_rows({("rewardmath", "train"): 1000})
    assert datafetch.check_paper_rows({("ultrafeedback", "train"): 2000, ("rewardmath", "train"): 2000}) == []
    assert datafetch.check_paper_rows({("ultrafeedback", "train"): 200}, allow_fewer=True) == \
        ["ultrafeedback/train: 200 rows, the paper's split has 2,000"]


def test_fresh_clone_is_told_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RMLIB_DATA_DIR", str(tmp_path))
    for call in (lambda: data.load_preferences("ultrafeedback", "train"),
                 lambda: data.load_preferences("ultrafeedback_french", "test", source="local"),
                 lambda: data.load_persona("agreeableness")):
        with pytest.raises(data.DataNotAvailable, match=r"does not exist.*run `python -m rmlib.data fetch"):
            call()
    out = subprocess.run([sys.executable, "-m", "rmlib.data", "fetch", "--help"], capture_output=True, text=True,
                         cwd=data.project_root())
    assert out.returncode == 0 and "--base-url" in out.stdout


def test_gated_filter_tokenizer_names_the_token_step(monkeypatch):
    import transformers

    def gated(*args, **kwargs):
        raise OSError("You are trying to access a gated repo.")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", gated)
    with pytest.raises(data.DataNotAvailable, match=r"gated model: accept its licence at "
                                                    r"https://huggingface.co/meta-llama/Llama-3.2-1B and set HF_TOKEN"
                                                    r".*python -m rmlib.data fetch"):
        data.from_hub("rewardmath", "train")


def test_real_world_shifts_paper_profile_refuses_the_mirrors_200_uf_rows():
    from rmlib.book import real_world_shifts as page
    from rmlib.book import real_world_shifts_views as show

    if not MIRROR.is_dir():
        pytest.skip("needs the offline mirror ../shared/data")
    cfg = page.Config.from_profile("paper", models=["tiny-random"], sweep_models=["tiny-random"], data_dir=str(MIRROR))
    with pytest.raises(datafetch.FewerRowsThanPaper, match="ultrafeedback/train: 200 rows, the paper's split has 2,000"):
        page.load_data(cfg)
    cfg = page.Config.from_profile("paper", models=["tiny-random"], sweep_models=["tiny-random"], data_dir=str(MIRROR),
                                   allow_fewer_rows=True)
    _, report = page.load_data(cfg)
    text = show.data_markdown(cfg, report).data
    assert text.startswith("**Fewer rows than the paper** (allow_fewer_rows): ultrafeedback/train: 200 rows")
    assert "rewardmath" not in text.split("**Data source.**")[0]  # its 2,000 rows are the paper's
    assert text.split("**Data source.**")[1].startswith(" local mirror: ultrafeedback/train 200 rows (official split: "
                                                       "2,000), ultrafeedback/test 200 rows,")
    assert "rewardmath/train 2,000 rows" in text


def test_cli_fetches_only_when_missing_and_checks_the_pinned_hashes(served, tmp_path):
    """`make test`/`make book` run `fetch --if-missing`: nothing happens where the data directory is complete;
    elsewhere the download is checked against the pinned hashes (the fixture's files are not the official ones,
    so the first file, the official UF training Arrow file, is refused and nothing is converted)."""
    base = served[0]
    run = lambda env_dir: subprocess.run([sys.executable, "-m", "rmlib.data", "fetch", "--if-missing", "--base-url",
                                          base.as_uri()], capture_output=True, text=True, cwd=data.project_root(),
                                         env={**os.environ, "RMLIB_DATA_DIR": str(env_dir)})
    out = run(MIRROR)
    assert out.returncode == 0 and "(local mirror); nothing to fetch" in out.stdout
    out = run(tmp_path)
    assert out.returncode == 1 and "data-00000-of-00001.arrow: git blob hash" in out.stderr
    assert "expected 068de45f39d955fb035465ea9d36220779e1a1e4" in out.stderr
    assert not (tmp_path / "ultrafeedback").exists()
