"""Notebook parameters: declared once, validated in the first cell, before any expensive work.

A notebook declares its parameters in a papermill ``parameters`` cell and a schema next to them::

    SCHEMA = {"model": Param(str, choices=MODEL_NAMES), "epochs": Param(int, low=1), ...}

and its next cell (after papermill's injected one) calls ``P = validate_notebook_params(globals(), SCHEMA)``.
Any unknown key (a typo in a params file), wrong type, value out of range or unknown name raises
:class:`ParameterError` naming the key and the accepted values. Profiles live in
``params/<notebook>/<profile>.yaml`` and are read with :func:`load_profile`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import yaml


class ParameterError(ValueError):
    """A notebook parameter is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Param:
    type: type | tuple
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    each: "Param | None" = None  # for lists: the spec of every element

    def check(self, key: str, value):
        if value is None:
            if self.nullable:
                return None
            raise ParameterError(f"parameter {key!r} must not be None")
        types_ = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types_ and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types_:
            raise ParameterError(f"parameter {key!r} must be {_names(types_)}, got bool {value!r}")
        if not isinstance(value, types_):
            raise ParameterError(f"parameter {key!r} must be {_names(types_)}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {key!r} = {value!r} is not accepted; accepted values: "
                                 f"{', '.join(map(repr, self.choices))}")
        if self.low is not None and value < self.low:
            raise ParameterError(f"parameter {key!r} = {value!r} is below its minimum {self.low}")
        if self.high is not None and value > self.high:
            raise ParameterError(f"parameter {key!r} = {value!r} is above its maximum {self.high}")
        if self.each is not None:
            if not value:
                raise ParameterError(f"parameter {key!r} must not be empty")
            value = type(value)(self.each.check(f"{key}[{i}]", v) for i, v in enumerate(value))
        return value


def _names(types_) -> str:
    return " or ".join(t.__name__ for t in types_)


def validate(params: dict, schema: dict[str, Param]) -> types.SimpleNamespace:
    """Check ``params`` against ``schema``; unknown or missing keys are errors."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}; accepted: "
                             f"{', '.join(sorted(schema))}")
    missing = sorted(set(schema) - set(params))
    if missing:
        raise ParameterError(f"missing parameter(s) {', '.join(map(repr, missing))}")
    return types.SimpleNamespace(**{key: spec.check(key, params[key]) for key, spec in schema.items()})


def validate_notebook_params(namespace: dict, schema: dict[str, Param]) -> types.SimpleNamespace:
    """Validate the parameters found in a notebook's globals (after papermill's injected cell).

    Every public global that is not a module, function, class or the schema itself counts as a
    parameter, so a misspelled key injected by papermill is caught as unknown."""
    params = {k: v for k, v in namespace.items()
              if not k.startswith("_") and k not in {"SCHEMA", "In", "Out", "get_ipython", "exit", "quit", "P"}
              and not isinstance(v, (types.ModuleType, types.FunctionType, type, Param))
              and not callable(v)}
    return validate(params, schema)


def load_profile(notebook: str, profile: str, params_dir: str | Path | None = None) -> dict:
    """Read ``params/<notebook>/<profile>.yaml``; the error names the profiles that exist."""
    folder = Path(params_dir) if params_dir else Path(__file__).resolve().parents[1] / "params" / notebook
    path = folder / f"{profile}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ParameterError(f"no profile {profile!r} for {notebook!r}; available: {available}")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}
