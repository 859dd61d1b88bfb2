"""Evaluation across processes: every process scores a share of the sequences, then all rewards are
gathered by index, so each process ends with every reward exactly once, in the input order.

Distinct sequences are sorted by length and dealt out in turn (process ``r`` takes sorted positions
``r, r + W, r + 2W, ...``), which balances the work. Shares differ by at most one sequence; the shorter
shares are topped up with a copy of one sequence marked with index ``-1`` (so every process runs the same
number of forward passes, which engines that shard the weights -- FSDP, DeepSpeed ZeRO-3 -- need), and
the marked entries are dropped after the gather: the last uneven batch is neither lost nor duplicated
(checked: the gathered indices must be exactly ``0..n-1``). With one process this is
:func:`rmlib.rewards.score`. Scoring runs under the accelerator's autocast
(:func:`rmlib.precision.autocast`), the precision the model was trained in.
"""

from __future__ import annotations

import math

import torch

from .metrics import accuracy, normalized_margin
from .formatting import Encoded
from .precision import autocast
from .rewards import score


def shares(n: int, world: int, lengths=None) -> list[list[int]]:
    """Indices each of ``world`` processes scores (length-sorted, dealt out in turn)."""
    order = sorted(range(n), key=lambda i: lengths[i]) if lengths is not None else list(range(n))
    return [order[r::world] for r in range(world)]


@torch.no_grad()
def _score_through(rm, forward, sequences: list[Encoded], batch_size: int, device) -> torch.Tensor:
    """:func:`rmlib.rewards.score` with the forward pass through ``forward`` (an engine-wrapped ``rm``)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    rewards = torch.empty(len(sequences), dtype=torch.float32)
    was_training = forward.training
    forward.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        chunk = [sequences[i] for i in idx]
        ref = rm.reference_logps(chunk) if rm.needs_reference() else None
        rewards[idx] = rm.rewards_from_outputs(forward(rm.collate(chunk).to(device), ref)).float().cpu()
    forward.train(was_training)
    return rewards


@torch.no_grad()
def score_distributed(rm, sequences: list[Encoded], accelerator=None, batch_size: int = 16,
                      engine_model=None, progress=None) -> torch.Tensor:
    """Rewards of ``sequences`` [n] (fp32, CPU), computed by all processes together; same on every process.

    ``engine_model``: the model as prepared by accelerate, when its weights are sharded (FSDP, ZeRO-3);
    the forward passes then go through it. Otherwise ``rm`` itself is used. ``progress``: a bar advanced
    by this process's scored sequences (see :func:`rmlib.rewards.score`)."""
    with autocast(accelerator):
        return _score_distributed(rm, sequences, accelerator, batch_size, engine_model, progress)


def _score_distributed(rm, sequences, accelerator, batch_size, engine_model, progress=None) -> torch.Tensor:
    if accelerator is None or accelerator.num_processes == 1:
        return score(rm, sequences, batch_size, progress)
    unique = list(dict.fromkeys(sequences))
    if len(unique) < len(sequences):
        position = {s: i for i, s in enumerate(unique)}
        rewards = _score_distributed(rm, unique, accelerator, batch_size, engine_model, progress)
        return rewards[[position[s] for s in sequences]]
    n, world = len(unique), accelerator.num_processes
    mine = shares(n, world, [len(s) for s in unique])[accelerator.process_index]
    width = math.ceil(n / world)
    filler = mine[-1] if mine else 0
    work = [unique[i] for i in mine] + [unique[filler]] * (width - len(mine))
    if engine_model is not None:
        values = _score_through(rm, engine_model, work, batch_size, accelerator.device)
        if progress is not None:
            progress.update(len(work))
    else:
        values = score(rm, work, batch_size, progress)
    index = torch.tensor(mine + [-1] * (width - len(mine)), dtype=torch.long)
    all_index = accelerator.gather(index.to(accelerator.device)).cpu()
    all_values = accelerator.gather(values.to(accelerator.device)).cpu()
    keep = all_index >= 0
    got = all_index[keep]
    if got.numel() != n or not torch.equal(got.sort().values, torch.arange(n)):
        raise RuntimeError(f"distributed scoring gathered {got.numel()} rewards for {n} sequences "
                           f"({n - got.unique().numel()} missing)")
    rewards = torch.empty(n, dtype=torch.float32)
    rewards[got] = all_values[keep]
    return rewards


def evaluate_distributed(rm, chosen: list[Encoded], rejected: list[Encoded], accelerator=None,
                         batch_size: int = 16, engine_model=None, progress=None) -> dict:
    """:func:`rmlib.rewards.evaluate` with the scoring shared by all processes."""
    rewards = score_distributed(rm, list(chosen) + list(rejected), accelerator, batch_size, engine_model,
                                progress)
    n = len(chosen)
    rc, rr = rewards[:n].numpy(), rewards[n:].numpy()
    return {"accuracy": accuracy(rc, rr), "margin": normalized_margin(rc, rr), "n": n,
            "reward_chosen": rc.tolist(), "reward_rejected": rr.tolist()}
