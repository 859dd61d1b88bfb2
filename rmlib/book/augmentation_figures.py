"""The figures of notebook 05's page: accuracy per group and condition, and the change of the gap.

Each function returns a closed matplotlib Figure (the notebook shows it once, as the cell's value).
"""

from __future__ import annotations

import pandas as pd

from ..analysis import augmentation_effects as fx
from ..tasks import augmentation as aug


def accuracy_figure(accuracy: pd.DataFrame, conditions: list[str]):
    """Bars of accuracy per group of test sets (x) and condition (hue), one panel per reward model; chance
    (0.5) dotted. ``accuracy``: :func:`rmlib.book.augmentation.accuracy_by_group`."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    groups = list(fx.GROUPS)
    g = sns.catplot(data=accuracy, x="group", y="accuracy", hue="condition", col="reward model", kind="bar",
                    order=groups, hue_order=[aug.CONDITION_LABELS[c] for c in conditions],
                    col_order=["EX-RM", "IM-RM"], palette="Greys_r" if len(conditions) > 2 else ["#666666", "#bbbbbb"],
                    edgecolor="black", linewidth=0.5, height=2.8, aspect=1.15)
    for ax in g.axes.flat:
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(len(groups)), [grp.replace(" (", "\n(").replace(" shift", "\nshift") for grp in groups],
                      fontsize=7)
        ax.set_xlabel("")
    g.set_titles(col_template="{col_name}")
    sns.move_legend(g, "lower center", ncol=len(conditions), bbox_to_anchor=(0.45, -0.08), title=None)
    plt.close(g.figure)
    return g.figure


def gap_change_figure(gaps: list[fx.Change]):
    """One row per group and augmented condition: the change of the EX-RM minus IM-RM gap with its 95%
    interval (grey), and the change that would close the gap exactly, -gap(original) (red tick)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.9, 0.5 + 0.42 * len(gaps)))
    labels = [f"{c.group}\n{aug.CONDITION_LABELS[c.condition]}" for c in gaps][::-1]
    for y, c in enumerate(gaps[::-1]):
        iv = c.interval
        ax.errorbar(iv.estimate, y, xerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]], fmt="o", color="#444444",
                    capsize=3)
        ax.plot(-c.before, y, marker="|", color="#d62728", markersize=12, mew=2)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("change of the EX-RM minus IM-RM accuracy gap (augmented - original)")
    fig.tight_layout()
    plt.close(fig)
    return fig
