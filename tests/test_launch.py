"""rmlib.launch: plan entries on a local pool of devices, on submitit's local executor and on a real one-node
SLURM cluster (tests/slurm_cluster.py), with a stand-in worker that records where it ran and writes the
entry's results file (the real worker, ``python -m rmlib.cli run``, trains; its tests are the plan's)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rmlib import cli, launch
from rmlib.results import run_path

ROOT = Path(__file__).resolve().parents[1]

# The stand-in worker: `python STANDIN PLAN --index I`. It reads entry I itself, records its index, pid and
# CUDA_VISIBLE_DEVICES in $STANDIN_RECORD/<I>.<pid>.json, then does what the entry's run.extra.standin says:
# "fail" -> exit 3; "requeue" -> on its first attempt write a progress mark and sleep (to be preempted), on
# the next attempt see the mark ("resume from the checkpoint") and finish; else sleep briefly. Finishing =
# writing <results_dir>/<setting>/<run_id>.json, as the real worker does.
STANDIN = '''
import json, os, sys, time
from pathlib import Path
plan, index = sys.argv[1], int(sys.argv[sys.argv.index("--index") + 1])
entry = json.loads(Path(plan).read_text().splitlines()[index])
record = Path(os.environ["STANDIN_RECORD"])
record.mkdir(parents=True, exist_ok=True)
(record / f"{index}.{os.getpid()}.json").write_text(json.dumps(
    {"index": index, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "rank": os.environ.get("RANK"),
     "t0": time.time()}))
what = entry["run"].get("extra", {}).get("standin")
if what == "fail":
    sys.exit(3)
if what == "requeue":
    mark = record / f"{index}.progress"
    if not mark.exists():
        mark.write_text("step 1")
        time.sleep(120)
time.sleep(float(os.environ.get("STANDIN_SLEEP", "0.5")))
out = Path(entry["results_dir"]) / entry["run"]["setting"] / (entry["run_id"] + ".json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"run_id": entry["run_id"], "index": index}))
'''


def entry(run_id: str, results_dir, gpus: int = 1, estimate=None, standin=None) -> dict:
    """A plan entry in rmlib.plan's format (PlanEntry's fields; a registered data builder, never called here)."""
    return {"notebook": "00_test", "profile": "smoke", "run_id": run_id, "results_dir": str(results_dir),
            "run": {"setting": "standin", "model": "tiny-random", "extra": {"standin": standin} if standin else {}},
            "data": {"builder": "hamiltonian", "args": {}}, "task": None, "after_training": None,
            "save_model_dir": None, "gpus": gpus, "launcher": "fsdp" if gpus > 1 else "single",
            "estimate": estimate, "label": run_id}


def write_plan(path: Path, n: int, special: dict | None = None, gpus: dict | None = None) -> Path:
    """A plan of ``n`` entries writing to ``<path's folder>/results``; ``special``: index -> standin action."""
    special, gpus = special or {}, gpus or {}
    path.write_text("".join(json.dumps(entry(f"run{i:02d}", path.parent / "results", gpus.get(i, 1),
                                             standin=special.get(i))) + "\n" for i in range(n)))
    return path


@pytest.fixture
def standin(tmp_path, monkeypatch):
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    monkeypatch.setenv("STANDIN_RECORD", str(tmp_path / "record"))
    return (str(script),)


def records(tmp_path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (tmp_path / "record").glob("*.json")),
                  key=lambda r: (r["index"], r["t0"]))


