"""Preference data in TRL's ``prompt`` / ``chosen`` / ``rejected`` format (plain strings, no template).

Rows come from a local directory of JSON Lines files (``<data_dir>/<name>/<split>.jsonl``) or from the
Hugging Face Hub with the paper's processing (Appendix D.3). The data directory is, in order: the
``data_dir`` argument, ``$RMLIB_DATA_DIR``, or ``../shared/data`` beside the project (the offline
mirror). Nothing is copied into the repository.

Malformed rows -- a missing or non-string field, an empty response, chosen identical to rejected --
raise :class:`MalformedRow` naming the file and line (``on_error="raise"``, the default), or are
dropped and counted (``on_error="drop"``; the count is in the returned :class:`Preferences`).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

FIELDS = ("prompt", "chosen", "rejected")

# name -> (hub dataset, note). All of them exist in the offline mirror as <name>/{train,test}.jsonl.
DATASETS = {
    "ultrafeedback": "HuggingFaceH4/ultrafeedback_binarized",
    "ultrafeedback_paraphrased": None,  # GPT-4.1 rewrites (Razin et al. 2025): mirror only
    "ultrafeedback_french": None,
    "ultrafeedback_spanish": None,
    "rewardmath": "RewardMATH/RewardMATH_pairwise",
    "rewardbench_math": "allenai/reward-bench",
    "rewardbench_code": "allenai/reward-bench",
}
PAPER_SEED = 982
PAPER_MAX_TOKENS = 512
PAPER_FILTER_TOKENIZER = "meta-llama/Llama-3.2-1B"


class MalformedRow(ValueError):
    """A preference row that cannot be used; the message names the file and line."""


class DataNotAvailable(FileNotFoundError):
    """A data set is neither in the data directory nor reachable on the Hub."""


@dataclass
class Preferences:
    """Rows plus where they came from and how many malformed ones were dropped."""

    rows: list[dict]
    origin: str
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    env = os.environ.get("RMLIB_DATA_DIR")
    return Path(env) if env else project_root().parent / "shared" / "data"


def check_row(row, origin: str) -> str | None:
    """The reason a row is malformed, or None if it is a usable preference."""
    if not isinstance(row, dict):
        return f"{origin}: not a JSON object"
    for key in FIELDS:
        if key not in row:
            return f"{origin}: missing field {key!r}"
        if not isinstance(row[key], str):
            return f"{origin}: field {key!r} is {type(row[key]).__name__}, not a string"
    for key in ("chosen", "rejected"):
        if not row[key].strip():
            return f"{origin}: empty {key} response"
    if row["chosen"] == row["rejected"]:
        return f"{origin}: chosen and rejected responses are identical"
    return None


def validate(rows: list, origin: str, on_error: str = "raise", line_numbers: list[int] | None = None) -> Preferences:
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    kept, dropped, notes = [], 0, []
    for i, row in enumerate(rows):
        where = f"{origin} line {line_numbers[i] if line_numbers else i + 1}"
        problem = check_row(row, where)
        if problem is None:
            kept.append(row)
        elif on_error == "raise":
            raise MalformedRow(problem)
        else:
            dropped += 1
            notes.append(problem)
    return Preferences(kept, origin, dropped, notes)


def read_jsonl(path: Path, on_error: str = "raise") -> Preferences:
    rows, lines = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if on_error == "raise":
                    raise MalformedRow(f"{path} line {number}: invalid JSON ({err.msg})") from err
                rows.append(None)
            lines.append(number)
    return validate(rows, str(path), on_error, lines)


def load_preferences(name: str, split: str = "train", data_dir: str | Path | None = None,
                     source: str = "auto", on_error: str = "raise", limit: int | None = None,
                     seed: int = 0) -> Preferences:
    """Load ``name``/``split``. ``source``: "local", "hub", or "auto" (local if present, else hub).

    ``limit`` keeps a seeded random subset of that many rows (the order of the kept rows is preserved)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; accepted: {', '.join(DATASETS)}")
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"source must be 'auto', 'local' or 'hub', got {source!r}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if data_dir is not None and not folder.is_dir():
        raise DataNotAvailable(f"data directory {folder} (given as data_dir) does not exist")
    path = folder / name / f"{split}.jsonl"
    if source == "local" or (source == "auto" and path.exists()):
        if not path.exists():
            raise DataNotAvailable(f"data set {name!r} split {split!r}: {path} does not exist "
                                   f"(data directory {folder}; set RMLIB_DATA_DIR or data_dir)")
        prefs = read_jsonl(path, on_error)
    else:
        prefs = from_hub(name, split, on_error)
    if not prefs.rows:
        raise ValueError(f"data set {name!r} split {split!r} from {prefs.origin} has no usable rows")
    if limit is not None and limit < len(prefs.rows):
        keep = sorted(random.Random(seed).sample(range(len(prefs.rows)), limit))
        prefs.rows = [prefs.rows[i] for i in keep]
    return prefs


