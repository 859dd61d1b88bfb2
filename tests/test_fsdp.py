"""FSDP2 (the shipped ``configs/accelerate/fsdp.yaml``) on two CPU processes (gloo) against one process.

One ``accelerate launch`` (each costs ~20-40 s here) trains, on the tiny random Llama, an IM-RM and an EX-RM
in fp32 and in bf16-mixed and an EX-GRM in fp32 (9 pairs, batch_size 4: steps of 4, 4 and 1 pairs; the
CLI's default gradient checkpointing), saving every reward model; the IM-RM in fp32 and the EX-RM in
bf16-mixed (with FSDP2's CPU offload) are run twice, the second run resuming from the first one's sharded
step-2 checkpoint. The same runs, one process, in this process meanwhile. Checked:

* per-step losses and held-out rewards equal one process's (fp32 within 1e-5; bf16-mixed
  within :data:`BF16_TOL`: the held-out pairs are scored in other batches, rounded otherwise in bf16);
* what the model sees in its forward pass (recorded by :func:`recording`): the EX-RM head's weight is fp32
  under bf16-mixed too; the reference log-probs are fp32 and bit-equal to one process's; bf16 autocast is
  on exactly in the bf16-mixed runs (FSDP's own casting is off: :mod:`rmlib.sharding`);
* the resumed runs end exactly as the uninterrupted ones;
* every saved folder (gathered from the shards on the main process) loads with ``load_reward_model`` and
  scores the held-out pairs as the trained model did.
"""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from rmlib import cli
from rmlib.export import load_reward_model
from rmlib.rewards import ExplicitRM, ImplicitRM
from rmlib.scoring import encode_pairs, score
from rmlib.sharding import ShardingNotSupported
from rmlib.training import make_accelerator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_resume import write_data_dir  # noqa: E402

# bf16-mixed: one and two processes score the held-out pairs in other batches (each process its share), whose
# bf16 rounding differs: measured up to 6.7e-4 (EX-RM rewards; 1.4e-5 IM-RM); fp32: up to 1.4e-6.
BF16_TOL = 5e-3
# setting -> (rm_type, precision, run twice and resume, CPU offload)
RUNS = {"im_fp32": ("im", "fp32", True, False), "ex_fp32": ("ex", "fp32", False, False),
        "grm_fp32": ("grm", "fp32", False, False), "im_bf16": ("im", "bf16-mixed", False, False),
        "ex_bf16": ("ex", "bf16-mixed", True, True)}

CLASSES = {"ex": "ExplicitRM", "im": "ImplicitRM", "grm": "GenerativeRM"}
SEEN: dict = {}


@contextmanager
def recording():
    """Record, per forward pass of an EX-RM or IM-RM, the head's weight dtype, whether autocast is on, and
    the reference log-probs with their dtype (keyed by the sequence's token ids) into :data:`SEEN`."""
    ex_forward, im_forward = ExplicitRM.forward, ImplicitRM.forward

    def seen_autocast():
        SEEN.setdefault("autocast", set()).add(torch.is_autocast_enabled("cpu"))

    def ex(self, batch):
        SEEN.setdefault("head_dtype", set()).add(str(self.head.weight.dtype))
        seen_autocast()
        return ex_forward(self, batch)

    def im(self, batch):
        if batch.ref_logps is not None:
            SEEN.setdefault("ref_dtype", set()).add(str(batch.ref_logps.dtype))
            refs = SEEN.setdefault("refs", {})
            for ids, mask, value in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(),
                                        batch.ref_logps.tolist()):
                refs[",".join(str(t) for t, m in zip(ids, mask) if m)] = value
        seen_autocast()
        return im_forward(self, batch)

    ExplicitRM.forward, ImplicitRM.forward = ex, im
    try:
        yield
    finally:
        ExplicitRM.forward, ImplicitRM.forward = ex_forward, im_forward


def seen_json() -> dict:
    return {k: sorted(v) if isinstance(v, set) else v for k, v in SEEN.items()}