def test_pool_runs_every_entry_once_in_parallel_on_distinct_devices_skips_done_and_reports_failures(
        tmp_path, standin, monkeypatch, capsys):
    plan = write_plan(tmp_path / "plan.jsonl", 5, special={2: "fail"})
    results = tmp_path / "results"
    done_before = run_path(results, "standin", "run04")  # entry 4 is finished: not run again
    done_before.parent.mkdir(parents=True)
    done_before.write_text("{}")
    lines = []
    outcomes = launch.run_pool(plan, "cpu:2", results_dir=results, worker=standin, poll=0.05, log=lines.append)

    assert [(o.index, o.status) for o in outcomes] == [(0, "done"), (1, "done"), (2, "failed"), (3, "done"),
                                                      (4, "skipped")]
    ran = records(tmp_path)
    assert [r["index"] for r in ran] == [0, 1, 2, 3]  # each once, the done one never
    assert all(r["cuda"] == "" for r in ran)  # CPU workers see no GPU
    assert {o.devices for o in outcomes[:4]} <= {("cpu0",), ("cpu1",)}
    # two at a time: the first two started together, on the two distinct slots
    assert outcomes[0].devices != outcomes[1].devices
    assert abs(ran[0]["t0"] - ran[1]["t0"]) < 0.45  # both within the first one's 0.5 s sleep
    for i in (0, 1, 3):
        assert run_path(results, "standin", f"run{i:02d}").exists()
    assert "exit status 3" in outcomes[2].detail and outcomes[2].log.exists()
    assert "FAILED [2] run02" in lines[-1]  # the summary names it
    # the command line: exit 1 when an entry failed, 0 once everything is done (the failed one fixed)
    monkeypatch.setattr(launch, "WORKER", standin)  # the default worker, which the command line uses
    args = ["pool", str(plan), "--devices", "cpu:2", "--results-dir", str(results)]
    assert cli.main(args) == 1
    capsys.readouterr()
    write_plan(plan, 5)
    assert cli.main(args) == 0
    assert "1 done, 4 skipped of 5 entries" in capsys.readouterr().out
    assert [r["index"] for r in records(tmp_path)] == [0, 1, 2, 2, 2, 3]  # only the failed entry ran again


def test_pool_pins_gpus_and_starts_a_k_gpu_entry_with_accelerate_launch(tmp_path, standin, monkeypatch):
    """GPU ids: each single entry gets its own CUDA_VISIBLE_DEVICES; a 2-GPU entry waits for two free devices
    and is started as `accelerate launch --num_processes 2 --config_file configs/accelerate/fsdp.yaml`."""
    plan = write_plan(tmp_path / "plan.jsonl", 4, gpus={1: 2})
    launched = []
    real = launch.worker_command

    def spy(plan_, index, entry, worker, cpu=False, port=None):  # check accelerate's command, run the stand-in
        cmd = real(plan_, index, entry, worker, cpu, port)
        launched.append((index, cmd))
        return [sys.executable, *worker, str(plan_), "--index", str(index)]
    monkeypatch.setattr(launch, "worker_command", spy)
    monkeypatch.setenv("STANDIN_SLEEP", "0.3")
    outcomes = launch.run_pool(plan, "5,7", results_dir=tmp_path / "results", worker=standin, poll=0.02,
                               log=lambda *a: None)
    assert [o.status for o in outcomes] == ["done"] * 4
    cuda = {r["index"]: r["cuda"] for r in records(tmp_path)}
    assert cuda[0] in {"5", "7"} and cuda[1] == "5,7" and {cuda[2], cuda[3]} == {"5", "7"}
    starts = {r["index"]: r["t0"] for r in records(tmp_path)}
    assert starts[1] >= starts[0] + 0.25  # entry 0 held one of the two devices: entry 1 waited for it
    assert min(starts[2], starts[3]) >= starts[1] + 0.25  # and the entries after it wait their turn
    cmd = dict(launched)[1]
    assert cmd[0].endswith("accelerate") and cmd[1:7] == [
        "launch", "--num_processes", "2", "--config_file", str(ROOT / "configs/accelerate/fsdp.yaml"),
        "--main_process_port"]
    assert cmd[-4:] == [standin[0], str(plan.resolve()), "--index", "1"]
    assert dict(launched)[0] == [sys.executable, standin[0], str(plan.resolve()), "--index", "0"]
    # the default worker is the plan's run command; on CPU devices FSDP skips its rank-0 broadcast
    entry = launch.read_plan(plan)[1]
    default = real(plan, 1, entry, cpu=True)
    assert default[-6:] == ["-m", "rmlib.cli", "run", str(plan.resolve()), "--index", "1"]
    assert "--fsdp_sync_module_states" in default


