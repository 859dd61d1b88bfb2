"""rmlib: explicit vs implicit reward models (Razin, Lin, Yao & Arora, 2025), small and tested.

Modules, one job each: ``models`` (loading backbones, offline SmolLM2), ``formatting`` (templates and
exact response spans), ``batching`` (padding), ``rewards`` (EX-RM, IM-RM, EX-GRM), ``losses`` (Eq. 3, 7),
``data`` (preference data, local mirror or Hub), ``training`` (Adam via accelerate), ``evaluation``
(accuracy, margin, win-rate), ``results`` (results files and tidy tables), ``experiment`` (one run).
"""

__version__ = "0.1.0"