HELPER = '''
import json, os, sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from accelerate import PartialState
from child_hooks import record_engines, uninterrupted_run_keeping_checkpoints
from rmlib.cli import main
from test_fsdp import RUNS, SEEN, recording, seen_json

engines = record_engines()
specs, results, out = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
report = {}
for setting, (_, _, resume, offload) in RUNS.items():
    spec = str(specs / f"{setting}.yaml")
    os.environ["FSDP_OFFLOAD_PARAMS"] = "true" if offload else "false"  # read by each run's FSDP plugin
    engines.clear()
    if resume:  # a first, uninterrupted run keeps its step-2 checkpoint; the second run resumes from it
        uninterrupted_run_keeping_checkpoints(spec, results, f"{setting}/*.json", out / f"{setting}.uninterrupted.json")
    SEEN.clear()
    with recording():
        assert main([spec, "--set", f"results_dir={results}"]) == 0
    report[setting] = {"seen": seen_json(), "engines": list(engines)}
from rmlib.experiment import run_experiment
from rmlib.runconfig import RunConfig
from rmlib.sharding import ShardingNotSupported

try:  # after_training runs on the main process alone: refused under FSDP (it would wait for the other shards)
    run_experiment(RunConfig(setting="after", model="tiny-random", rm_type="im", precision="fp32"),
                   [{"prompt": "a", "chosen": "b", "rejected": "c"}], {}, results,
                   after_training=lambda rm, ref_logps: None)
except ShardingNotSupported as error:
    report["after_training"] = str(error)
if PartialState().is_main_process:
    report["distributed_type"] = PartialState().distributed_type.value
    (out / "report.json").write_text(json.dumps(report))
'''


def write_specs(tmp_path: Path) -> Path:
    data = write_data_dir(tmp_path / "data", n_train=9, n_test=7)
    specs = tmp_path / "specs"
    specs.mkdir()
    for setting, (rm_type, precision, _, _) in RUNS.items():
        spec = {"setting": setting, "model": "tiny-random", "rm_type": rm_type, "precision": precision,
                "lr": 3e-3, "batch_size": 4, "micro_batch_size": 1, "epochs": 1, "checkpoint_every": 2,
                "progress": False, "data_dir": str(data), "eval_batch_size": 3,
                "save_model_dir": str(tmp_path / "saved"), "train": {"data": "ultrafeedback", "split": "train"},
                "eval": {"held_out": {"data": "ultrafeedback", "split": "test"}}}
        (specs / f"{setting}.yaml").write_text(yaml.safe_dump(spec))
    return specs


