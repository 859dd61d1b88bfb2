"""Numerical precision of training and evaluation: ``"fp32"`` or ``"bf16-mixed"``, and ``"auto"`` to pick one.

Rules:

* Weights are always loaded and stepped in fp32 (the "master weights"). ``"bf16-mixed"`` runs the forward
  and backward passes under bf16 autocast -- accelerate's ``mixed_precision="bf16"``, what TRL's
  ``bf16=True`` does. Rewards, log-probs and the EX-RM head stay fp32 in either mode (:mod:`rmlib.rewards`).
* Pure bf16/fp16 weights stepped by a plain optimizer are refused (:func:`refuse_low_precision_weights`):
  Adam's updates (about ``lr`` in size) are below the resolution of bf16 weights, so they barely train.
* ``"auto"`` is bf16-mixed on a CUDA GPU that supports bf16. On a CPU it is bf16-mixed only when a short
  measured probe (:func:`probe_cpu`: a 1024^3 matmul timed in fp32 and in bf16) finds bf16 at least
  :data:`CPU_SPEEDUP_NEEDED` times faster than fp32; CPU flags are never read. The probe runs once per
  machine (CPU model, torch version, thread count) and is cached in the rmlib cache folder.
* The IM-RM's reference log-probs and every evaluation pass run under the same autocast as training
  (:func:`autocast`), so the initial implicit reward is ~0 in either mode.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16-mixed")
ACCELERATE_NAMES = {"fp32": "no", "bf16-mixed": "bf16"}  # rmlib mode -> accelerate's mixed_precision
CPU_SPEEDUP_NEEDED = 1.5  # bf16 matmul throughput / fp32 throughput needed for "auto" to pick bf16-mixed
PROBE_FILE = "precision_probe.json"


class PrecisionError(ValueError):
    """An unknown or refused precision, or an accelerate setting that disagrees with the resolved one."""


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``mode`` is "fp32" or "bf16-mixed"; ``reason`` says why; ``probe`` holds the
    CPU probe's figures when it decided."""

    mode: str
    reason: str
    requested: str = "auto"
    probe: dict | None = field(default=None, compare=False)

    @property
    def accelerate(self) -> str:
        """The value of accelerate's ``mixed_precision`` for this mode."""
        return ACCELERATE_NAMES[self.mode]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"precision {self.mode} (requested {self.requested}: {self.reason})"


def smallest_update_note(dtype: torch.dtype = torch.bfloat16, lr: float = 1e-6, weight: float = 0.02) -> str:
    """Why a plain optimizer cannot train weights stored in ``dtype``, with the numbers."""
    relative = torch.finfo(dtype).eps / 2  # bf16: 2^-8 = 0.0039; fp16: 2^-11
    bits = round(-math.log2(relative))
    name = str(dtype).replace("torch.", "")
    return (f"{name} weights stepped by a plain optimizer barely train: {name} keeps {bits} significant bits, "
            f"so the smallest relative update it represents is about 2^-{bits} = {relative:.2g} of the weight "
            f"(smaller updates round back to the old value). Adam's updates are about lr in size: at lr {lr:g} "
            f"a weight of magnitude {weight:g} needs an update >= {relative * weight:.2g} to move, "
            f"{relative * weight / lr:.0f}x the step. Use precision 'bf16-mixed' instead (fp32 master weights, "
            "bf16 autocast compute, as TRL's bf16=True) or 'fp32'.")


def refuse_low_precision_weights(parameters, lr: float) -> None:
    """Raise :class:`PrecisionError` if a trainable parameter is not fp32 (see :func:`smallest_update_note`)."""
    low = {p.dtype for p in parameters if p.requires_grad and p.dtype != torch.float32}
    if low:
        dtype = sorted(low, key=str)[0]
        raise PrecisionError(f"refusing to train {dtype} parameters: {smallest_update_note(dtype, lr)}")


def precision_from_dtype(dtype: str | None, precision: str | None = None) -> str:
    """The precision that replaces the retired ``dtype`` setting: "float32" -> "fp32", "auto" -> "auto";
    "bfloat16"/"float16" are refused (pure low-precision weights do not train, see
    :func:`smallest_update_note`). ``precision``: a precision also given, which must agree."""
    if dtype is None:
        return precision or "auto"
    text = str(dtype).replace("torch.", "")
    if text in ("bfloat16", "bf16", "float16", "fp16", "half"):
        low = torch.float16 if text in ("float16", "fp16", "half") else torch.bfloat16
        raise PrecisionError(f"dtype {dtype!r} is no longer accepted for training: {smallest_update_note(low)}")
    table = {"float32": "fp32", "fp32": "fp32", "auto": "auto"}
    if text not in table:
        raise PrecisionError(f"unknown dtype {dtype!r}; the setting is now 'precision' "
                             f"(one of {', '.join(PRECISIONS)})")
    migrated = table[text]
    if precision is None or migrated == "auto":
        return precision or migrated
    if precision != migrated:
        raise PrecisionError(f"dtype {dtype!r} (retired) and precision {precision!r} disagree; "
                             "give only precision")
    return migrated


# --- the CPU probe ---------------------------------------------------------------------------------------

