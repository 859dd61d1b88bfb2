"""The figures of page 04 (Section 5.2): win-rates (Figures 2, 5, 8), accuracy per model and data set
(Figures 9, 10), the hyperparameter and variant runs (Figures 6, 7) and accuracy against n-gram overlap
(beyond the paper). Each function returns a matplotlib Figure, closed, for the notebook to show."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..analysis.paper_tables import PAPER_WIN_RATES, win_rates
from ..tasks.realworld import EVAL_SETS, LABELS, RM_LABELS
from . import COLUMN_WIDTH_IN
from .real_world_shifts_views import RM_COLORS, SET_NAMES


def win_figure(settings, main: pd.DataFrame, a: str, b: str = "im"):
    """Stacked bars of ``a``'s wins, ties and ``b``'s wins per data set (:func:`rmlib.analysis.paper_tables.win_rates`),
    one panel per setting; returns ``(figure, {setting: win-rate table with the paper's a/tie/b})``, or
    ``(None, {})`` when no setting has runs of both."""
    if not any(((main["setting_name"] == n) & (main["rm"] == a)).any()
               and ((main["setting_name"] == n) & (main["rm"] == b)).any() for n in settings):
        return None, {}
    tables = {}
    fig, axes = plt.subplots(len(settings), 1, figsize=(COLUMN_WIDTH_IN, 2.9 * len(settings)), squeeze=False)
    for ax, name in zip(axes[:, 0], settings):
        data = main[main["setting_name"] == name]
        if not ((data["rm"] == a).any() and (data["rm"] == b).any()):
            ax.set_visible(False)
            continue
        wins = win_rates(data, a, b)
        wins["label"] = [f"{LABELS[e]} ({c.split()[0]})" for c, e in zip(wins["category"], wins["eval_set"])]
        bars = wins.set_index("label")[[f"{a}_wins", "tie", f"{b}_wins"]][::-1]
        bars.columns = [RM_LABELS[a], "tie", RM_LABELS[b]]
        bars.plot.barh(stacked=True, ax=ax, color=[RM_COLORS[a], "#bbbbbb", RM_COLORS[b]], width=0.75, legend=False)
        ax.set_xlim(0, 100)
        ax.set_xlabel("win-rate (%)")
        ax.set_ylabel("")
        ax.set_title(f"{SET_NAMES[name]}", fontsize=10)
        paper = PAPER_WIN_RATES[name, a]
        wins["paper (a/tie/b)"] = ["/".join(f"{x:g}" for x in paper[e]) for e in wins["eval_set"]]
        tables[name] = wins
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    plt.close(fig)
    return fig, tables


def _label_sets(grid, rotation: int) -> None:
    order = [LABELS[e] for e in EVAL_SETS]
    for ax in grid.axes.flat:  # explicit labels: FacetGrid.set_xticklabels before drawing leaves them empty
        ax.set_xticks(range(len(order)), order, rotation=rotation, ha="right")


def accuracy_figure(main: pd.DataFrame):
    """Figures 9 and 10: accuracy per data set and reward model, one row per setting; bars are means over
    seeds (and models), error bars the standard deviation over them."""
    per_set = main.copy()
    per_set["data set"] = per_set["eval_set"].map(LABELS)
    per_set["reward model"] = per_set["rm"].map(RM_LABELS)
    per_set["training data"] = per_set["setting_name"].map(SET_NAMES)
    rms_run = [r for r in ("ex", "im", "grm") if r in set(per_set["rm"])]
    g = sns.catplot(data=per_set, x="data set", y="accuracy", hue="reward model", row="training data", kind="bar",
                    order=[LABELS[e] for e in EVAL_SETS], hue_order=[RM_LABELS[r] for r in rms_run],
                    errorbar="sd", height=2.6, aspect=2.6, palette=[RM_COLORS[r] for r in rms_run])
    _label_sets(g, 30)
    g.set_titles(row_template="{row_name}")
    for ax in g.axes.flat:
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
    plt.close(g.figure)
    return g.figure


def sweep_figure(extra_runs: pd.DataFrame | None):
    """Figures 6 and 7: accuracy per data set of every configuration (``configuration`` column) of the
    sweep models; None without sweeps or variants."""
    if extra_runs is None:
        return None
    configs = sorted(extra_runs["configuration"].unique(), key=lambda s: (s.split(",")[0], s))
    g = sns.catplot(data=extra_runs, x="data set", y="accuracy", hue="configuration", kind="bar", errorbar="sd",
                    order=[LABELS[e] for e in EVAL_SETS], hue_order=configs, height=3.0, aspect=2.3,
                    col="model", col_wrap=1)
    _label_sets(g, 20)
    plt.close(g.figure)
    return g.figure


def overlap_figure(by_overlap: pd.DataFrame, n: int):
    """Accuracy against the mean n-gram overlap of each bucket, per setting, reward model and model."""
    data = by_overlap.assign(**{"reward model": by_overlap["rm"].map(RM_LABELS)})
    g = sns.relplot(data=data, x="overlap_mean", y="accuracy", hue="reward model", col="setting", style="model",
                    kind="line", marker="o", height=2.9, aspect=1.15,
                    palette={RM_LABELS[r]: RM_COLORS[r] for r in data["rm"].unique()})
    for ax in g.axes.flat:
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"mean {n}-gram overlap in bucket")
    plt.close(g.figure)
    return g.figure