def load_persona(trait: str = "agreeableness", data_dir: str | Path | None = None) -> list[dict]:
    """Anthropic model-written-evals persona statements (``persona/<trait>.jsonl``)."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    path = folder / "persona" / f"{trait}.jsonl"
    if not path.exists():
        raise DataNotAvailable(f"persona trait {trait!r}: {path} does not exist (available: "
                               f"{sorted(p.stem for p in (folder / 'persona').glob('*.jsonl'))})")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                row = json.loads(line)
                for key in ("question", "answer_matching_behavior"):
                    if key not in row:
                        raise MalformedRow(f"{path} line {number}: missing field {key!r}")
                rows.append(row)
    return rows


# ---------------------------------------------------------------- the Hub, with the paper's processing

def paper_filter(rows: list[dict], tokenizer, max_tokens: int = PAPER_MAX_TOKENS,
                 drop_translate: bool = False) -> list[dict]:
    """Appendix D.3: drop rows whose prompt or either response exceeds ``max_tokens`` tokens (the paper
    counts with the Llama-3.2-1B tokenizer) and, for UltraFeedback, prompts mentioning translation."""
    kept = []
    for row in rows:
        if drop_translate and ("translate" in row["prompt"].lower() or "translation" in row["prompt"].lower()):
            continue
        if all(len(tokenizer(row[k], add_special_tokens=False)["input_ids"]) <= max_tokens for k in FIELDS):
            kept.append(row)
    return kept


def sample_rows(rows: list[dict], n: int, seed: int = PAPER_SEED) -> list[dict]:
    if n >= len(rows):
        return list(rows)
    return random.Random(seed).sample(rows, n)


def _hub_rows(name: str, split: str) -> list[dict]:
    from datasets import load_dataset

    if name == "ultrafeedback":
        ds = load_dataset(DATASETS[name], split="train_prefs" if split == "train" else "test_prefs")
        return [{"prompt": r["prompt"], "chosen": r["chosen"][-1]["content"],
                 "rejected": r["rejected"][-1]["content"]}
                for r in ds if r["score_chosen"] > r["score_rejected"]]
    if name == "rewardmath":
        ds = load_dataset(DATASETS[name], split="train")
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in ds]
    ds = load_dataset(DATASETS[name], split="filtered")
    wanted = (lambda s: s == "math-prm") if name == "rewardbench_math" else (lambda s: s.startswith("hep"))
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in ds if wanted(r["subset"])]


def from_hub(name: str, split: str, on_error: str = "raise", tokenizer=None) -> Preferences:
    """Download and process a data set as in Appendix D.3 (needs network and the filter tokenizer)."""
    if DATASETS.get(name) is None:
        raise DataNotAvailable(f"data set {name!r} (GPT-4.1 rewrites) is not on the Hub; use the local "
                               "mirror (RMLIB_DATA_DIR) with the files from princeton-pli/exrm-vs-imrm")
    try:
        rows = _hub_rows(name, split)
        if tokenizer is None:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(PAPER_FILTER_TOKENIZER)
    except Exception as err:  # offline: ConnectionError, OSError, HF errors ...
        raise DataNotAvailable(f"data set {name!r} split {split!r} is not in the data directory "
                               f"({default_data_dir()}) and cannot be fetched from the Hub: "
                               f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    rows = paper_filter(rows, tokenizer, drop_translate=name == "ultrafeedback")
    if name == "ultrafeedback":
        rows = sample_rows(rows, 2000 if split == "train" else 200)
    else:  # one seeded shuffle; the first 200 rows are the test set, the next ones the training rows
        rows = sample_rows(rows, len(rows))
        rows = rows[:200] if split == "test" else rows[200:2200]
    return validate(rows, f"hub:{DATASETS[name]}:{split}", on_error)
