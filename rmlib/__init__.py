"""rmlib: explicit vs implicit reward models (Razin, Lin, Yao & Arora, 2025), small and tested.

Modules, one job each: ``models`` (loading backbones, offline SmolLM2), ``formatting`` (templates and
exact response spans), ``batching`` (padding), ``rewards`` (EX-RM, IM-RM, EX-GRM), ``losses`` (Eq. 3, 7),
``data`` (preference data, local mirror or Hub), ``training`` (Adam via accelerate), ``evaluation``
(accuracy, margin, win-rate), ``results`` (results files and tidy tables), ``experiment`` (one run),
``export`` (trained reward models as Hugging Face folders: :func:`save_reward_model`, :func:`load_reward_model`).
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_reward_model", "save_reward_model"]
_EXPORTS = {"load_reward_model", "save_reward_model"}


def __getattr__(name):
    # rmlib.load_reward_model / rmlib.save_reward_model, imported on first use: ``import rmlib`` stays light
    # (the CLI validates a spec before torch and transformers are imported).
    if name in _EXPORTS:
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'rmlib' has no attribute {name!r}")
