"""Parameters declared once and checked before any expensive work: notebooks, runs and the command line.

A :class:`CheckedConfig` is a frozen dataclass whose fields carry their default, their type (the annotation)
and their checks (:func:`param`: choices, range, a check of each list element, a further ``verify``); a
subclass adds cross-checks in ``check()``. Each notebook's parameters are one (``rmlib.book.<page>.Config``,
read from the notebook's globals by :meth:`CheckedConfig.from_namespace` right after papermill's injected
cell), a training run's are :class:`rmlib.runconfig.RunConfig`. Any unknown key (a typo in a params file,
with a "did you mean"), wrong type, value out of range or failed cross-check raises :class:`ParameterError`
naming the key and the accepted values. Profiles live in ``params/<notebook>/<profile>.yaml`` and only
override the defaults (:func:`load_profile`). :class:`Param` is the check of one value.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import difflib
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, ClassVar

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
    verify: Callable | None = None  # a further check of the value: raises ParameterError(message) naming the problem

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
            raise ParameterError(f"parameter {key!r} = {value!r} is not accepted{did_you_mean(value, self.choices)}; "
                                 f"accepted values: {', '.join(map(repr, self.choices))}")
        if self.low is not None and value < self.low:
            raise ParameterError(f"parameter {key!r} = {value!r} is below its minimum {self.low}")
        if self.high is not None and value > self.high:
            raise ParameterError(f"parameter {key!r} = {value!r} is above its maximum {self.high}")
        if self.each is not None:
            if not value:
                raise ParameterError(f"parameter {key!r} must not be empty")
            value = type(value)(self.each.check(f"{key}[{i}]", v) for i, v in enumerate(value))
        if self.verify is not None:
            try:
                self.verify(value)
            except ParameterError as err:
                raise ParameterError(f"parameter {key!r} = {value!r}: {err}") from None
        return value


def _names(types_) -> str:
    return " or ".join(t.__name__ for t in types_)


def did_you_mean(value, accepted) -> str:
    """' (did you mean 'epochs'?)' for a close match among ``accepted``, else ''."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(a) for a in accepted], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


_NAMES_ONLY = contextvars.ContextVar("rmlib_model_names_only", default=False)


@contextlib.contextmanager
def model_names_only():
    """Within this block a model parameter is checked by its name only (a known name, a local folder or an
    ``org/name`` hub id), not looked up in the Hugging Face cache or on the Hub: for planning runs
    (:mod:`rmlib.plan`) on a machine that will not load the models."""
    token = _NAMES_ONLY.set(True)
    try:
        yield
    finally:
        _NAMES_ONLY.reset(token)


def check_model(name: str) -> None:
    """A model parameter must resolve: a name rmlib knows (offline or the paper's), a local folder with a
    ``config.json``, or a hub id found in the local Hugging Face cache or on the Hub. Raises
    :class:`ParameterError` listing the names that work offline otherwise (no weights are loaded). A gated
    model (Llama-3.x, Gemma-2) not in the cache also needs a token with access: the error says how to get it.
    In a dry run a paper model resolves to its tiny family model (:func:`rmlib.models.resolve_name`)."""
    from . import dryrun
    from .models import MODEL_NAMES, OFFLINE_NAMES, PAPER_MODELS, resolve_name

    name = resolve_name(name)  # the paper's short names are hub ids; a dry run's are tiny family models
    if name in OFFLINE_NAMES:
        return
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / "config.json").exists():
            return
        raise ParameterError(f"the folder {folder} has no config.json (not a saved model)")
    offline_names = f"names that work offline: {', '.join(map(repr, OFFLINE_NAMES))}"
    if name.count("/") != 1:
        raise ParameterError(f"not a known model name{did_you_mean(name, MODEL_NAMES)}, "
                             f"a local folder, or a hub id of the form org/name; {offline_names}; the paper's: "
                             f"{', '.join(PAPER_MODELS)}")
    if _NAMES_ONLY.get():
        return
    from huggingface_hub import auth_check, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ParameterError(f"not in the local Hugging Face cache and HF_HUB_OFFLINE=1; {offline_names}")
    try:
        auth_check(name)  # the repository exists and, if gated, this token has access
    except GatedRepoError:
        raise ParameterError(dryrun.gated_message(name)) from None
    except Exception as err:  # noqa: BLE001 -- offline, unknown repository, ...
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        gated = f"; {dryrun.gated_message(name)}" if dryrun.is_gated(name) else ""
        raise ParameterError(f"not a local folder, not in the Hugging Face cache, and the Hugging Face Hub is "
                             f"unreachable or does not know it ({reason}){gated}; {offline_names}") from None


