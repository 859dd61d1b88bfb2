"""Two CPU processes (gloo) under `accelerate launch` with the shipped DDP config give the results of one.

The launched processes train an IM-RM on 9 pairs with batch_size 4 (steps of 4, 4 and 1 pairs: in the last
step one process has no pair and joins with a zero-weight pass), evaluate 7 pairs (14 sequences, uneven
batches per process), and score an odd number of sequences (one process gets one more) -- every reward must
arrive exactly once. FSDP (sharded weights): ``tests/test_fsdp.py``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rmlib import cli
from rmlib.batching import micro_batches, packed_length
from rmlib.models import load_model
from rmlib.rewards import build_reward_model
from rmlib.scoring import score, shares
from rmlib.training import epoch_order

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_resume import write_data_dir  # noqa: E402

HELPER = '''
import json, sys
from pathlib import Path

from child_hooks import record_engines, uninterrupted_run_keeping_checkpoints
from rmlib.cli import main
from rmlib.scoring import score
from rmlib.models import load_model
from rmlib.rewards import build_reward_model
from rmlib.training import make_accelerator

engines = record_engines()
spec, results, out, mode = sys.argv[1:5]
if mode == "resume":  # a first, uninterrupted run keeps its step-2 checkpoint; the second run resumes from it
    uninterrupted_run_keeping_checkpoints(spec, Path(results), "mp/*.json", Path(out).with_name("uninterrupted.json"))
assert main([spec, "--set", f"results_dir={results}"]) == 0
accelerator = make_accelerator()
lm, tok = load_model("tiny-random", dtype="float32", seed=0)
rm = build_reward_model("ex", lm, tok, seed=0)
sequences = [rm.encode(f"Question {i}?", "alpha " * (i + 1)) for i in range(7)]
sequences.append(sequences[3])  # a repeated sequence is scored once and its reward repeated
rewards = score(rm, sequences, batch_size=2, accelerator=accelerator)
if accelerator.is_main_process:
    json.dump({"world": accelerator.num_processes, "rewards": rewards.tolist(), "engines": engines,
               "distributed_type": accelerator.distributed_type.value}, open(out, "w"))
'''


def odd_sequences(rm):
    sequences = [rm.encode(f"Question {i}?", "alpha " * (i + 1)) for i in range(7)]
    return sequences + [sequences[3]]


def test_shares_cover_every_index_once():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            parts = shares(n, world, [(7 * i) % 5 for i in range(n)])
            assert sorted(i for p in parts for i in p) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def run_two_and_one(tmp_path, launch_args, mode="once", budgeted=False):
    """The same spec run by two launched processes (``accelerate launch <launch_args>``) and by this one.

    Returns the two run records (one process, two processes) and the helper's gathered scores. ``mode``
    "resume": the launched processes run it twice, the second time resuming from the first one's step-2
    checkpoint (its record is then ``tmp_path / "uninterrupted.json"``). ``budgeted``: a token budget under
    which one process forms more micro-batches than the other in some step (the other then adds
    zero-weight passes so that both run as many forward passes)."""
    data = write_data_dir(tmp_path / "data", n_train=9, n_test=7)
    spec = {"setting": "mp", "model": "tiny-random", "rm_type": "im", "lr": 3e-3, "batch_size": 4,
            "micro_batch_size": 1, "epochs": 1, "checkpoint_every": 2, "progress": False,
            "data_dir": str(data), "eval_batch_size": 3, "train": {"data": "ultrafeedback", "split": "train"},
            "eval": {"held_out": {"data": "ultrafeedback", "split": "test"}}}
    if budgeted:
        rows = [json.loads(line) for line in (data / "ultrafeedback" / "train.jsonl").read_text().splitlines()]
        spec.update(micro_batch_size=2, max_tokens_per_micro_batch=uneven_budget(rows, spec["batch_size"]))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    launcher = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),  # + child_hooks
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    two = subprocess.Popen([str(launcher), "launch", *launch_args, str(helper), str(spec_path), str(tmp_path / "two"),
                            str(tmp_path / "gathered.json"), mode], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        # meanwhile, the same run in this process (one process)
        assert cli.main([str(spec_path), "--set", f"results_dir={tmp_path / 'one'}"]) == 0
        output = two.communicate(timeout=900)[0]
    finally:
        if two.poll() is None:
            two.kill()
    assert two.returncode == 0, output[-3000:]
    (one_file,), (two_file,) = list((tmp_path / "one").glob("mp/*.json")), list((tmp_path / "two").glob("mp/*.json"))
    assert not list((tmp_path / "two").glob("mp/*.ckpt")), "the checkpoint (step 2) is removed after the run"
    return (json.loads(one_file.read_text()), json.loads(two_file.read_text()),
            json.loads((tmp_path / "gathered.json").read_text()))


def assert_same_run(one, two_, gathered):
    assert (one["world_size"], two_["world_size"]) == (1, 2)
    assert one["run_id"] == two_["run_id"]  # the same run, whatever the number of processes
    assert two_["precision"]["mode"] == one["precision"]["mode"]  # "auto", decided by the main process
    steps_one, steps_two = one["history"]["steps"], two_["history"]["steps"]
    assert [s["pairs"] for s in steps_one] == [s["pairs"] for s in steps_two] == [4, 4, 1]
    assert [s["loss"] for s in steps_two] == pytest.approx([s["loss"] for s in steps_one], abs=1e-5)
    assert [s["accuracy"] for s in steps_two] == [s["accuracy"] for s in steps_one]
    assert one["history"]["tokens"] == two_["history"]["tokens"]
    for key in ("reward_chosen", "reward_rejected"):
        assert len(two_["evals"]["held_out"][key]) == 7
        assert two_["evals"]["held_out"][key] == pytest.approx(one["evals"]["held_out"][key], abs=1e-5)

    lm, tok = load_model("tiny-random", dtype="float32", seed=0)
    rm = build_reward_model("ex", lm, tok, seed=0)
    single_rewards = score(rm, odd_sequences(rm), batch_size=2)
    assert gathered["world"] == 2 and len(gathered["rewards"]) == 8
    torch.testing.assert_close(torch.tensor(gathered["rewards"]), single_rewards, rtol=1e-5, atol=1e-6)


def uneven_budget(rows, batch_size, world=2, micro=2):
    """A token budget under which, in some step, the processes form different numbers of micro-batches."""
    rm = build_reward_model("im", *load_model("tiny-random", dtype="float32", seed=0))
    lengths = [packed_length(rm.encode(r["prompt"], r["chosen"]), rm.encode(r["prompt"], r["rejected"])) for r in rows]
    order = epoch_order(len(rows), seed=0, epoch=0)
    steps = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    for budget in sorted(set(2 * length for length in lengths)):
        for step in steps:
            if len({len(micro_batches(sorted(lengths[i] for i in step[r::world]), micro, budget))
                    for r in range(world) if step[r::world]}) > 1:
                return budget
    raise AssertionError("no budget splits the processes unevenly")


@pytest.mark.parametrize("budgeted", [False, True])
def test_two_processes_match_one(tmp_path, budgeted):
    one, two_, gathered = run_two_and_one(
        tmp_path, ["--config_file", str(ROOT / "configs/accelerate/ddp.yaml"), "--num_processes", "2"],
        budgeted=budgeted)
    assert gathered["distributed_type"] == "MULTI_CPU" and gathered["engines"] == ["DistributedDataParallel"]
    assert_same_run(one, two_, gathered)
