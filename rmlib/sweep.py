"""Running many runs in a row: a failing run is recorded and the others go on.

Each run writes its own results file atomically when it finishes (:func:`rmlib.experiment.run_experiment`),
so a failure -- a bad parameter, a data problem, a crash inside training -- cannot damage the results of
the runs before or after it. :func:`run_sweep` returns a :class:`SweepReport`; its :meth:`~SweepReport.summary`
lists every failed run with its parameters and error. ``KeyboardInterrupt`` is not caught.
"""

from __future__ import annotations

import itertools
import sys
import traceback
from dataclasses import dataclass, field


@dataclass
class SweepFailure:
    index: int
    params: dict
    error: str       # "ExceptionType: message"
    traceback: str


@dataclass
class SweepReport:
    outcomes: list = field(default_factory=list)    # one per run, None where the run failed
    failures: list[SweepFailure] = field(default_factory=list)

    def summary(self) -> str:
        done = sum(o is not None for o in self.outcomes)
        lines = [f"{done} of {len(self.outcomes)} runs finished, {len(self.failures)} failed"]
        for f in self.failures:
            lines.append(f"  run {f.index} failed with {f.error}\n    parameters: {f.params}")
        return "\n".join(lines)


def grid(axes: dict[str, list]) -> list[dict]:
    """Every combination of the listed values: ``grid({"a": [1, 2], "b": ["x"]})`` -> 2 dicts."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def run_sweep(specs: list[dict], run_one, log=None) -> SweepReport:
    """Call ``run_one(spec)`` for every spec; exceptions are caught, logged and reported at the end."""
    log = log or (lambda *a, **k: None)
    report = SweepReport()
    for i, spec in enumerate(specs):
        try:
            report.outcomes.append(run_one(spec))
        except Exception as err:  # noqa: BLE001 -- every failure is reported, none stops the sweep
            message = f"{type(err).__name__}: {err}"
            report.outcomes.append(None)
            report.failures.append(SweepFailure(i, spec, message, traceback.format_exc()))
            log(f"run {i} failed ({message}); continuing with the others", file=sys.stderr)
    return report
