"""Figures of notebook 02 (learning dynamics). Each function returns a matplotlib Figure (not managed by
pyplot, so a notebook shows it once, as the cell's value)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def _token_labels(tok, ids) -> list[str]:
    return [repr(tok.decode([int(i)]))[1:-1] for i in ids]


def rho_heatmaps(item: dict, tok) -> Figure:
    """rho_{k,l}(v) of Eq. 5 for one evaluated response (rows k) against the training chosen and rejected
    responses (columns l), colour scale fixed to rho's range [-2, 2]."""
    a = item["analysis"]
    fig = Figure(figsize=(6.9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, r, v, title in ((axes[0], a.rho_plus, a.plus, "v = y+ (training chosen)"),
                            (axes[1], a.rho_minus, a.minus, "v = y- (training rejected)")):
        image = ax.imshow(r.numpy(), cmap="RdBu_r", vmin=-2, vmax=2)
        ax.set_xticks(range(len(v)), _token_labels(tok, v.tokens), rotation=70, fontsize=8)
        ax.set_yticks(range(len(a.bar)), _token_labels(tok, a.bar.tokens), fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label=r"$\rho_{k,l}$")
    fig.suptitle(f"rows: evaluated \"{item['evaluated'][1]}\"", fontsize=10)
    return fig


def error_vs_step(checks: pd.DataFrame, logit_steps: list[float]) -> Figure:
    """|measured - predicted| against the step size (log-log) for the IM-RM and EX-GRM, one line per
    (model, pair), with a dotted slope-2 reference through each line's smallest step."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for (name, pair), g in checks.groupby(["model", "pair"]):
        if name.startswith("EX-RM"):
            continue
        g = g.sort_values("eta")
        ax.loglog(g["logit step"], g["error"].abs(), "o-", label=f"{name}, {pair[:28]}")
        ax.loglog(g["logit step"], g["error"].abs().iloc[-1] * (g["eta"] / g["eta"].iloc[-1]) ** 2, "k:", lw=0.8)
    ax.set_xlabel(r"step size ($\eta$ in units of $1/(cB^2)$)")
    ax.set_ylabel("|measured - predicted|")
    ax.set_xticks(logit_steps, [f"{v:g}" for v in logit_steps])  # the measured steps, no crowded minor labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(r"dotted: slope 2 ($\propto\eta^2$)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def theorem2_curves(sim: dict) -> Figure:
    """Training accuracy, accuracy on unseen tokens (with u*'s, Eq. 6) and cos(u(t), u*) over the steps."""
    ex, im = pd.DataFrame(sim["ex"]), pd.DataFrame(sim["im"])
    fig = Figure(figsize=(6.9, 2.8))
    axes = fig.subplots(1, 3)
    t_ex, t_im = ex.step.clip(lower=0.8), im.step.clip(lower=0.8)
    axes[0].plot(t_ex, ex.train_accuracy, label="EX-RM train")
    axes[0].plot(t_im, im.train_accuracy, label="IM-RM train")
    axes[0].set_title("training accuracy")
    axes[1].plot(t_ex, ex.eval_accuracy, label="EX-RM")
    axes[1].plot(t_im, im.eval_accuracy, label="IM-RM")
    axes[1].axhline(sim["u_star_eval_accuracy"], color="k", ls="--", lw=1, label="u* (Eq. 6)")
    axes[1].set_title("accuracy on unseen tokens")
    axes[2].plot(t_ex, ex.cosine, label="u(t)")
    axes[2].plot(t_ex, ex.cosine_span, label="u(t) in span of\ntraining h+ - h-")
    axes[2].set_title("cosine with u*")
    axes[2].legend(fontsize=6, loc="lower right")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("step (log)")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def reward_trajectories(steps: list[int], trajectories: dict, responses: list[tuple]) -> Figure:
    """Rewards of the first held-out prompt's responses over training steps, EX-RM and IM-RM side by side
    (dashed: paraphrases)."""
    fig = Figure(figsize=(6.9, 3.0))
    axes = fig.subplots(1, 2)
    for ax, rm_type in zip(axes, ("ex", "im")):
        r = trajectories[rm_type][:, 0, :]
        for j, (name, _, _, paraphrased) in enumerate(responses):
            ax.plot(steps, r[:, j], ls="--" if paraphrased else "-", label=name)
        ax.set_title(f"{rm_type.upper()}-RM")
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
