"""Runs that survive: checkpoints and exact resumption, SIGKILL for real, determinism, sweeps with failures.

All on the tiny random model with short synthetic preference rows, so each run takes seconds."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rmlib import checkpoint as ckpt
from rmlib.data import EvalSet
from rmlib.experiment import run_experiment
from rmlib.models import load_model
from rmlib.rewards import build_reward_model
from rmlib.runconfig import RunConfig
from rmlib.scoring import encode_pairs
from rmlib.sweep import grid, run_sweep
from rmlib.training import train

ROOT = Path(__file__).resolve().parents[1]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"prompt": f"Question {i}: {text(3)}?", "chosen": text(rng.randint(2, 10)),
             "rejected": text(rng.randint(2, 10))} for i in range(n)]


def write_data_dir(folder: Path, n_train: int, n_test: int) -> Path:
    (folder / "ultrafeedback").mkdir(parents=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        with open(folder / "ultrafeedback" / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in synthetic_rows(n, seed):
                f.write(json.dumps(row) + "\n")
    return folder


def _train_tiny(rm_type, checkpoint_dir=None, crash_at=None, lr=3e-3):
    lm, tok = load_model("tiny-random", dtype="float32", seed=0)
    rm = build_reward_model(rm_type, lm, tok, seed=0)
    chosen, rejected = encode_pairs(rm, synthetic_rows(10, 0))
    held_out = [s for pair in encode_pairs(rm, synthetic_rows(3, 1)) for s in pair]
    config = RunConfig(epochs=2, lr=lr, batch_size=4, micro_batch_size=2, progress=False, checkpoint_every=2)

    def on_step(record):
        if record["step"] == crash_at:
            raise KeyboardInterrupt("simulated crash")

    history = train(rm, chosen, rejected, config, reference_sequences=held_out, on_step=on_step,
                    checkpoint_dir=checkpoint_dir)
    return history, rm


@pytest.mark.parametrize("rm_type", ["ex", "im"])
def test_crashed_training_resumes_exactly(rm_type, tmp_path):
    """Crash after step 5 (checkpoints at 2 and 4), rerun: same losses, epochs and weights, bit for bit."""
    reference, rm_ref = _train_tiny(rm_type)
    folder = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _train_tiny(rm_type, folder, crash_at=5)
    assert [p.name for p in folder.iterdir()] == ["step-000004"]  # the older step-000002 was removed
    if rm_type == "im":
        with pytest.raises(ckpt.CheckpointMismatch, match="lr"):  # a checkpoint of another run is refused
            _train_tiny(rm_type, folder, lr=1e-3)
    resumed, rm_res = _train_tiny(rm_type, folder)
    assert resumed.resumed_from_step == 4 and reference.resumed_from_step is None
    assert resumed.steps == reference.steps and resumed.epochs == reference.epochs
    assert len(resumed.steps) == 6 and resumed.tokens == reference.tokens
    for (name, a), b in zip(rm_ref.state_dict().items(), rm_res.state_dict().values()):
        assert torch.equal(a, b), name
    if rm_type == "im":  # the reference log-probs are those of the initial model, restored from the checkpoint
        assert resumed.ref_logps == reference.ref_logps


def test_resume_restores_the_reference_logprobs_from_the_checkpoint_data(tmp_path, monkeypatch):
    """On resume, ln pi_ref comes from the checkpoint's data (reference.pt), never recomputed: values
    changed in the file are the ones the resumed run trains and evaluates with."""
    from rmlib import training

    folder = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _train_tiny("im", folder, crash_at=3)
    step = ckpt.latest_checkpoint(folder)
    saved = ckpt.load_ref_logps(step)
    assert len(saved) == 2 * 10 + 2 * 3  # the training pairs and the held-out set, as data
    edited = {s: v + 0.25 for s, v in saved.items()}
    torch.save([(list(s.input_ids), s.response_start, v) for s, v in edited.items()], step / ckpt.REFERENCE_FILE)
    monkeypatch.setattr(training, "reference_logps", lambda *a, **k: pytest.fail("recomputed on resume"))
    resumed, _ = _train_tiny("im", folder)
    assert resumed.resumed_from_step == 2 and resumed.ref_logps == edited


def test_init_optimizer_state_leaves_weights_and_is_overwritten_by_a_load():
    """What FSDP's sharded load needs (rmlib.checkpoint.init_optimizer_state): Adam's state tensors exist,
    the weights have not moved, and a loaded state replaces them."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    ckpt.init_optimizer_state(optimizer)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert all(p.grad is None for p in layer.parameters()) and optimizer.param_groups[0]["lr"] == 0.1
    state = optimizer.state[layer.weight]
    assert float(state["step"]) == 1 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    trained = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 3)).sum().backward()
    trained.step()
    optimizer.load_state_dict(trained.state_dict())
    assert float(optimizer.state[layer.weight]["step"]) == 1
    assert torch.equal(optimizer.state[layer.weight]["exp_avg"], trained.state[layer.weight]["exp_avg"])
    ckpt.init_optimizer_state(optimizer)  # an optimizer with a state is left as it is
    assert torch.equal(optimizer.state[layer.weight]["exp_avg"], trained.state[layer.weight]["exp_avg"])


