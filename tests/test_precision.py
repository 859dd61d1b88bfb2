"""The precision setting: how "auto" decides (GPU support, a measured CPU probe), the retired ``dtype``,
accelerate launch configs that disagree, and the precision recorded in every results file.

The CPU probe is tested with injected timings only; no test asserts anything about this machine's speed."""

import json

import pytest
import torch

from rmlib import cli, precision as prec
from rmlib.data import EvalSet
from rmlib.experiment import run_experiment
from rmlib.params import ParameterError
from rmlib.precision import Precision, PrecisionError, decide_cpu, probe_cpu, resolve_precision
from rmlib.results import results_table
from rmlib.runconfig import RunConfig
from rmlib.training import make_accelerator

PAIRS = [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
         {"prompt": "Add 2 and 3.", "chosen": "2 + 3 = 5", "rejected": "2 + 3 = 6, obviously."}]


def fake_measure(fp32_gflops: float, bf16_gflops: float, calls: list | None = None):
    """A ``measure(dtype, size, repeats)`` that reports the given throughputs."""
    def measure(dtype, size, repeats):
        if calls is not None:
            calls.append((dtype, size, repeats))
        rate = fp32_gflops if dtype == torch.float32 else bf16_gflops
        return 2.0 * size ** 3 / (rate * 1e9)
    return measure


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    """An empty probe cache (instead of the one in the rmlib cache folder)."""
    path = tmp_path / "cache" / prec.PROBE_FILE
    monkeypatch.setattr(prec, "probe_cache_file", lambda: path)
    return path


def test_probe_decision_with_injected_timings():
    assert decide_cpu({"fp32_gflops": 262, "bf16_gflops": 2500})[0] == "bf16-mixed"  # AMX-like
    assert decide_cpu({"fp32_gflops": 98, "bf16_gflops": 0.8})[0] == "fp32"  # AVX2-like
    assert decide_cpu({"fp32_gflops": 100, "bf16_gflops": 150})[0] == "bf16-mixed"  # exactly 1.5x
    mode, reason = decide_cpu({"fp32_gflops": 100, "bf16_gflops": 140})
    assert mode == "fp32" and "1.4x < 1.5x" in reason

    calls = []  # slow bf16: one screening matmul at 512^3 decides, the slow full-size timing is skipped
    slow = probe_cpu(measure=fake_measure(98, 0.8, calls))
    assert (slow["fp32_gflops"], slow["bf16_gflops"], slow["bf16_size"]) == (98, 0.8, 512)
    assert calls == [(torch.float32, 1024, 3), (torch.bfloat16, 512, 1)]
    calls.clear()
    fast = probe_cpu(measure=fake_measure(262, 2500, calls))
    assert fast["bf16_size"] == 1024 and fast["speedup"] == pytest.approx(2500 / 262, rel=1e-3)
    assert (torch.bfloat16, 1024, 3) in calls
    assert {"cpu", "torch", "threads"} <= fast.keys()


