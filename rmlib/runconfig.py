"""One training run's settings, declared once: :class:`RunConfig`.

Every field has its default and its check here (:func:`rmlib.params.param`), and everything else about a
run's parameters comes from it: the run's identity (:meth:`RunConfig.identity`, stored as ``record["spec"]``
and hashed into the run id by :func:`rmlib.experiment.run_experiment`), the identity a checkpoint must agree
on to be resumed (:func:`rmlib.training.train`), the run columns of the tidy results table
(:data:`rmlib.results.TIDY_COLUMNS`) and the command line's keys, defaults and checks (:mod:`rmlib.cli`).

Two kinds of fields: those that decide the numbers (the identity) and :attr:`RunConfig.EXECUTION`, those
that only decide how the work is split and shown (pairs per forward pass, evaluation batch, checkpoint
interval, progress bars): a step's gradient does not depend on them (tested), so they are no part of a run's
identity and a finished run is reused whatever they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from .models import OFFLINE_DEFAULT
from .params import CheckedConfig, param
from .precision import PRECISIONS
from .rewards import RM_TYPES


@dataclass(frozen=True)
class RunConfig(CheckedConfig):
    """A training run: what is trained on which model (``setting`` names the experiment it belongs to: its
    results live in ``<results_dir>/<setting>/``), the optimizer's settings (Adam, constant ``lr``; one step
    = ``batch_size`` pairs; ``epochs`` passes over the training pairs, at most ``max_steps`` steps, in an
    order drawn from ``seed`` when ``shuffle``), the sequences (``max_length`` tokens of prompt + response,
    default the model's context; the chat template) and the numerics. Every field is checked when made (a
    wrong type or a value out of range raises :class:`~rmlib.params.ParameterError`); :meth:`from_dict`
    also refuses a micro-batch larger than the batch, as the command line does."""

    setting: str = param("runs", help="the experiment this run belongs to (its results folder)")
    model: str = param(OFFLINE_DEFAULT, help="a name of rmlib.models.MODEL_NAMES, a hub id or a local folder")
    rm_type: str = param("ex", choices=RM_TYPES, help="ex (linear head), im (DPO-style implicit), grm (generative)")
    variant: str | None = param(None, help="the RM's variant (rmlib.rewards.VARIANTS); None: the paper's standard")
    beta: float = param(0.01, low=1e-12, help="the IM-RM's beta (Eq. 3); no part of other RMs' identity")
    seed: int = param(0, low=0, help="initialization (EX-RM head) and data order")
    lr: float = param(1e-6, low=1e-12, high=0.999999, help="Adam's constant learning rate")
    epochs: int = param(1, low=1)
    batch_size: int = param(32, low=1, help="preference pairs per optimizer step (the paper: 32)")
    max_steps: int | None = param(None, low=1, help="stop after this many optimizer steps (None: all epochs)")
    shuffle: bool = param(True, help="a seeded new order of the training pairs every epoch")
    max_length: int | None = param(None, low=1, help="tokens of prompt + response (None: the model's context)")
    use_chat_template: bool | None = param(None, help="None: the model's chat template where it has one")
    precision: str = param("auto", choices=PRECISIONS, help="rmlib.precision; the identity holds the resolved one")
    max_tokens_per_micro_batch: int | None = param(None, low=1, help="padded tokens of a micro-batch (None: no cap)")
    gradient_checkpointing: bool = param(False, help="recompute decoder activations in the backward pass")
    extra: dict = param({}, help="parameters that identify the run beyond these (e.g. the task's)")
    micro_batch_size: int = param(8, low=1, help="pairs per forward pass (gradients accumulated)")
    eval_batch_size: int = param(16, low=1, help="sequences per evaluation forward pass")
    checkpoint_every: int | None = param(None, low=1, help="optimizer steps between checkpoints (None: none)")
    progress: bool = param(True, help="progress bars on the console")

    EXECUTION: ClassVar[tuple[str, ...]] = ("micro_batch_size", "eval_batch_size", "checkpoint_every", "progress")
    COLUMNS: ClassVar[tuple[str, ...]] = ("setting", "model", "rm_type", "variant", "seed", "lr", "epochs",
                                          "batch_size", "beta", "precision")  # shown in results tables

    def __post_init__(self):
        schema = self.schema()
        for f in fields(self):  # checked values (an int lr becomes a float: the same run id either way)
            object.__setattr__(self, f.name, schema[f.name].check(f.name, getattr(self, f.name)))

    def identity(self) -> dict:
        """Every field that decides the numbers (all but :attr:`EXECUTION`): the run's spec. ``beta`` is
        None except for an IM-RM."""
        spec = {k: v for k, v in asdict(self).items() if k not in self.EXECUTION}
        spec["beta"] = self.beta if self.rm_type == "im" else None
        return spec

    def checkpoint_identity(self, rm_type: str, variant: str, n_pairs: int, mixed_precision: str) -> dict:
        """What a checkpoint must agree on to be resumed: the :meth:`identity` with the reward model actually
        trained (its type and resolved variant), the number of training pairs and the accelerator's mixed
        precision, as the checkpoint stores it (JSON)."""
        ident = {**self.identity(), "rm_type": rm_type, "variant": variant, "n_pairs": n_pairs,
                 "mixed_precision": mixed_precision}
        return json.loads(json.dumps(ident, default=str))

