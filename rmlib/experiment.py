"""One training run from start to results file: load the model, build the reward model, encode the data,
train, evaluate every evaluation set, and write the results (see :mod:`rmlib.results`).

A run whose results file already exists (same parameters, same data) is not redone unless ``force``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .evaluation import encode_pairs, evaluate
from .models import load_model
from .results import fingerprint, load_run, run_path, write_json_atomic
from .rewards import build_reward_model
from .training import TrainConfig, train


@dataclass
class EvalSet:
    rows: list[dict]
    category: str = "in-distribution"


@dataclass
class RunOutcome:
    record: dict
    path: Path
    reused: bool
    rm: object = None  # the trained reward model, when the run was executed in this process
    timings: dict = field(default_factory=dict)


def run_experiment(setting: str, model: str, rm_type: str, train_rows: list[dict],
                   eval_sets: dict[str, EvalSet], config: TrainConfig, results_dir: str | Path,
                   beta: float = 0.01, variant: str | None = None, dtype: str = "auto",
                   max_length: int | None = None, use_chat_template: bool | None = None,
                   prepare=None, extra: dict | None = None, force: bool = False,
                   keep_model: bool = False, eval_batch_size: int = 16) -> RunOutcome:
    """Train one reward model and evaluate it; returns the stored record.

    ``prepare(model, tokenizer)`` runs before the reward model is built (e.g. to add special tokens).
    ``extra`` holds parameters that identify the run beyond the standard ones (e.g. ``{"n_vertices": 10}``).
    """
    spec = {"setting": setting, "model": model, "rm_type": rm_type, "variant": variant, "seed": config.seed,
            "lr": config.lr, "epochs": config.epochs, "batch_size": config.batch_size,
            "beta": beta if rm_type == "im" else None, "max_steps": config.max_steps, "dtype": dtype,
            "max_length": max_length, "use_chat_template": use_chat_template, "extra": extra or {}}
    data_id = fingerprint({"train": train_rows, "eval": {k: [v.category, v.rows] for k, v in eval_sets.items()}})
    run_id = fingerprint({"spec": spec, "data": data_id})
    path = run_path(results_dir, setting, run_id)
    if path.exists() and not force and not keep_model:
        return RunOutcome(load_run(path), path, reused=True)

    timings = {}
    t0 = time.perf_counter()
    lm, tokenizer = load_model(model, dtype=dtype, seed=config.seed)
    if prepare is not None:
        prepare(lm, tokenizer)
    torch.manual_seed(config.seed)
    rm = build_reward_model(rm_type, lm, tokenizer, variant=variant, beta=beta, seed=config.seed,
                            max_length=max_length, use_chat_template=use_chat_template)
    spec["variant"] = rm.variant
    chosen, rejected = encode_pairs(rm, train_rows)
    encoded_evals = {name: encode_pairs(rm, ev.rows) for name, ev in eval_sets.items()}
    timings["load_and_encode"] = time.perf_counter() - t0

    reference = [s for c, r in encoded_evals.values() for s in c + r]
    history = train(rm, chosen, rejected, config, reference_sequences=reference)
    timings["train"] = history.seconds

    t1 = time.perf_counter()
    evals = {}
    for name, (c, r) in encoded_evals.items():
        evals[name] = {"category": eval_sets[name].category, **evaluate(rm, c, r, eval_batch_size)}
    timings["evaluate"] = time.perf_counter() - t1
    record = {"run_id": run_id, "spec": spec, "data_fingerprint": data_id, "rmlib_version": __version__,
              "history": history.to_dict(), "evals": evals, "timings": timings,
              "n_train": len(train_rows)}
    write_json_atomic(path, record)
    return RunOutcome(record, path, reused=False, rm=rm if keep_model else None, timings=timings)