def time_matmul(dtype: torch.dtype, size: int, repeats: int, clock=time.perf_counter) -> float:
    """Best-of-``repeats`` seconds of one ``size``^3 matmul in ``dtype`` (after one warm-up when repeats > 1),
    read on ``clock`` (wall time; ``time.process_time`` gives this process's CPU seconds on a shared machine)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    if repeats > 1:
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b)
        best = min(best, clock() - start)
    return best


def probe_cpu(size: int = 1024, repeats: int = 3, screen: int = 512, measure=None) -> dict:
    """Measured fp32 and bf16 matmul throughput (GFLOP/s) on this CPU, at its current thread count.

    bf16 is first timed once at ``screen``^3: where it is slower than fp32 (CPUs without native bf16 run
    it ~100x slower), that figure decides and the full ``size``^3 bf16 timing (seconds there) is skipped.
    ``measure(dtype, size, repeats) -> seconds`` (default :func:`time_matmul`) is replaceable for tests."""
    measure = measure or time_matmul
    flops = lambda n: 2.0 * n ** 3  # noqa: E731
    fp32 = flops(size) / measure(torch.float32, size, repeats) / 1e9
    bf16_size, bf16 = screen, flops(screen) / measure(torch.bfloat16, screen, 1) / 1e9
    if bf16 >= fp32:
        bf16_size, bf16 = size, flops(size) / measure(torch.bfloat16, size, repeats) / 1e9
    return {"fp32_gflops": round(fp32, 2), "bf16_gflops": round(bf16, 2), "speedup": round(bf16 / fp32, 3),
            "size": size, "bf16_size": bf16_size, "repeats": repeats, **machine_key()}


def decide_cpu(probe: dict, needed: float = CPU_SPEEDUP_NEEDED) -> tuple[str, str]:
    """("bf16-mixed" or "fp32", reason) from a probe: bf16-mixed iff bf16 is >= ``needed`` x fp32."""
    speedup = probe["bf16_gflops"] / probe["fp32_gflops"]
    figures = (f"CPU matmul probe: bf16 {probe['bf16_gflops']:g} GFLOP/s vs fp32 {probe['fp32_gflops']:g} "
               f"GFLOP/s = {speedup:.3g}x")
    if speedup >= needed:
        return "bf16-mixed", f"{figures} >= {needed:g}x: bf16 is natively fast here"
    return "fp32", f"{figures} < {needed:g}x: bf16 is not clearly faster here"


def machine_key() -> dict:
    """What the probe's result depends on: CPU model, torch version, thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads()}


def probe_cache_file() -> Path:
    from .models import cache_dir
    return cache_dir() / PROBE_FILE


def cached_cpu_probe(measure=None) -> dict:
    """:func:`probe_cpu`, cached per machine key in ``<rmlib cache>/precision_probe.json``."""
    path = probe_cache_file()
    key = json.dumps(machine_key(), sort_keys=True)
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return {**cache[key], "cached": True}
    probe = probe_cpu(measure=measure)
    cache[key] = probe
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: probe again next time
    return {**probe, "cached": False}


# --- resolution ----------------------------------------------------------------------------------------

def resolve_precision(precision: str | Precision = "auto", device: str | torch.device | None = None) -> Precision:
    """The precision a run on ``device`` (default: CUDA if available, else CPU) uses; see the module rules."""
    if isinstance(precision, Precision):
        return precision
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
        if precision == "fp32":
            return Precision("fp32", "requested", precision)
        if not bf16_ok:
            if precision == "bf16-mixed":
                raise PrecisionError(f"precision 'bf16-mixed' needs a GPU with bf16 support; {name} has none")
            return Precision("fp32", f"GPU {name} does not support bf16", precision)
        reason = "requested" if precision == "bf16-mixed" else f"GPU {name} supports bf16"
        return Precision("bf16-mixed", reason, precision)
    if kind != "cpu":
        raise PrecisionError(f"device type {kind!r} is not supported (cpu or cuda)")
    if precision != "auto":
        return Precision(precision, "requested", precision)
    probe = cached_cpu_probe()
    mode, reason = decide_cpu(probe)
    return Precision(mode, reason, precision, probe)


def resolve_shared(precision: str | Precision = "auto", state=None) -> Precision:
    """:func:`resolve_precision` for every process of a run: the main process decides and broadcasts (two
    processes probing at once could decide differently). ``state``: accelerate's ``PartialState``."""
    if state is None or state.num_processes == 1:
        return resolve_precision(precision, state.device if state is not None else None)
    from accelerate.utils import broadcast_object_list

    box = [resolve_precision(precision, state.device) if state.is_main_process else None]
    broadcast_object_list(box)
    return box[0]


def check_launch_config(precision: Precision) -> None:
    """Refuse an ``accelerate launch`` config (env ``ACCELERATE_MIXED_PRECISION``) that asks for mixed
    precision other than the resolved one. rmlib passes ``mixed_precision`` to ``Accelerator`` itself, and
    that explicit value would silently win; ``'no'`` (accelerate's default) in a config means "let the
    spec's precision decide" and is always accepted."""
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launched not in ("no", precision.accelerate):
        raise PrecisionError(
            f"the accelerate launch config sets mixed_precision {launched!r}, but this run resolved "
            f"{precision.describe()} (accelerate mixed_precision {precision.accelerate!r}). rmlib sets the "
            "precision itself: set 'precision' in the spec (fp32 or bf16-mixed), and mixed_precision: 'no' "
            "in the launch config (or pass --mixed_precision no).")


def autocast(accelerator):
    """The autocast context of an accelerator's precision, for passes outside its prepared model
    (reference log-probs, evaluation). Under DeepSpeed (which casts the weights itself and reports no
    native autocast) bf16 autocast is used when its mixed precision is bf16."""
    if accelerator is None:
        return nullcontext()
    if getattr(accelerator, "native_amp", False):
        return accelerator.autocast()
    if accelerator.mixed_precision == "bf16":
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return nullcontext()
