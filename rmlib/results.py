"""Results files: one JSON document per training run, merged into tidy tables.

A run is identified by ``run_id``, a hash of everything that determines it (setting, model, reward-model
type and variant, seed, hyperparameters, and a fingerprint of the training and evaluation data). Its
file ``<results_dir>/<setting>/<run_id>.json`` holds the parameters, the training history and, per
evaluation set, the metrics and the reward of every example. Files are written atomically (a temporary
file, then a rename), so a killed process never leaves half a result; folders from different machines
merge by copying them together.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

TIDY_COLUMNS = ["setting", "model", "rm_type", "variant", "seed", "lr", "epochs", "batch_size", "beta",
                "eval_set", "category", "accuracy", "margin", "n", "train_loss", "train_accuracy", "run_id"]


def fingerprint(obj) -> str:
    """A short stable hash of any JSON-serializable object."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_json_atomic(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_path(results_dir: str | Path, setting: str, run_id: str) -> Path:
    return Path(results_dir) / setting / f"{run_id}.json"


def load_run(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_runs(results_dir: str | Path, setting: str | None = None):
    root = Path(results_dir)
    pattern = f"{setting}/*.json" if setting else "*/*.json"
    for path in sorted(root.glob(pattern)):
        yield load_run(path)


def tidy(runs) -> pd.DataFrame:
    """One row per (run, evaluation set) with the columns of :data:`TIDY_COLUMNS` (plus ``extra`` keys)."""
    rows = []
    for run in runs:
        spec, history = run["spec"], run.get("history", {})
        last_epoch = history.get("epochs", [{}])[-1] if history.get("epochs") else {}
        for name, ev in run["evals"].items():
            rows.append({**{k: spec.get(k) for k in ("setting", "model", "rm_type", "variant", "seed", "lr",
                                                     "epochs", "batch_size", "beta")},
                         **spec.get("extra", {}),
                         "eval_set": name, "category": ev.get("category"), "accuracy": ev["accuracy"],
                         "margin": ev["margin"], "n": ev["n"], "train_loss": last_epoch.get("train_loss"),
                         "train_accuracy": last_epoch.get("train_accuracy"), "run_id": run["run_id"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    return frame[[c for c in TIDY_COLUMNS if c in frame] + [c for c in frame if c not in TIDY_COLUMNS]]


def results_table(results_dir: str | Path, setting: str | None = None) -> pd.DataFrame:
    """The tidy table of every run stored under ``results_dir`` (optionally one setting)."""
    return tidy(iter_runs(results_dir, setting))


def rewards_table(run: dict) -> pd.DataFrame:
    """Per-example rewards of one run: eval_set, index, reward_chosen, reward_rejected."""
    frames = [pd.DataFrame({"eval_set": name, "index": range(ev["n"]), "reward_chosen": ev["reward_chosen"],
                            "reward_rejected": ev["reward_rejected"]}) for name, ev in run["evals"].items()]
    return pd.concat(frames, ignore_index=True)


def write_summary(results_dir: str | Path, notebook: str, rows: list[dict], profile: str | None = None) -> Path:
    """Key numbers of one executed notebook, for the book's results overview.

    ``rows``: dicts with ``quantity`` (what was measured), ``value`` (the number from this run) and
    optionally ``paper`` (the paper's figure, as text) and ``note``."""
    for row in rows:
        if "quantity" not in row or "value" not in row:
            raise ValueError(f"summary row needs 'quantity' and 'value': {row}")
    path = Path(results_dir) / "summaries" / f"{notebook}.json"
    write_json_atomic(path, {"notebook": notebook, "profile": profile, "rows": rows})
    return path


def read_summaries(results_dir: str | Path) -> list[dict]:
    return [load_run(p) for p in sorted((Path(results_dir) / "summaries").glob("*.json"))]