def record_of(folder: Path, setting: str) -> dict:
    (path,) = folder.glob(f"{setting}/*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The two-process records (and what their models saw) and the one-process ones."""
    tmp_path = tmp_path_factory.mktemp("fsdp")
    specs = write_specs(tmp_path)
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    launcher = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    two = subprocess.Popen([str(launcher), "launch", "--config_file", str(ROOT / "configs/accelerate/fsdp.yaml"),
                            "--num_processes", "2", str(helper), str(Path(__file__).parent), str(specs),
                            str(tmp_path / "two"), str(tmp_path)],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one, one_seen = {}, {}
    threads = torch.get_num_threads()
    try:  # meanwhile, the same runs in this process (one thread, as each launched process)
        torch.set_num_threads(1)
        for setting in RUNS:
            SEEN.clear()
            with recording():
                assert cli.main([str(specs / f"{setting}.yaml"), "--set", f"results_dir={tmp_path / 'one'}",
                                 "--set", "save_model_dir=null"]) == 0
            one[setting], one_seen[setting] = record_of(tmp_path / "one", setting), seen_json()
        output = two.communicate(timeout=900)[0]
    finally:
        torch.set_num_threads(threads)
        if two.poll() is None:
            two.kill()
    assert two.returncode == 0, output[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    two_records = {s: record_of(tmp_path / "two", s) for s in RUNS}
    uninterrupted = {s: json.loads((tmp_path / f"{s}.uninterrupted.json").read_text())
                     for s, run in RUNS.items() if run[2]}
    return {"one": one, "one_seen": one_seen, "two": two_records, "report": report,
            "uninterrupted": uninterrupted, "data": tmp_path / "data"}


@pytest.mark.parametrize("setting", list(RUNS))
def test_fsdp2_two_processes_match_one(launched, setting):
    rm_type, precision, resume, _ = RUNS[setting]
    one, two_, report = launched["one"][setting], launched["two"][setting], launched["report"]
    assert report["distributed_type"] == "FSDP"  # not accelerate's silent fallback to DDP on CPU
    assert set(report[setting]["engines"]) == {"FSDP" + CLASSES[rm_type]}  # FSDP2's fully_shard, in place
    assert (one["world_size"], two_["world_size"]) == (1, 2)
    assert one["run_id"] == two_["run_id"] and two_["precision"]["mode"] == precision
    tol = 1e-5 if precision == "fp32" else BF16_TOL
    steps_one, steps_two = one["history"]["steps"], two_["history"]["steps"]
    assert [s["pairs"] for s in steps_two] == [s["pairs"] for s in steps_one] == [4, 4, 1]
    assert [s["loss"] for s in steps_two] == pytest.approx([s["loss"] for s in steps_one], abs=tol)
    for key in ("reward_chosen", "reward_rejected"):
        assert two_["evals"]["held_out"][key] == pytest.approx(one["evals"]["held_out"][key], abs=tol)
    if resume:  # resumed from the sharded step-2 checkpoint: exactly as the uninterrupted run
        uninterrupted = launched["uninterrupted"][setting]
        assert (two_["history"]["resumed_from_step"], uninterrupted["history"]["resumed_from_step"]) == (2, None)
        assert [s["loss"] for s in steps_two] == [s["loss"] for s in uninterrupted["history"]["steps"]]
        assert two_["evals"]["held_out"] == uninterrupted["evals"]["held_out"]


@pytest.mark.parametrize("setting", [s for s, run in RUNS.items() if run[0] != "grm"])
def test_fsdp2_forward_sees_fp32_head_and_references(launched, setting):
    rm_type, precision, _, _ = RUNS[setting]
    seen, one_seen = launched["report"][setting]["seen"], launched["one_seen"][setting]
    assert seen["autocast"] == one_seen["autocast"] == [precision == "bf16-mixed"]
    if rm_type == "ex":
        assert seen["head_dtype"] == one_seen["head_dtype"] == ["torch.float32"]
        return
    assert seen["ref_dtype"] == ["torch.float32"]
    refs, one_refs = seen["refs"], one_seen["refs"]
    assert len(refs) >= 5  # the main process's share of the training (resumed: step 3 only) and held-out sequences
    assert {k: one_refs[k] for k in refs} == refs  # bit-equal (JSON keeps every bit of an fp32 value)


@pytest.mark.parametrize("setting", list(RUNS))
def test_fsdp2_saved_model_scores_as_trained(launched, setting):
    _, precision, _, _ = RUNS[setting]
    record = launched["two"][setting]
    rm = load_reward_model(record["saved_model"])
    rows = [json.loads(line) for line in (launched["data"] / "ultrafeedback" / "test.jsonl").read_text().splitlines()]
    chosen, rejected = encode_pairs(rm, rows)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        rewards = score(rm, chosen + rejected, batch_size=3)
    held_out = record["evals"]["held_out"]
    tol = 1e-5 if precision == "fp32" else BF16_TOL
    assert rewards.tolist() == pytest.approx(held_out["reward_chosen"] + held_out["reward_rejected"], abs=tol)


def test_fsdp2_refuses_after_training(launched):
    assert "cannot run a model whose weights are sharded" in launched["report"]["after_training"]


def test_deepspeed_launch_is_refused_before_any_work(monkeypatch):
    """A DeepSpeed launch config (accelerate sets ACCELERATE_USE_DEEPSPEED) is refused with the FSDP config
    named, also on a CPU, where accelerate would otherwise run it as DDP without a word."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ShardingNotSupported, match="configs/accelerate/fsdp.yaml"):
        make_accelerator("fp32")
