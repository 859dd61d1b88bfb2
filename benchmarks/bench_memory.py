"""Peak memory of training vs the micro-batch token budget and gradient checkpointing (issue 15).

    .venv/bin/python benchmarks/bench_memory.py       # 16 configurations: hours on 2 CPU cores
    .venv/bin/python benchmarks/bench_memory.py --rm ex --budgets 2048 --checkpointing off,on  # ~5 min each

SmolLM2-135M-Instruct (fp32) trained as an EX-RM or an IM-RM on the ``--pairs`` longest UltraFeedback
training rows (no length cap; longest by packed length, :func:`rmlib.batching.packed_length`), as one
optimizer step of ``micro_batch_size`` ``--micro``, with ``max_tokens_per_micro_batch`` each of
``--budgets`` and ``gradient_checkpointing`` off and on. The step's micro-batches are those of
:func:`rmlib.batching.micro_batches`, as ``train`` forms them.

A step's peak memory is that of its largest micro-batch (a micro-batch's activations are freed before the
next one; gradients accumulate in place), so each configuration, in a fresh process, runs ``train`` for
two steps: a first one on as many of the shortest rows (it creates Adam's state, present in every later
step), then its largest micro-batch. Configurations whose largest micro-batch is the same are run once.
Reported: peak resident memory (``ru_maxrss``: weights, gradients, Adam state, the IM-RM's reference pass
included), resident memory after loading, every micro-batch of the full step (pairs x packed width) and
the one measured, and the training time (wall clock; noisy on a shared machine). One configuration alone:
``--child '{"rm": "ex", "checkpointing": true, "budget": 2048, "micro": 4, "pairs": 1000, "largest": [187,
189], "threads": 2}'`` measures the pairs 187 and 188 (by packed length, from the shortest) of all rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rmlib.batching import micro_batches, packed_length  # noqa: E402

MODEL = "smollm2-135m-instruct"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from rmlib.data import load_preferences
    from rmlib.models import load_model
    from rmlib.rewards import build_reward_model
    from rmlib.runconfig import RunConfig
    from rmlib.training import train

    lm, tok = load_model(MODEL, dtype="float32")
    rm = build_reward_model(spec["rm"], lm, tok, seed=0)
    rows = load_preferences("ultrafeedback", "train", on_error="drop").rows  # as the CLI reads it
    pairs = [(rm.encode(r["prompt"], r["chosen"]), rm.encode(r["prompt"], r["rejected"])) for r in rows]
    pairs = sorted(pairs, key=lambda p: packed_length(*p))
    measured = pairs[-spec["pairs"]:][spec["largest"][0]:spec["largest"][1]]
    step = pairs[:len(measured)] + measured  # step 1: the shortest rows; step 2: the largest micro-batch
    shapes, collate = [], rm.collate_pairs

    def recorded(c, r, ref_logps=None):  # the training micro-batches (no pass without gradients is counted)
        if torch.is_grad_enabled():
            shapes.append([len(c), max(map(packed_length, c, r))])
        return collate(c, r, ref_logps)

    rm.collate_pairs = recorded
    loaded = _rss_mb()
    config = RunConfig(epochs=1, lr=1e-6, batch_size=len(measured), micro_batch_size=spec["micro"], seed=0,
                       shuffle=False, max_steps=2, progress=False, max_tokens_per_micro_batch=spec["budget"],
                       gradient_checkpointing=spec["checkpointing"])
    t0 = time.perf_counter()
    train(rm, [c for c, _ in step], [r for _, r in step], config)
    return {"peak_rss_mb": _rss_mb(), "loaded_rss_mb": loaded, "seconds": time.perf_counter() - t0,
            "run": shapes}


def run(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan(lengths: list[int], micro: int, budget: int | None) -> tuple[list[list[int]], tuple[int, int]]:
    """The step's micro-batches (pairs x width) and the index range of its largest (by padded tokens)."""
    groups = micro_batches(lengths, micro, budget)
    shapes = [[len(g), max(lengths[i] for i in g)] for g in groups]
    k = max(range(len(groups)), key=lambda j: (shapes[j][0] * shapes[j][1], j))
    return shapes, (groups[k][0], groups[k][-1] + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rm", default="ex,im")
    parser.add_argument("--budgets", default="none,4096,2048,1024")
    parser.add_argument("--checkpointing", default="off,on")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from rmlib.data import load_preferences
    from rmlib.formatting import ChatFormatter
    from rmlib.models import load_tokenizer

    formatter = ChatFormatter(load_tokenizer(MODEL))  # the EX-RM's and the IM-RM's format
    rows = load_preferences("ultrafeedback", "train", on_error="drop").rows
    lengths = sorted(packed_length(formatter.encode(r["prompt"], r["chosen"]),
                                   formatter.encode(r["prompt"], r["rejected"]))
                     for r in rows)[-args.pairs:]
    print(f"packed lengths of the {args.pairs} longest pairs: {lengths}", flush=True)
    results, done = [], {}
    for rm in args.rm.split(","):
        for checkpointing in args.checkpointing.split(","):
            for budget in args.budgets.split(","):
                budget = None if budget == "none" else int(budget)
                shapes, largest = plan(lengths, args.micro, budget)
                spec = {"rm": rm, "checkpointing": checkpointing == "on", "budget": budget, "micro": args.micro,
                        "pairs": args.pairs, "largest": largest, "threads": args.threads}
                key = (rm, checkpointing, largest)
                if key not in done:
                    done[key] = run(spec)
                results.append({**spec, "step": shapes, **done[key]})
                print(json.dumps(results[-1]), flush=True)
    print("\n| RM | checkpointing | budget | micro-batches of the step (pairs x width) | measured | peak RSS (MB) "
          "| after load (MB) | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        step = " ".join(f"{n}x{w}" for n, w in r["step"])
        print(f"| {r['rm'].upper()} | {'on' if r['checkpointing'] else 'off'} | {r['budget']} | {step} | "
              f"{r['run'][-1][0]}x{r['run'][-1][1]} | {r['peak_rss_mb']:.0f} | {r['loaded_rss_mb']:.0f} | "
              f"{r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