def test_incomplete_checkpoints_are_ignored_and_removed(tmp_path):
    for name, complete in (("step-000002", True), ("step-000006", False), (".step-000004.tmp", True)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / ckpt.STATE_FILE).write_text("{}")
    # step-000006 has no trainer_state.json (cannot happen with save_checkpoint, which writes it last
    # and renames the folder after); the .tmp folder is a save interrupted by a kill.
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000002"
    assert [p.name for p in ckpt.remove_incomplete(tmp_path)] == [".step-000004.tmp"]
    assert not (tmp_path / ".step-000004.tmp").exists()
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None


def _cli(spec_path, results_dir, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "rmlib.cli", str(spec_path), "--set", f"results_dir={results_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _one_record(results_dir) -> dict:
    files = list(Path(results_dir).glob("*/*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_sigkill_then_rerun_matches_uninterrupted_run(tmp_path, capsys):
    """The real thing: a training process killed with SIGKILL right after its first checkpoint; the same
    command again resumes and ends with the metrics of a run that was never interrupted."""
    data = write_data_dir(tmp_path / "data", n_train=16, n_test=5)
    spec = {"setting": "resume", "model": "tiny-random", "rm_type": "im", "lr": 3e-3, "batch_size": 4,
            "micro_batch_size": 2, "epochs": 2, "checkpoint_every": 2, "progress": False, "data_dir": str(data),
            "train": {"data": "ultrafeedback", "split": "train"},
            "eval": {"held_out": {"data": "ultrafeedback", "split": "test"}}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    uninterrupted = _cli(spec_path, tmp_path / "clean")  # runs alongside the killed one

    victim = _cli(spec_path, tmp_path / "killed")
    checkpoints = tmp_path / "killed" / "resume"
    while victim.poll() is None and not list(checkpoints.glob("*.ckpt/step-*")):
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    output = victim.communicate()[0]
    assert victim.returncode == -signal.SIGKILL, output
    assert not list(checkpoints.glob("*.json")), "the run finished before the kill: the test proves nothing"
    saved = ckpt.latest_checkpoint(next(checkpoints.glob("*.ckpt")))
    assert saved is not None and ckpt.read_state(saved)["step"] < 8

    rerun = _cli(spec_path, tmp_path / "killed")
    out_rerun = rerun.communicate()[0]
    out_clean = uninterrupted.communicate()[0]
    assert rerun.returncode == 0, out_rerun
    assert uninterrupted.returncode == 0, out_clean
    a, b = _one_record(tmp_path / "clean"), _one_record(tmp_path / "killed")
    assert a["run_id"] == b["run_id"]
    assert b["history"]["resumed_from_step"] >= 2 and a["history"]["resumed_from_step"] is None
    assert [s["step"] for s in b["history"]["steps"]] == list(range(1, 9))
    for x, y in zip(a["history"]["steps"] + a["history"]["epochs"], b["history"]["steps"] + b["history"]["epochs"]):
        for key in x:
            assert x[key] == pytest.approx(y[key], abs=1e-6), (key, x, y)
    for key in ("reward_chosen", "reward_rejected"):
        assert a["evals"]["held_out"][key] == pytest.approx(b["evals"]["held_out"][key], abs=1e-6)
    assert a["evals"]["held_out"]["accuracy"] == b["evals"]["held_out"]["accuracy"]
    assert not list(checkpoints.glob("*.ckpt")), "checkpoints are removed once the results file exists"

    # the same command once more: the finished run is recognised by its parameters and not redone
    from rmlib.cli import main
    assert main([str(spec_path), "--set", f"results_dir={tmp_path / 'killed'}"]) == 0
    assert "reused:" in capsys.readouterr().out
    assert _one_record(tmp_path / "killed") == b


def _quick_run(results_dir, seed=0, rm_type="ex", **kwargs):
    run = RunConfig(setting="det", model="tiny-random", rm_type=rm_type, epochs=1, lr=3e-3, batch_size=4,
                    micro_batch_size=4, seed=seed, progress=False)
    return run_experiment(run, synthetic_rows(8, 0), {"held_out": EvalSet(synthetic_rows(4, 1))}, results_dir, **kwargs)


def _comparable(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k != "timings"}
    out["history"] = {k: v for k, v in record["history"].items() if k != "seconds"}
    return out


def test_same_parameters_and_seed_give_identical_results(tmp_path):
    first = _quick_run(tmp_path / "a")
    random.seed(123)
    torch.manual_seed(123)  # global RNG state left by other code must not matter
    second = _quick_run(tmp_path / "b")
    assert _comparable(first.record) == _comparable(second.record)
    other_seed = _quick_run(tmp_path / "c", seed=1)
    assert other_seed.record["evals"]["held_out"]["reward_chosen"] != first.record["evals"]["held_out"]["reward_chosen"]


def test_sweep_failure_leaves_other_results_and_is_reported(tmp_path):
    specs = grid({"rm_type": ["ex", "not-a-type", "im"]})
    report = run_sweep(specs, lambda spec: _quick_run(tmp_path, rm_type=spec["rm_type"]))
    assert [o is None for o in report.outcomes] == [False, True, False]
    assert len(list((tmp_path / "det").glob("*.json"))) == 2  # the runs before and after the failure
    summary = report.summary()
    assert summary.startswith("2 of 3 runs finished, 1 failed")
    assert "run 1 failed with ParameterError" in summary and "'rm_type': 'not-a-type'" in summary


def test_command_line_sweep_grid():
    from rmlib.cli import build_specs

    specs = build_specs({"model": "tiny-random"}, sets=["train.limit=8", "lr=1e-5"],
                        sweeps=["seed=0,1", "rm_type=ex,im"])
    assert [(s["seed"], s["rm_type"]) for s in specs] == [(0, "ex"), (0, "im"), (1, "ex"), (1, "im")]
    assert all(s["train"] == {"data": "ultrafeedback", "split": "train", "limit": 8} and s["lr"] == 1e-5
               for s in specs)


def test_command_line_sweep_with_a_failed_run_exits_1_and_names_it(tmp_path, monkeypatch, capsys):
    """A sweep goes on past a failed run, but the command's exit status says it failed (a cluster script or
    `&&` chain must not take a partial sweep for a complete one)."""
    from rmlib import cli
    from rmlib.results import NonFiniteResult

    def run_spec(spec, force=False, accelerator=None):
        if spec["seed"] == 1:
            raise NonFiniteResult("seed 1 diverged")
        return _quick_run(tmp_path, seed=spec["seed"])

    monkeypatch.setattr(cli, "run_spec", run_spec)
    data = write_data_dir(tmp_path / "data", 8, 4)
    status = cli.main(["--set", "model=tiny-random", "--set", f"data_dir={data}", "--set", "train.limit=8",
                       "--sweep", "seed=0,1,2"])
    err = capsys.readouterr().err
    assert status == 1 and "2 of 3 runs finished, 1 failed" in err and "seed 1 diverged" in err
    assert len(list((tmp_path / "det").glob("*.json"))) == 2  # the runs before and after the failure
