"""Training a reward model: Adam at a constant learning rate, all parameters trained.

One optimizer step consumes ``batch_size`` preference pairs (the paper: 32), split into micro-batches
of ``micro_batch_size`` pairs whose gradients are accumulated. Each micro-batch's loss is weighted by
its share of the step's pairs, so a step's gradient is exactly that of the mean loss over its pairs,
however the pairs are split into micro-batches or processes. A micro-batch is one forward pass over
``[chosen_1..chosen_m, rejected_1..rejected_m]``.

The loop runs through ``accelerate``: one process on a CPU, or ``accelerate launch`` with DDP on GPUs
(each process takes an interleaved share of every step's pairs; gradients are averaged, hence the
``world_size`` factor in the loss weight). The data order of epoch ``e`` is a permutation drawn from
``seed`` and ``e`` alone.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .formatting import Encoded


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 1e-6
    batch_size: int = 32
    micro_batch_size: int = 8
    seed: int = 0
    max_steps: int | None = None
    shuffle: bool = True
    progress: bool = True

    def __post_init__(self):
        for key in ("epochs", "batch_size", "micro_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{key} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"TrainConfig.lr must be in (0, 1), got {self.lr!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be None or >= 1, got {self.max_steps!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainHistory:
    steps: list[dict] = field(default_factory=list)   # step, epoch, loss, accuracy
    epochs: list[dict] = field(default_factory=list)  # epoch, train_loss, train_accuracy
    seconds: float = 0.0
    tokens: int = 0
    pairs: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    if not shuffle:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def make_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def train(rm, chosen: list[Encoded], rejected: list[Encoded], config: TrainConfig,
          reference_sequences: list[Encoded] = (), accelerator=None, on_step=None) -> TrainHistory:
    """Train ``rm`` in place on the pairs ``(chosen[i], rejected[i])``.

    For an IM-RM, reference log-probs of the training pairs and of ``reference_sequences`` (the
    evaluation sets) are computed first, with the initial weights, and cached."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"need equal, non-zero numbers of chosen and rejected sequences "
                         f"({len(chosen)} vs {len(rejected)})")
    accelerator = accelerator or make_accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    rm.to(accelerator.device)
    if rm.needs_reference():
        rm.cache_reference(list(chosen) + list(rejected) + list(reference_sequences))
        rm.reference_frozen = True
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=config.lr)
    model, optimizer = accelerator.prepare(rm, optimizer)
    model.train()

    n = len(chosen)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    history = TrainHistory()
    bar = tqdm(total=total, desc=f"train {rm.kind.upper()}-RM", disable=not (config.progress and accelerator.is_main_process),
               mininterval=2.0)
    start, step = time.perf_counter(), 0
    for epoch in range(config.epochs):
        order = epoch_order(n, config.seed, epoch, config.shuffle)
        epoch_loss = epoch_correct = epoch_pairs = 0.0
        for step_start in range(0, n, config.batch_size):
            if step >= total:
                break
            step_pairs = order[step_start:step_start + config.batch_size]
            local = step_pairs[rank::world]
            micro = [local[i:i + config.micro_batch_size] for i in range(0, len(local), config.micro_batch_size)]
            step_loss = step_correct = 0.0
            for j, idx in enumerate(micro):
                sequences = [chosen[i] for i in idx] + [rejected[i] for i in idx]
                batch = rm.collate(sequences).to(accelerator.device)
                ref = rm.reference_logps(sequences) if rm.needs_reference() else None
                sync = j == len(micro) - 1
                with accelerator.no_sync(model) if not sync and world > 1 else nullcontext():
                    outputs = model(batch, ref)
                    loss, r_chosen, r_rejected = rm.loss(outputs)
                    accelerator.backward(loss * (len(idx) * world / len(step_pairs)))
                history.tokens += batch.num_tokens
                step_loss += float(loss.detach()) * len(idx)
                step_correct += float(((r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()).sum())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            totals = accelerator.reduce(torch.tensor([step_loss, step_correct, float(len(local))],
                                                     device=accelerator.device), reduction="sum").tolist()
            record = {"step": step, "epoch": epoch, "loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2],
                      "pairs": int(totals[2])}
            history.steps.append(record)
            epoch_loss, epoch_correct, epoch_pairs = epoch_loss + totals[0], epoch_correct + totals[1], epoch_pairs + totals[2]
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}", refresh=False)
            if on_step is not None:
                on_step(record)
        if epoch_pairs:
            history.epochs.append({"epoch": epoch, "train_loss": epoch_loss / epoch_pairs,
                                   "train_accuracy": epoch_correct / epoch_pairs})
        if step >= total:
            break
    bar.close()
    history.seconds = time.perf_counter() - start
    history.pairs = int(sum(r["pairs"] for r in history.steps))
    model.eval()
    return history