def test_pool_refuses_bad_input_before_any_work(tmp_path, standin):
    plan = write_plan(tmp_path / "plan.jsonl", 2, gpus={1: 4})
    with pytest.raises(ValueError, match="needs 4 devices; --devices 'cpu:2' has 2"):
        launch.run_pool(plan, "cpu:2", results_dir=tmp_path / "r", worker=standin, log=lambda *a: None)
    for bad in ("cpu2", "cpu:0", "0,0", "gpu1"):
        with pytest.raises(ValueError, match="--devices"):
            launch.parse_devices(bad)
    assert launch.parse_devices("cpu") == (["cpu0"], True) and launch.parse_devices("3,1") == (["3", "1"], False)
    with pytest.raises(ValueError, match=r"entries \(0-1\); out of range: \[5\]"):
        launch.run_pool(plan, "cpu:2", indices="0,5", results_dir=tmp_path / "r", worker=standin)
    assert launch.parse_indices("0-2,7", 9) == [0, 1, 2, 7]
    with pytest.raises(ValueError, match="batch: only for CPU devices"):  # a GPU keeps one process per entry
        launch.run_pool(plan, "0,1", results_dir=tmp_path / "r", worker=standin, batch=True)
    assert not (tmp_path / "record").exists()


def test_ctrl_c_stops_the_workers(tmp_path, standin):
    plan = write_plan(tmp_path / "plan.jsonl", 2, special={0: "requeue", 1: "requeue"})  # both sleep 120 s
    code = (f"from rmlib import launch; launch.run_pool({str(plan)!r}, 'cpu:2', "
            f"results_dir={str(tmp_path / 'r')!r}, worker={standin!r})")
    # SIGINT at its default, as in a terminal: a test run started in the background (`make test &`, nohup) has it
    # ignored, and a Python started with SIGINT ignored never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120  # the pool imports rmlib (torch, transformers) first: slow on a loaded machine
    while len(list((tmp_path / "record").glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    started = len(list((tmp_path / "record").glob("*.json")))
    if started < 2:
        proc.kill()
    assert started == 2, f"the pool started {started} of 2 workers within 120 s"
    proc.send_signal(2)  # Ctrl-C, once both workers run (not during the imports, where a library may swallow it)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out
    for r in records(tmp_path):
        pid = int(next((tmp_path / "record").glob(f"{r['index']}.*.json")).name.split(".")[1])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- submitit -----------------------------------------------------------------------------------------------

submitit = pytest.importorskip("submitit")


def test_slurm_arrays_take_gpus_and_time_from_the_plan(tmp_path, capsys):
    plan = tmp_path / "plan.jsonl"
    entries = [entry("a", tmp_path, 1, {"gpu_hours": 0.5}), entry("b", tmp_path, 1, None),
               entry("c", tmp_path, 4, {"gpu_hours": 8.0, "wall_hours": 2.0}),
               entry("d", tmp_path, 1, {"gpu_hours": 0.6})]
    plan.write_text("".join(json.dumps(e) + "\n" for e in entries))
    # 0.5 h x 1.5 + 15 min = 60 min; 0.6 h -> 69 -> 90; 2 h (8 GPU-h over 4 GPUs) x 1.5 + 15 = 195 -> 210
    assert launch.arrays(plan, None, default_min=240) == {(1, 60): [0], (1, 240): [1], (4, 210): [2], (1, 90): [3]}
    with pytest.raises(ValueError, match="needs 4 GPUs; a node has 2"):
        launch.arrays(plan, None, 240, gpus_per_node=2)
    assert launch.main(["slurm", str(plan), "--dry-run", "--partition", "gpu"]) == 0
    assert "1 task(s) x 4 GPU(s), 210 min each, 16 at a time: entries [2]" in capsys.readouterr().out


def test_a_preempted_task_is_requeued_for_the_same_entry(tmp_path, standin):
    plan = write_plan(tmp_path / "plan.jsonl", 1)
    task = launch.PlanTask(plan, "unused", worker=standin)
    done = run_path(tmp_path / "results", "standin", "run00")  # finished meanwhile (e.g. by a requeued twin)
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    assert task(0) == "skipped run00: results file exists" and not (tmp_path / "record").exists()
    assert isinstance(task, submitit.helpers.Checkpointable)
    again = task.checkpoint(3)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is task and again.args == (3,) and not again.kwargs


def test_submitit_local_executor_runs_a_plan(tmp_path, standin):
    plan = write_plan(tmp_path / "plan.jsonl", 2, special={1: "fail"})
    jobs = launch.submit(plan, tmp_path / "jobs", results_dir=tmp_path / "results", executor="local",
                         gpus_per_node=0, worker=standin, log=lambda *a: None)
    outcome = launch.wait(jobs, timeout=120, poll=0.2, log=lambda *a: None)
    assert [e is None for _, e in outcome] == [True, False]
    assert "returned non-zero exit status 3" in str(outcome[1][1])
    assert [r["index"] for r in records(tmp_path)] == [0, 1]
    assert run_path(tmp_path / "results", "standin", "run00").exists()


# --- a real one-node SLURM (the `slurm` fixture of conftest.py: tests/slurm_cluster.py) ----------------------

@pytest.mark.slow  # ~45 s contended: SLURM's scheduling, and every task imports torch via rmlib
def test_slurm_array_runs_every_entry_and_requeues_a_timed_out_one(tmp_path, standin, slurm):
    """sbatch arrays through submitit on the one-node cluster (2 CPUs, no GPUs): every task runs once; the
    task of entry 2 times out mid-run (submitit's test signal: USR2, as SLURM sends before the time limit),
    is requeued through PlanTask.checkpoint, and resumes to the end. (Submitit's simulated *preemption* sends
    SIGTERM to the job step first; on this loaded one-node cluster the step's end then killed the handler's
    `scontrol requeue` in one run of three: a race of the simulation, not of the requeue path, which is the
    same checkpoint() -> requeue for both.)"""
    plan = write_plan(tmp_path / "plan.jsonl", 4, special={2: "requeue"})
    results = tmp_path / "results"
    done = run_path(results, "standin", "run03")  # done already: not submitted
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    jobs = launch.submit(plan, tmp_path / "jobs", results_dir=results, executor="slurm", gpus_per_node=0,
                         array_parallelism=2, worker=standin, log=lambda *a: None)
    assert len(jobs) == 3 and len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array, entry 3 not in it
    deadline = time.monotonic() + 90
    while not (tmp_path / "record" / "2.progress").exists():
        assert time.monotonic() < deadline, "entry 2 never started"
        time.sleep(0.2)
    time.sleep(1.0)  # submitit's handler is installed before the task runs; let the worker get going
    jobs[2]._interrupt(timeout=True)  # SLURM's USR2 before the time limit -> checkpoint() -> requeue
    # SLURM holds a requeued job for 2 minutes (BeginTime); release it once requeued
    while "Reason=BeginTime" not in (show := subprocess.run(["scontrol", "show", "job", jobs[2].job_id],
                                                      capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline + 30, f"entry 2 was not requeued:\n{show}\n{jobs[2].stderr()}"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={jobs[2].job_id}", "StartTime=now"], check=True)
    outcome = launch.wait(jobs, timeout=120, poll=0.5, log=lambda *a: None)
    assert [e for _, e in outcome] == [None] * 3, f"{outcome[2][1]}\n{jobs[2].stderr()}\n{jobs[2].stdout()}"
    assert [r["index"] for r in records(tmp_path)] == [0, 1, 2, 2]  # entry 2 twice: timed out, then resumed
    assert all(run_path(results, "standin", f"run{i:02d}").exists() for i in range(3))
