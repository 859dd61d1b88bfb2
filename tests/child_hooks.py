"""What the child scripts of the multi-process tests (test_multiprocess, test_fsdp) share: recording which engine
each training ran through, and a first uninterrupted run that keeps its checkpoints for the resumed run after it."""

from pathlib import Path

import rmlib.experiment as experiment
from accelerate import PartialState
from rmlib.cli import main


def record_engines() -> list:
    """Wrap ``rmlib.experiment.train``; the returned list gets the class name of the model each training ran
    through (the accelerate-prepared one: DistributedDataParallel, FSDP...)."""
    engines, train = [], experiment.train

    def recording_train(*args, **kwargs):
        history = train(*args, **kwargs)
        engines.append(type(history.engine_model).__name__)
        return history

    experiment.train = recording_train
    return engines


def uninterrupted_run_keeping_checkpoints(spec: str, results: Path, record_glob: str, keep_as: Path) -> None:
    """Run ``spec`` once without removing its checkpoints (the next run of it resumes from its step-2
    checkpoint) and move its results record to ``keep_as`` (so the next run trains instead of reusing it)."""
    remove_checkpoints = experiment.remove_checkpoints
    experiment.remove_checkpoints = lambda folder: None
    try:
        assert main([spec, "--set", f"results_dir={results}"]) == 0
    finally:
        experiment.remove_checkpoints = remove_checkpoints
    if PartialState().is_main_process:
        (record,) = Path(results).glob(record_glob)
        record.rename(keep_as)
    PartialState().wait_for_everyone()
