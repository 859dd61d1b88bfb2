"""Training checkpoints that survive a kill at any moment.

A run's checkpoints live in one folder (``<results_dir>/<setting>/<run_id>.ckpt/``, see
:func:`rmlib.experiment.run_experiment`), one sub-folder per saved step::

    step-000040/
        model.bin, optimizer.bin, random_states_<rank>.pkl   -- accelerate's save_state: weights (LM and
                                                                 EX-RM head), Adam moments, RNG states of
                                                                 python random, numpy and torch per process
        trainer_state.json                                   -- step, history so far, running epoch sums,
                                                                 the configuration that wrote it
        reference.pt                                         -- IM-RM only: its reference log-probs (data:
                                                                 ids, response start, ln pi_ref(y|x))

A step is written into ``.step-000040.tmp/`` and renamed to ``step-000040/`` only when every file is on
disk, so a folder without the ``.tmp`` suffix is always complete; a process killed while writing leaves a
``.tmp`` folder that the next run deletes. Once a step folder is complete the older ones are removed.

Using accelerate's ``save_state`` / ``load_state`` keeps the same code right for one process, DDP, FSDP and
DeepSpeed (each engine saves its own sharded model and optimizer). The data order needs no saving: the
order of epoch ``e`` is a function of ``(seed, e)`` (:func:`rmlib.training.epoch_order`), so the step
number says where to continue.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .formatting import Encoded

STATE_FILE = "trainer_state.json"
REFERENCE_FILE = "reference.pt"
PREFIX = "step-"


class CheckpointMismatch(RuntimeError):
    """A checkpoint folder holds the state of a different training run."""


def step_folder(folder: Path, step: int) -> Path:
    return Path(folder) / f"{PREFIX}{step:06d}"


def latest_checkpoint(folder: str | Path | None) -> Path | None:
    """The complete checkpoint with the highest step in ``folder`` (None if there is none)."""
    if folder is None or not Path(folder).is_dir():
        return None
    done = [p for p in Path(folder).iterdir()
            if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
            and (p / STATE_FILE).exists()]
    return max(done, key=lambda p: int(p.name[len(PREFIX):]), default=None)


def remove_incomplete(folder: str | Path) -> list[Path]:
    """Delete ``.tmp`` folders left by a process killed while saving; returns what was removed."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f".{PREFIX}*.tmp")] if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(accelerator, folder: str | Path, step: int, state: dict,
                    ref_logps: dict[Encoded, float] | None = None) -> Path:
    """Save model, optimizer and RNG states (``accelerator.save_state``) plus ``state`` (JSON) and the
    IM-RM's reference log-probs (data: token ids, response start, ln pi_ref(y|x) of every sequence) into
    ``folder/step-<step>``, atomically. Call on every process."""
    folder = Path(folder)
    final = step_folder(folder, step)
    tmp = folder / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # safe_serialization=False: safetensors refuses tied weights (input and output embeddings).
    accelerator.save_state(str(tmp), safe_serialization=False)
    if accelerator.is_main_process:
        if ref_logps is not None:
            torch.save([(list(s.input_ids), s.response_start, logp) for s, logp in ref_logps.items()],
                       tmp / REFERENCE_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")  # written last: marks completeness
        _fsync_tree(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)  # only if a run re-saves a step it already saved
        os.replace(tmp, final)
        for old in folder.iterdir():
            if old != final and old.is_dir() and old.name.startswith(PREFIX):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_state(path: str | Path) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))


def load_ref_logps(path: str | Path) -> dict[Encoded, float]:
    """The IM-RM's reference log-probs saved with a checkpoint (ln pi_ref(y|x) of the initial model)."""
    file = Path(path) / REFERENCE_FILE
    if not file.exists():
        raise CheckpointMismatch(f"checkpoint {path} has no {REFERENCE_FILE}: it was not written by an "
                                 "IM-RM run; delete the folder to start afresh")
    items = torch.load(file, weights_only=True)
    return {Encoded(tuple(ids), start): float(logp) for ids, start, logp in items}


def load_checkpoint(accelerator, path: str | Path, expected: dict | None = None) -> dict:
    """Restore model, optimizer and RNG states from ``path`` (after ``accelerator.prepare``); return the
    trainer state. ``expected``: identity fields (seed, lr, ...) that must match the saved ones."""
    state = read_state(path)
    if expected is not None:
        saved = state.get("identity", {})
        diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
        if diff:
            described = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CheckpointMismatch(f"checkpoint {path} belongs to a different run ({described}); "
                                     "delete it or train into another folder")
    accelerator.load_state(str(path))
    return state


def init_optimizer_state(optimizer) -> None:
    """Give a fresh optimizer its state tensors: one step with zero gradients at learning rate 0 (Adam's
    update is then exactly 0: the weights do not move); the loaded checkpoint then overwrites them.

    A sharded FSDP checkpoint is read with ``torch.distributed.checkpoint``, which fills only the tensors of
    the state dict it is given; for FSDP1 accelerate (1.15) gives it ``FSDP.optim_state_dict`` of the
    optimizer as it is, which for a fresh optimizer holds no state: the Adam moments and step counts of the
    checkpoint were silently not loaded (the resumed run then differed from an uninterrupted one). FSDP2's
    path does this initialisation itself (``torch.distributed.checkpoint.state_dict``). An optimizer that
    already has a state, or gradients, is left as it is."""
    if optimizer.state or any(p.grad is not None for g in optimizer.param_groups for p in g["params"]):
        return
    lrs = []
    for group in optimizer.param_groups:
        lrs.append(group["lr"])
        group["lr"] = 0.0
        for p in group["params"]:
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def remove_checkpoints(folder: str | Path) -> None:
    """Delete a run's checkpoint folder (after its results file has been written)."""
    shutil.rmtree(folder, ignore_errors=True)