def test_auto_on_cpu_probes_once_per_machine(probe_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(prec, "time_matmul", fake_measure(262, 2500, calls))
    first = resolve_precision("auto", "cpu")
    assert first.mode == "bf16-mixed" and first.requested == "auto" and first.probe["cached"] is False
    assert "bf16 2500 GFLOP/s vs fp32 262 GFLOP/s = 9.54x >= 1.5x" in first.reason
    n = len(calls)
    second = resolve_precision("auto", "cpu")
    assert len(calls) == n and second.probe["cached"] is True and second.mode == first.mode
    key = json.loads(next(iter(json.loads(probe_cache.read_text()))))
    assert key == prec.machine_key()  # cached per CPU model, torch version and thread count


def test_resolve_precision_rules(monkeypatch):
    assert resolve_precision("fp32", "cpu") == Precision("fp32", "requested", "fp32")
    assert resolve_precision("bf16-mixed", "cpu").mode == "bf16-mixed"  # correct anywhere, if slow
    with pytest.raises(PrecisionError, match="unknown precision 'bf16'"):
        resolve_precision("bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = resolve_precision("auto", "cuda")
    assert gpu.mode == "bf16-mixed" and "H200 supports bf16" in gpu.reason and gpu.probe is None
    assert resolve_precision("fp32", "cuda").mode == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda").mode == "fp32"
    with pytest.raises(PrecisionError, match="needs a GPU with bf16"):
        resolve_precision("bf16-mixed", "cuda")


def test_dtype_bfloat16_is_refused_naming_the_smallest_update(tmp_path):
    for dtype in ("bfloat16", "float16"):
        with pytest.raises(ParameterError, match=r"'dtype'.*smallest relative update.*bf16-mixed") as err:
            cli.check_spec({"model": "tiny-random", "dtype": dtype})
    assert "2^-11" in str(err.value)  # float16
    with pytest.raises(ParameterError, match=r"2\^-8 = 0\.0039 of the weight.*lr 1e-06 a weight of magnitude "
                                             r"0\.02 needs an update >= 7\.8e-05"):
        cli.check_spec({"dtype": "bfloat16"})
    assert cli.check_spec({"dtype": "float32"})["precision"] == "fp32"
    assert cli.check_spec({"dtype": "auto", "precision": "bf16-mixed"})["precision"] == "bf16-mixed"
    assert "dtype" not in cli.check_spec({})
    with pytest.raises(ParameterError, match="disagree"):
        cli.check_spec({"dtype": "float32", "precision": "bf16-mixed"})
    with pytest.raises(ParameterError, match="'precision'"):
        cli.check_spec({"precision": "bf16"})
    config = RunConfig(setting="p", model="tiny-random", epochs=1, lr=1e-3, batch_size=2, micro_batch_size=2,
                       progress=False)
    with pytest.warns(DeprecationWarning), pytest.raises(PrecisionError, match="bf16-mixed"):
        run_experiment(config, PAIRS, {"e": EvalSet(PAIRS)}, tmp_path, dtype="bfloat16")


def test_launch_config_that_disagrees_is_refused(monkeypatch):
    fp32, mixed = Precision("fp32", "requested", "fp32"), Precision("bf16-mixed", "requested", "bf16-mixed")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # 'no': the spec's precision decides
    prec.check_launch_config(fp32)
    prec.check_launch_config(mixed)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    prec.check_launch_config(mixed)
    with pytest.raises(PrecisionError, match="launch config sets mixed_precision 'bf16'.*precision fp32"):
        make_accelerator(fp32)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(PrecisionError, match="'fp16'"):
        prec.check_launch_config(mixed)


def test_accelerators_of_both_precisions_in_one_process():
    """accelerate's state is process-wide; make_accelerator rebuilds it when the precision changes."""
    assert make_accelerator("bf16-mixed").mixed_precision == "bf16"
    assert make_accelerator("fp32").mixed_precision == "no"
    assert make_accelerator("bf16-mixed").mixed_precision == "bf16"


def test_resolved_precision_is_recorded_in_the_results_file(tmp_path, probe_cache, monkeypatch):
    monkeypatch.setattr(prec, "time_matmul", fake_measure(262, 2500))  # "auto" here: as on a CPU with AMX
    config = RunConfig(setting="p", model="tiny-random", epochs=1, lr=1e-3, batch_size=2, micro_batch_size=2,
                       progress=False)
    runs = {p: run_experiment(config.replace(precision=p), PAIRS, {"e": EvalSet(PAIRS)}, tmp_path)
            for p in ("auto", "fp32")}
    stored = json.loads(runs["auto"].path.read_text())
    assert stored["precision"]["requested"] == "auto" and stored["precision"]["mode"] == "bf16-mixed"
    assert "bf16 2500 GFLOP/s vs fp32 262 GFLOP/s" in stored["precision"]["reason"]
    assert stored["precision"]["probe"]["fp32_gflops"] == 262 and stored["spec"]["precision"] == "bf16-mixed"
    assert json.loads(runs["fp32"].path.read_text())["precision"]["mode"] == "fp32"
    assert runs["auto"].record["run_id"] != runs["fp32"].record["run_id"]  # the run id has the resolved mode
    explicit = run_experiment(config.replace(precision="bf16-mixed"), PAIRS, {"e": EvalSet(PAIRS)}, tmp_path)
    assert explicit.reused and explicit.record["run_id"] == runs["auto"].record["run_id"]  # same computation
    assert sorted(results_table(tmp_path, "p")["precision"]) == ["bf16-mixed", "fp32"]


def test_shipped_launch_configs_leave_precision_to_the_spec():
    import yaml
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert config["mixed_precision"] == "no", path.name  # "no": rmlib passes the resolved precision
        assert "dtype" not in path.read_text().replace("mixed_precision", ""), path.name  # the retired key


def test_accelerator_passed_in_sets_auto_and_must_match_an_explicit_precision(tmp_path):
    config = RunConfig(setting="a", model="tiny-random", epochs=1, lr=1e-3, batch_size=2, micro_batch_size=2,
                       progress=False)
    run = run_experiment(config, PAIRS, {"e": EvalSet(PAIRS)}, tmp_path, accelerator=make_accelerator("fp32"))
    assert run.record["precision"] == {"mode": "fp32", "reason": "the accelerator passed in", "requested": "auto",
                                       "probe": None}
    with pytest.raises(PrecisionError, match="accelerator passed in runs mixed_precision 'no'"):
        run_experiment(config.replace(precision="bf16-mixed"), PAIRS, {"e": EvalSet(PAIRS)}, tmp_path,
                       accelerator=make_accelerator("fp32"))
