"""Paired EX vs IM comparisons of Section 5.2 and the claims they test (Tables 1, 3, 5, 6).

Every comparison goes through :mod:`rmlib.analysis.stats`: :func:`paired_correctness` lines up the two
reward models' per-pair correctness (Definition 1) on the same pairs, seeds as rows; :func:`compare_rms`
gives paired bootstrap intervals with seeds as a second level, an exact sign test, and a verdict against
the paper's direction (:func:`rmlib.analysis.paper_tables.paper_direction`). A tie "agrees" when the whole
interval lies within +-:data:`TIE_MARGIN` (``stats.verdict``'s equivalence margin).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from ..tasks.realworld import CATEGORIES, EVAL_SETS, LABELS, RM_LABELS, get_setting
from .paper_tables import PAPER_TIE, paper_accuracies, paper_direction

TIE_MARGIN = 0.05


def paired_correctness(examples: pd.DataFrame, a: str = "ex", b: str = "im", rm_column: str = "rm"):
    """Per-pair correctness of ``a`` and ``b`` on the same pairs: arrays of shape (n_seeds, n_pairs).

    ``examples`` (one setting; columns ``model``, ``seed``, ``eval_set``, ``index``, ``correct`` and
    ``rm_column``) is split into cells (data set in :data:`EVAL_SETS` order, then model); a cell counts if
    both reward models have runs in it. The seeds are those that both have in every such cell; per seed,
    the cells' pairs are concatenated (so a category pooling several data sets, or several models,
    weights each by its number of pairs). Returns ``(A, B, info)``, ``info`` = ``{"seeds", "cells",
    "skipped"}``. Raises ``ValueError`` if there is nothing to pair, if a run appears twice for the same
    (model, seed, data set), or if ``a`` and ``b`` scored different pairs."""
    if "setting" in examples and examples["setting"].nunique() > 1:
        raise ValueError(f"examples hold several settings {sorted(examples['setting'].unique())}; pass one")
    data = examples[examples[rm_column].isin([a, b])]
    cells, skipped, seeds = [], [], None
    order = {e: i for i, e in enumerate(EVAL_SETS)}
    for (eval_set, model), part in sorted(data.groupby(["eval_set", "model"]),
                                          key=lambda kv: (order.get(kv[0][0], len(order)), str(kv[0][0]), str(kv[0][1]))):
        have = {rm: set(part.loc[part[rm_column] == rm, "seed"]) for rm in (a, b)}
        if not have[a] or not have[b]:
            skipped.append((eval_set, model))
            continue
        cells.append((eval_set, model, part))
        seeds = (have[a] & have[b]) if seeds is None else seeds & have[a] & have[b]
    if not cells or not seeds:
        raise ValueError(f"no (data set, model) cell with {a!r} and {b!r} runs of a common seed")
    seeds = sorted(seeds)
    blocks = {a: [], b: []}
    for eval_set, model, part in cells:
        index = None
        for rm in (a, b):
            rows = []
            for seed in seeds:
                one = part[(part[rm_column] == rm) & (part["seed"] == seed)].sort_values("index")
                if one["index"].duplicated().any():
                    raise ValueError(f"{rm!r} has several runs for model {model!r}, seed {seed}, {eval_set!r}; "
                                     "select one configuration first")
                if index is None:
                    index = one["index"].tolist()
                elif one["index"].tolist() != index:
                    raise ValueError(f"{a!r} and {b!r} did not score the same pairs of {eval_set!r} ({model}, seed {seed})")
                rows.append(one["correct"].to_numpy(dtype=float))
            blocks[rm].append(np.stack(rows))
    info = {"seeds": seeds, "cells": [(e, m) for e, m, _ in cells], "skipped": skipped}
    return np.concatenate(blocks[a], axis=1), np.concatenate(blocks[b], axis=1), info


def compare_rms(examples: pd.DataFrame, setting: str, a: str = "ex", b: str = "im", by: str = "category",
                **options) -> dict:
    """``{category or data set: rmlib.analysis.stats.Comparison}`` of ``a`` vs ``b`` in one setting, against the paper's
    direction (:func:`paper_direction`; ties with the equivalence margin :data:`TIE_MARGIN`). ``by``:
    "category" (the data sets of a category pooled, :func:`paired_correctness`) or "eval_set". ``options``
    go to :func:`rmlib.analysis.stats.compare` (``n_boot``, ``confidence``, ``seed``, ...). Groups without runs of
    both are left out."""
    if by not in ("category", "eval_set"):
        raise ValueError(f"by must be 'category' or 'eval_set', got {by!r}")
    spec = get_setting(setting)
    data = examples[examples["setting"] == setting] if "setting" in examples else examples
    out = {}
    for group in (CATEGORIES if by == "category" else spec.eval_sets()):
        part = data[data["eval_set"].isin(spec.eval_sets(group) if by == "category" else [group])]
        if not ((part["rm"] == a).any() and (part["rm"] == b).any()):
            continue
        A, B, _ = paired_correctness(part, a, b)
        direction = paper_direction(setting, a, b, **{by: group})
        out[group] = stats.compare(A, B, direction, RM_LABELS[a], RM_LABELS[b],
                                   **{"margin": TIE_MARGIN, **options})
    return out


def _group_label(setting: str, group: str) -> str:
    return f"{setting}, {LABELS.get(group, group)}"


def comparison_sentences(comparisons: dict, setting: str, a: str = "ex", b: str = "im") -> list[str]:
    """One Markdown bullet per comparison: the group, the paper's accuracies, and ``Comparison.sentence()``."""
    lines = []
    for group, comparison in comparisons.items():
        by = {"category": group} if group in CATEGORIES else {"eval_set": group}
        pa, pb = paper_accuracies(setting, a, b, **by)
        lines.append(f"* **{_group_label(setting, group)}** (paper: {RM_LABELS[a]} {pa:.3f}, {RM_LABELS[b]} "
                     f"{pb:.3f}): {comparison.sentence()}")
    return lines


def claim_rows(comparisons: dict, setting: str, a: str = "ex", b: str = "im") -> list[dict]:
    """Rows for the book's claims table (``rmlib.results.write_summary(..., claims=...)``): ``claim``,
    ``paper``, ``this build`` (estimate [95% CI]) and ``verdict``, plus :meth:`Comparison.as_row`'s numbers."""
    rows = []
    for group, comparison in comparisons.items():
        by = {"category": group} if group in CATEGORIES else {"eval_set": group}
        pa, pb = paper_accuracies(setting, a, b, **by)
        direction = paper_direction(setting, a, b, **by)
        relation = {1: f"{RM_LABELS[a]} beats {RM_LABELS[b]}", -1: f"{RM_LABELS[b]} beats {RM_LABELS[a]}",
                    0: f"{RM_LABELS[a]} and {RM_LABELS[b]} tie (within {PAPER_TIE})"}[direction]
        claim = f"{_group_label(setting, group)}: {relation} (accuracy {RM_LABELS[a]} minus {RM_LABELS[b]})"
        rows.append({"claim": claim, "paper": f"{pa - pb:+.3f} ({pa:.3f} vs {pb:.3f})",
                     **comparison.as_row(), "setting": setting, "group": group})
    return rows
