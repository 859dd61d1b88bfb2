"""Training speed and memory: rmlib vs Hugging Face TRL on the same work (issue 8).

    .venv/bin/pip install -e ".[bench]"          # TRL, pinned
    .venv/bin/python benchmarks/bench_training.py  # ~10-15 min on 2 CPU cores; --help for bigger runs

What is compared (every measurement in a fresh subprocess, rmlib and TRL runs interleaved):

* EX-RM: ``rmlib.training.train`` on an :class:`rmlib.rewards.ExplicitRM` vs TRL ``RewardTrainer``;
  IM-RM: on an :class:`rmlib.rewards.ImplicitRM` (beta 0.01) vs TRL ``DPOTrainer`` (loss_type sigmoid,
  beta 0.01, its defaults otherwise: the reference model's log-probs recomputed every step). The DPO
  sigmoid loss -ln sigma(beta (ln pi/pi_ref (y+) - ln pi/pi_ref (y-))) is exactly the IM-RM Bradley-Terry
  loss (Eq. 2-3).
* Same model (SmolLM2-135M-Instruct, the converted folder of :func:`rmlib.models.smollm2_folder`), same
  dtype (fp32), same preference rows in the same order (no shuffling), token ids identical (TRL's reward
  trainer gets rmlib's ids; the DPO trainer tokenizes the same conversations with the same chat
  template), same effective batch and micro-batch (TRL: ``per_device_train_batch_size`` x
  ``gradient_accumulation_steps``), same optimizer (Adam = AdamW with weight decay 0, constant lr), same
  number of optimizer steps, same EX-RM head initialization, no gradient clipping (the Trainer's default
  max_grad_norm=1.0 is turned off: rmlib, like the paper, does not clip), no gradient checkpointing, no bf16.
* Timed: the training call (``train`` / ``trainer.train()``), including rmlib's one-off reference
  log-prob caching. Not timed: imports, model loading, tokenization.
* Reported per run: pairs/s (wall clock), pairs per CPU-second of the child (steadier when the machine
  is shared), tokens/s (real tokens of the chosen and rejected sequences, counted the same
  way for both), achieved FLOP/s = 6 x parameters x tokens / time (a full fine-tuning step's usual
  estimate) as a fraction of this machine's measured fp32 matmul peak (2048 x 2048, 2 threads), peak
  resident memory of the child process (``ru_maxrss``, model loading included), the final step's loss.
* IM-RM reference log-probs cached once (rmlib) vs recomputed every step (a frozen copy of the initial
  model, same code otherwise), over ``--epochs`` epochs.
* Long-vocabulary memory: a random 2-layer Llama with a 128,256-token vocabulary (Llama 3's), peak memory
  of the IM-RM loss and its backward with rmlib's chunked gather (:func:`rmlib.rewards.sequence_logprobs`)
  vs a full ``log_softmax`` over the logits.

The machine may be shared: absolute numbers are noisy, so each configuration runs ``--repeats`` times
interleaved and the table reports medians and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m-instruct"
TRL_VERSION = "1.16.0"


# ------------------------------------------------------------------------------------------ child side

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _setup_torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch


def _rows(spec: dict) -> list[dict]:
    """The benchmark's preference rows: the first ``n`` rows of a data set whose chosen and rejected
    sequences (chat template included) both fit ``max_tokens`` tokens, in file order."""
    from rmlib.data import load_preferences
    from rmlib.formatting import ChatFormatter
    from rmlib.models import load_tokenizer
    from rmlib.persona import assign_responses, select_prompts
    from rmlib.data import load_persona

    formatter = ChatFormatter(load_tokenizer(MODEL))
    if spec["dataset"] == "persona":
        candidates = assign_responses(select_prompts(load_persona("agreeableness")), seed=0)
    else:
        candidates = load_preferences(spec["dataset"], "train", on_error="drop").rows
    rows = []
    for row in candidates:
        lengths = [len(formatter.encode(row["prompt"], row[k])) for k in ("chosen", "rejected")]
        if max(lengths) <= spec["max_tokens"]:
            rows.append(row)
            if len(rows) == spec["pairs"]:
                return rows
    raise SystemExit(f"only {len(rows)} rows of {spec['dataset']} fit {spec['max_tokens']} tokens "
                     f"(wanted {spec['pairs']})")


def child_peak(spec: dict) -> dict:
    torch = _setup_torch(spec["threads"])
    out = {}
    # bf16 is measured on a smaller matrix: CPUs without native bf16 (AVX2 only) run it ~100x slower.
    for name, dtype, n, trials in (("fp32", torch.float32, 2048, 5), ("bf16", torch.bfloat16, 512, 2)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(trials):
            t0 = time.perf_counter()
            for _ in range(3):
                a @ b
            best = min(best, (time.perf_counter() - t0) / 3)
        out[f"{name}_gflops"] = 2 * n ** 3 / best / 1e9
    return out


def child_rmlib(spec: dict) -> dict:
    torch = _setup_torch(spec["threads"])
    from rmlib.models import load_model
    from rmlib.rewards import ImplicitRM, build_reward_model, sequence_logprobs
    from rmlib.training import TrainConfig, train

    rows = _rows(spec)
    lm, tok = load_model(MODEL, dtype="float32")
    rm = build_reward_model(spec["rm"], lm, tok, beta=spec["beta"], seed=0)
    chosen = [rm.encode(r["prompt"], r["chosen"]) for r in rows]
    rejected = [rm.encode(r["prompt"], r["rejected"]) for r in rows]
    if spec.get("packing") is False:  # ablation: the plain right-padded batch (no shared prompt)
        rm.collate_pairs = lambda c, r: rm.collate(list(c) + list(r))
    if spec.get("reference") == "recompute":  # ablation: pi_ref as a frozen copy, run every step
        import copy

        frozen = copy.deepcopy(lm).eval().requires_grad_(False)
        inner = ImplicitRM.forward

        def forward(batch, ref_logps=None):
            with torch.no_grad():
                ref = sequence_logprobs(frozen, batch)
            return inner(rm, batch, ref)

        rm.needs_reference = lambda: False
        rm.forward = forward
    config = TrainConfig(epochs=spec.get("epochs", 1), lr=spec["lr"], batch_size=spec["batch_size"],
                         micro_batch_size=spec["micro_batch_size"], seed=0, shuffle=False,
                         max_steps=spec["steps"], progress=False)
    loaded_mb = _peak_rss_mb()
    t0, cpu0 = time.perf_counter(), time.process_time()
    history = train(rm, chosen, rejected, config)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    per_epoch_tokens = sum(len(s) for s in chosen + rejected)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "pairs": history.pairs, "tokens": history.tokens,
            "tokens_check": per_epoch_tokens * config.epochs,
            "final_loss": history.steps[-1]["loss"], "mean_loss": statistics.mean(s["loss"] for s in history.steps),
            "params": sum(p.numel() for p in lm.parameters()), "peak_rss_mb": _peak_rss_mb(), "loaded_rss_mb": loaded_mb}


def _training_args(config_cls, spec: dict, output_dir: str, **extra):
    return config_cls(
        output_dir=output_dir, per_device_train_batch_size=spec["micro_batch_size"],
        gradient_accumulation_steps=spec["batch_size"] // spec["micro_batch_size"], max_steps=spec["steps"],
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        optim="adamw_torch", max_grad_norm=0.0, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        seed=0, max_length=None, **extra)


def _sequential(trainer_cls):
    """The trainer, reading its data set in order (rmlib runs with shuffle=False on the same rows)."""
    from torch.utils.data import SequentialSampler

    class Sequential(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    return Sequential


def child_trl(spec: dict) -> dict:
    torch = _setup_torch(spec["threads"])
    import transformers
    from datasets import Dataset

    transformers.logging.set_verbosity_error()
    from rmlib.formatting import ChatFormatter
    from rmlib.models import load_tokenizer, smollm2_folder

    rows = _rows(spec)
    folder = str(smollm2_folder())
    tok = load_tokenizer(MODEL)
    formatter = ChatFormatter(tok)
    chosen = [formatter.encode(r["prompt"], r["chosen"]) for r in rows]
    rejected = [formatter.encode(r["prompt"], r["rejected"]) for r in rows]
    with tempfile.TemporaryDirectory() as output_dir:
        if spec["rm"] == "ex":
            from transformers import AutoModelForSequenceClassification
            from trl import RewardConfig, RewardTrainer

            model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
            model.config.pad_token_id = tok.pad_token_id
            with torch.no_grad():  # rmlib's EX-RM head initialization (seed 0), so the losses can be compared
                generator = torch.Generator().manual_seed(0)
                model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=generator)
                                         * model.config.initializer_range)
            data = Dataset.from_list([{"chosen_ids": list(c.input_ids), "rejected_ids": list(r.input_ids)}
                                      for c, r in zip(chosen, rejected)])
            args = _training_args(RewardConfig, spec, output_dir)
            trainer = _sequential(RewardTrainer)(model=model, args=args, train_dataset=data, processing_class=tok)
            tokens = sum(len(c) + len(r) for c, r in zip(chosen, rejected))
        else:
            from transformers import AutoModelForCausalLM
            from trl import DPOConfig, DPOTrainer

            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            ref_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                       "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                       "rejected": [{"role": "assistant", "content": r["rejected"]}]}
                                      for r in rows])
            args = _training_args(DPOConfig, spec, output_dir, beta=spec["beta"], loss_type=["sigmoid"],
                                  precompute_ref_log_probs=False)
            trainer = _sequential(DPOTrainer)(model=model, ref_model=ref_model, args=args, train_dataset=data,
                                              processing_class=tok)
            d = trainer.train_dataset
            tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(d["prompt_ids"], d["chosen_ids"],
                                                                          d["rejected_ids"]))
        loaded_mb = _peak_rss_mb()
        t0, cpu0 = time.perf_counter(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    epochs = spec.get("epochs", 1)  # max_steps = epochs x (rows / batch): TRL passes over the rows that often
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "pairs": spec["steps"] * spec["batch_size"],
            "tokens": tokens * epochs, "rmlib_tokens": sum(len(c) + len(r) for c, r in zip(chosen, rejected)) * epochs,
            "final_loss": losses[-1], "mean_loss": statistics.mean(losses),
            "params": sum(p.numel() for p in model.parameters()), "peak_rss_mb": _peak_rss_mb(), "loaded_rss_mb": loaded_mb}


def child_vocab(spec: dict) -> dict:
    """Peak memory of an IM-RM loss + backward over a random 2-layer Llama with a long vocabulary."""
    torch = _setup_torch(spec["threads"])
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from rmlib.batching import collate
    from rmlib.formatting import Encoded
    from rmlib.models import tiny_random_config
    from rmlib.rewards import sequence_logprobs

    config = tiny_random_config(spec["vocab"], hidden_size=spec["hidden"], layers=2)
    lm = AutoModelForCausalLM.from_config(config)
    generator = torch.Generator().manual_seed(0)
    n, length, prompt = spec["sequences"], spec["length"], spec["length"] // 4
    seqs = [Encoded(tuple(torch.randint(3, spec["vocab"], (length,), generator=generator).tolist()), prompt)
            for _ in range(n)]
    batch = collate(seqs, pad_id=2)
    lm.train()
    lm.zero_grad()
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if spec["method"] == "chunked":
        logps = sequence_logprobs(lm, batch)
    else:  # the textbook way: full logits, full log_softmax, gather
        logits = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids).logits.float()
        token_logps = F.log_softmax(logits[:, :-1], dim=-1).gather(2, batch.input_ids[:, 1:, None]).squeeze(2)
        logps = (token_logps * batch.response_mask[:, 1:]).sum(1)
    (-logps.mean()).backward()
    seconds = time.perf_counter() - t0
    return {"peak_rss_mb": _peak_rss_mb(), "before_mb": base, "seconds": seconds,
            "logps": logps.detach().tolist()}


CHILDREN = {"peak": child_peak, "rmlib": child_rmlib, "trl": child_trl, "vocab": child_vocab}


# ----------------------------------------------------------------------------------------- parent side

def run_child(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore", ACCELERATE_USE_CPU="true")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark child {spec} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def median(values):
    return statistics.median(values) if values else float("nan")


def fmt(x, digits=2):
    if isinstance(x, float) and x != x:
        return "-"
    return f"{x:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ultrafeedback,persona",
                        help="comma-separated: ultrafeedback (and its variants), persona")
    parser.add_argument("--max-tokens", type=int, default=192,
                        help="token cap per sequence (chat template included) for the rows used")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (all epochs)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs over steps x batch / epochs rows (the notebooks' cpu profiles train 2 epochs, "
                             "the paper 5-15; an IM-RM's cached reference log-probs pay off from the second)")
    parser.add_argument("--batch-size", type=int, default=4, help="effective batch (pairs per step)")
    parser.add_argument("--micro-batch-size", type=int, default=2, help="pairs per forward pass")
    parser.add_argument("--persona-batch-size", type=int, default=8, help="effective batch for persona")
    parser.add_argument("--persona-micro-batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--rm-types", default="ex,im", help="comma-separated: ex, im")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="peak,main,ablation,reference,vocab",
                        help="comma-separated subset of: peak, main, ablation, reference, vocab")
    parser.add_argument("--vocab", type=int, default=128_256)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--json", type=Path, help="also write all raw measurements to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps(CHILDREN[spec["kind"]](spec)), flush=True)
        return 0

    if args.steps % args.epochs:
        parser.error(f"--steps ({args.steps}) must be a multiple of --epochs ({args.epochs})")
    parts = set(args.parts.split(","))
    unknown = parts - {"peak", "main", "ablation", "reference", "vocab"}
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}")
    if "main" in parts:
        try:
            import trl
        except ImportError:
            parser.error('TRL is not installed: .venv/bin/pip install -e ".[bench]"')
        if trl.__version__ != TRL_VERSION:
            print(f"note: TRL {trl.__version__} installed; the benchmark pins {TRL_VERSION}")
    raw: dict = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "json")}}
    started = time.perf_counter()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} (1 min) on {os.cpu_count()} CPUs; "
          f"children use {args.threads} threads", flush=True)

    def base_spec(dataset: str, rm: str) -> dict:
        persona = dataset == "persona"
        batch = args.persona_batch_size if persona else args.batch_size
        micro = args.persona_micro_batch_size if persona else args.micro_batch_size
        return {"dataset": dataset, "rm": rm, "max_tokens": args.max_tokens, "steps": args.steps,
                "batch_size": batch, "micro_batch_size": micro, "pairs": args.steps * batch // args.epochs,
                "epochs": args.epochs, "lr": args.lr,
                "beta": args.beta, "threads": args.threads}

    peak = None
    if "peak" in parts:
        peak = run_child({"kind": "peak", "threads": args.threads}, args.timeout)
        raw["peak"] = peak
        print(f"matmul peak ({args.threads} threads): fp32 {peak['fp32_gflops']:.1f} GFLOP/s (2048x2048), "
              f"bf16 {peak['bf16_gflops']:.1f} GFLOP/s (512x512)", flush=True)

    datasets = [d for d in args.datasets.split(",") if d]
    rm_types = [r for r in args.rm_types.split(",") if r]
    if set(rm_types) - {"ex", "im"}:
        parser.error(f"--rm-types: unknown {sorted(set(rm_types) - {'ex', 'im'})}; accepted: ex, im")
    main_results: dict = {}
    if "main" in parts or "ablation" in parts:
        impls = (["rmlib", "trl"] if "main" in parts else []) + (["rmlib-plain"] if "ablation" in parts else [])
        for rep in range(args.repeats):
            for dataset in datasets:
                for rm in rm_types:
                    for impl in impls:
                        spec = dict(base_spec(dataset, rm), kind="trl" if impl == "trl" else "rmlib")
                        if impl == "rmlib-plain":
                            spec["packing"] = False
                        result = run_child(spec, args.timeout)
                        main_results.setdefault((dataset, rm, impl), []).append(result)
                        print(f"  [{rep + 1}/{args.repeats}] {dataset:>13} {rm.upper()}-RM {impl:>11}: "
                              f"{result['pairs'] / result['seconds']:.2f} pairs/s, "
                              f"peak RSS {result['peak_rss_mb']:.0f} MB ({result['loaded_rss_mb']:.0f} MB before training), "
                              f"final loss {result['final_loss']:.6f}", flush=True)
        raw["main"] = [{"dataset": d, "rm": r, "impl": i, "runs": v} for (d, r, i), v in main_results.items()]

    reference_results: dict = {}
    if "reference" in parts:
        dataset = datasets[0]
        for rep in range(args.repeats):
            for mode in ("cached", "recompute"):
                spec = dict(base_spec(dataset, "im"), kind="rmlib", reference=mode)
                result = run_child(spec, args.timeout)
                reference_results.setdefault(mode, []).append(result)
                print(f"  [{rep + 1}/{args.repeats}] IM-RM reference {mode:>9}: "
                      f"{result['pairs'] / result['seconds']:.2f} pairs/s, {result['peak_rss_mb']:.0f} MB", flush=True)
        raw["reference"] = reference_results

    vocab_results: dict = {}
    if "vocab" in parts:
        for method in ("chunked", "full"):
            spec = {"kind": "vocab", "method": method, "vocab": args.vocab, "hidden": 256, "sequences": 8,
                    "length": 256, "threads": args.threads}
            vocab_results[method] = run_child(spec, args.timeout)
        raw["vocab"] = vocab_results

    # ---------------------------------------------------------------------------------- the tables
    print(f"\nfinished in {time.perf_counter() - started:.0f} s; load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (numbers from a shared machine are noisy)\n")
    if main_results:
        peak_flops = peak["fp32_gflops"] * 1e9 if peak else float("nan")
        headers = ["data", "RM", "impl", "pairs/s", "pairs/CPU-s", "tokens/s", "GFLOP/s", "of peak", "peak RSS MB",
                   "final loss", "mean loss", "runs"]
        rows, ratios = [], []
        for (dataset, rm, impl), runs in main_results.items():
            pairs_s = median([r["pairs"] / r["seconds"] for r in runs])
            tokens_s = median([r["tokens"] / r["seconds"] for r in runs])
            flops = 6 * runs[0]["params"] * tokens_s
            pairs_cpu = median([r["pairs"] / r["cpu_seconds"] for r in runs])
            rows.append([dataset, rm.upper(), impl, fmt(pairs_s), fmt(pairs_cpu, 3), fmt(tokens_s, 0), fmt(flops / 1e9, 1),
                         f"{flops / peak_flops:.0%}" if peak else "-", fmt(median([r["peak_rss_mb"] for r in runs]), 0),
                         f"{median([r['final_loss'] for r in runs]):.6f}",
                         f"{median([r['mean_loss'] for r in runs]):.6f}", str(len(runs))])
        print("Training throughput (medians; tokens = real tokens of chosen + rejected; FLOP/s = 6 x params x "
              "tokens/s; with prompt sharing rmlib computes each prompt once, so its nominal figure can exceed "
              "the matmul peak)")
        print(table(headers, rows))
        for dataset in datasets:
            for rm in rm_types:
                mine, theirs = main_results.get((dataset, rm, "rmlib")), main_results.get((dataset, rm, "trl"))
                plain = main_results.get((dataset, rm, "rmlib-plain"))
                if mine and theirs:
                    speed = median([r["pairs"] / r["seconds"] for r in mine]) / median(
                        [r["pairs"] / r["seconds"] for r in theirs])
                    speed_cpu = median([r["pairs"] / r["cpu_seconds"] for r in mine]) / median(
                        [r["pairs"] / r["cpu_seconds"] for r in theirs])
                    memory = median([r["peak_rss_mb"] for r in mine]) / median([r["peak_rss_mb"] for r in theirs])
                    loss_gap = abs(median([r["final_loss"] for r in mine]) - median([r["final_loss"] for r in theirs]))
                    target = 2.0 if rm == "im" else 1.3
                    ratios.append([dataset, rm.upper(), f"{speed:.2f}x", f"{speed_cpu:.2f}x", f"{target:.1f}x",
                                   "met" if speed >= target else f"missed by {target - speed:.2f}x",
                                   f"{memory:.2f}", "met" if memory <= 1 else "missed", f"{loss_gap:.1e}"])
                if mine and plain:
                    gain = median([r["pairs"] / r["seconds"] for r in mine]) / median(
                        [r["pairs"] / r["seconds"] for r in plain])
                    print(f"prompt sharing ({dataset}, {rm.upper()}-RM): {gain:.2f}x pairs/s vs rmlib's plain "
                          f"padded batch")
        if ratios:
            print("\nrmlib / TRL (ratio of medians)")
            print("(speed: pairs/s, wall clock; CPU: pairs per CPU-second of the child, steadier on a shared machine)")
            print(table(["data", "RM", "speed", "speed (CPU)", "target", "speed target", "memory", "memory target",
                         "|final loss gap|"], ratios))
    if reference_results:
        rows = []
        for mode, runs in reference_results.items():
            rows.append([mode, fmt(median([r["pairs"] / r["seconds"] for r in runs])),
                         fmt(median([r["peak_rss_mb"] for r in runs]), 0),
                         f"{median([r['final_loss'] for r in runs]):.6f}"])
        print(f"\nIM-RM reference log-probs ({datasets[0]}, {args.epochs} epochs): cached once vs recomputed every step")
        print(table(["reference", "pairs/s", "peak RSS MB", "final loss"], rows))
    if vocab_results:
        rows = [[m, fmt(r["peak_rss_mb"], 0), fmt(r["peak_rss_mb"] - r["before_mb"], 0), fmt(r["seconds"])]
                for m, r in vocab_results.items()]
        same = max(abs(a - b) for a, b in zip(vocab_results["chunked"]["logps"], vocab_results["full"]["logps"])) \
            if len(vocab_results) == 2 else float("nan")
        print(f"\nLong vocabulary ({args.vocab:,} tokens, random 2-layer Llama, 8 x 256 tokens): IM-RM loss + backward")
        print(table(["log-probs", "peak RSS MB", "above model MB", "seconds"], rows))
        print(f"max |ln pi difference| between the two: {same:.1e}")
    if args.json:
        raw["main"] = raw.get("main", [])
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