def check_data_dir(path) -> None:
    if path is not None and not Path(path).is_dir():
        raise ParameterError(f"the directory {path} does not exist (the offline mirror is ../shared/data "
                             "beside the project, or $RMLIB_DATA_DIR; `python -m rmlib.data fetch --dest DIR` "
                             "downloads the data)")


MODEL = Param(str, verify=check_model)
DATA_DIR = Param(str, nullable=True, verify=check_data_dir)


def cross_check(values: dict) -> None:
    """The checks that involve several parameters, the same for notebooks and the CLI."""
    batch, micro = values.get("batch_size"), values.get("micro_batch_size")
    if isinstance(batch, int) and isinstance(micro, int) and micro > batch:
        raise ParameterError(f"parameter 'micro_batch_size' = {micro} is larger than 'batch_size' = {batch} "
                             "(a micro-batch is a part of an optimizer step's batch)")
    for key in ("seeds", "models", "settings", "rm_types"):
        if isinstance(values.get(key), list) and len(set(map(str, values[key]))) != len(values[key]):
            raise ParameterError(f"parameter {key!r} = {values[key]!r} repeats a value")


def validate(params: dict, schema: dict[str, Param]) -> types.SimpleNamespace:
    """Check ``params`` against ``schema`` and :func:`cross_check`; unknown or missing keys are errors."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        hints = "".join(did_you_mean(k, schema) for k in unknown)
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}{hints}; accepted: "
                             f"{', '.join(sorted(schema))}")
    missing = sorted(set(schema) - set(params))
    if missing:
        raise ParameterError(f"missing parameter(s) {', '.join(map(repr, missing))}")
    values = {key: spec.check(key, params[key]) for key, spec in schema.items()}
    cross_check(values)
    return types.SimpleNamespace(**values)


def load_profile(notebook: str, profile: str, params_dir: str | Path | None = None) -> dict:
    """Read ``params/<notebook>/<profile>.yaml``; the error names the profiles that exist."""
    folder = Path(params_dir) if params_dir else Path(__file__).resolve().parents[1] / "params" / notebook
    path = folder / f"{profile}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ParameterError(f"no profile {profile!r} for {notebook!r}; available: {available}")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


# ------------------------------------------------------------------------------------ checked configs

def param(default, *, choices=None, low=None, high=None, each: Param | None = None, verify=None,
          help: str = ""):
    """A config field: its default and the checks beyond its annotated type (see :class:`Param`)."""
    checks = {"choices": tuple(choices) if choices is not None else None, "low": low, "high": high,
              "each": each, "verify": verify, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=checks)
    return field(default=default, metadata=checks)


_SCALARS = {int: int, float: float, str: str, bool: bool, dict: dict, list: list}


def _param_for(annotation, checks: dict) -> Param:
    """The :class:`Param` of a field annotated ``int``, ``float | None``, ``list[str]``, ..."""
    nullable = False
    args = typing.get_args(annotation)
    if args and type(None) in args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        nullable = True
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else tuple(rest)
    each = checks.get("each")
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (str,)
        each = each or Param(_SCALARS[item])
        annotation = list
    kinds = annotation if isinstance(annotation, tuple) else _SCALARS[annotation]
    return Param(kinds, choices=checks.get("choices"), low=checks.get("low"), high=checks.get("high"),
                 nullable=nullable, each=each, verify=checks.get("verify"))


@dataclass(frozen=True)
class CheckedConfig:
    """Base of the notebooks' and runs' parameters. A subclass declares its fields with :func:`param`, may
    add cross-checks in :meth:`check` and, for a notebook, names its params folder (``NOTEBOOK``). In a
    notebook::

        cfg = page.Config.from_namespace(globals())   # right after papermill's injected cell

    Unknown keys (a typo in a profile), wrong types, values out of range and failed cross-checks raise
    :class:`ParameterError` naming the key, before any expensive work."""

    NOTEBOOK: ClassVar[str] = ""

    @classmethod
    def schema(cls) -> dict[str, Param]:
        hints = typing.get_type_hints(cls)
        return {f.name: _param_for(hints[f.name], dict(f.metadata)) for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: dict) -> "CheckedConfig":
        """Defaults overridden by ``values``; every value checked."""
        defaults = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                    for f in fields(cls)}
        checked = vars(validate({**defaults, **values}, cls.schema()))
        config = cls(**checked)
        config.check()
        return config

    @classmethod
    def from_namespace(cls, namespace: dict) -> "CheckedConfig":
        """The parameters found in a notebook's globals (its parameters cell and papermill's injected one):
        every public global that is not a module, function, class or callable, so that a misspelled
        injected key is caught as unknown. When the cell runs again after the notebook has run (a config
        of this class is among the globals), the notebook's own variables are there too: then only the
        fields are read."""
        values = {k: v for k, v in namespace.items()
                  if not k.startswith("_") and k not in {"In", "Out", "get_ipython", "exit", "quit"}
                  and not isinstance(v, (types.ModuleType, types.FunctionType, type)) and not callable(v)}
        if any(isinstance(v, cls) for v in values.values()):
            names = {f.name for f in fields(cls)}
            values = {k: v for k, v in values.items() if k in names}
        from .dryrun import require_gpu

        # the paper profile on a CPU-only torch: refused before any work, in collect mode (train=never) too:
        # the notebooks still compute with paper models there (02 in its kernel, 01 the initial model's samples)
        require_gpu(values.get("profile"))
        return cls.from_dict(values)

    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "CheckedConfig":
        """``params/<NOTEBOOK>/<profile>.yaml`` over the defaults, then ``overrides``."""
        return cls.from_dict({**load_profile(cls.NOTEBOOK, profile), **overrides})

    def check(self) -> None:
        """Cross-checks between fields; a subclass extends it (calling ``super().check()``)."""
        cross_check(asdict(self))

    def replace(self, **changes) -> "CheckedConfig":
        return type(self).from_dict({**asdict(self), **changes})

    def _repr_html_(self) -> str:
        """In a page: the table folded under one line that names the profile (the story comes first)."""
        from html import escape

        rows = "".join(f"<tr><td><code>{escape(f.name)}</code></td><td><code>{escape(repr(getattr(self, f.name)))}"
                       f"</code></td><td>{escape(f.metadata.get('help', ''))}</td></tr>" for f in fields(self))
        profile = f" of profile <code>{escape(str(self.profile))}</code>" if hasattr(self, "profile") else ""
        return (f"{self._dry_run_banner(html=True)}<details class=\"rmlib-config\"><summary>The "
                f"{len(fields(self))} parameters{profile} (show)</summary>"
                f"<table><thead><tr><th>parameter</th><th>value</th><th>meaning</th></tr></thead>"
                f"<tbody>{rows}</tbody></table></details>")

    def _dry_run_banner(self, html: bool) -> str:
        """In a dry run (:mod:`rmlib.dryrun`), a line above the table that says so (the page's first output)."""
        from .dryrun import banner

        single = getattr(self, "model", None)
        models = list(getattr(self, "models", None) or []) + ([single] if isinstance(single, str) else [])
        text = banner(models)
        if not text or not html:
            return f"{text}\n\n" if text else ""
        from html import escape

        body = escape(text).replace("**DRY RUN**", "<strong>DRY RUN</strong>")
        return (f'<div class="rmlib-dry-run" style="border: 2px solid #c00; background: #fee; padding: 0.5em; '
                f'margin-bottom: 0.5em;">{body}</div>')

    def _repr_markdown_(self) -> str:
        rows = [f"| `{f.name}` | `{getattr(self, f.name)!r}` | {f.metadata.get('help', '')} |" for f in fields(self)]
        return self._dry_run_banner(html=False) + "| parameter | value | meaning |\n|---|---|---|\n" + "\n".join(rows)
