"""Figures and the Theorem 1 view of page 01 (Section 3): accuracy per reward model (Figure 3, left),
and, per test pair, the IM-RM's log-probability change of the chosen cycle against its margin.

Theorem 1 bounds the whole probability mass of the correct responses: an IM-RM
r(x, y) = beta (ln pi(y|x) - ln pi_ref(y|x)) (Eq. 2) can verify with margin delta (Definition 2) while
pi(C(x)|x) <= pi_ref(C(x)|x) exp(delta / beta). Per test pair we can only measure a weaker analogue:
ln pi(y+|x) - ln pi_ref(y+|x) = r(x, y+) / beta against delta / beta = (r(x, y+) - r(x, y-)) / beta,
and the first is at most the second exactly when r(x, y-) <= 0. Each figure function returns a matplotlib
Figure, closed, for the notebook to show.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown


@dataclass(frozen=True)
class PerPairBound:
    """One IM-RM's rewards on the test pairs and ln pi_ref(y+|x) of the chosen responses (nats)."""

    reward_chosen: np.ndarray
    reward_rejected: np.ndarray
    ref_logp_chosen: np.ndarray
    beta: float

    def __post_init__(self):
        shapes = {np.shape(self.reward_chosen), np.shape(self.reward_rejected), np.shape(self.ref_logp_chosen)}
        if len(shapes) != 1 or np.size(self.reward_chosen) == 0:
            raise ValueError(f"need one chosen reward, rejected reward and reference log-probability per test pair, "
                             f"got shapes {sorted(shapes)}")

    @property
    def margin(self) -> np.ndarray:
        """delta / beta = (r(x, y+) - r(x, y-)) / beta per pair."""
        return (self.reward_chosen - self.reward_rejected) / self.beta

    @property
    def logp_change(self) -> np.ndarray:
        """ln pi(y+|x) - ln pi_ref(y+|x) = r(x, y+) / beta per pair (Eq. 2)."""
        return self.reward_chosen / self.beta

    @property
    def theta_logp_chosen(self) -> np.ndarray:
        """ln pi(y+|x) of the trained IM-RM's language model."""
        return self.ref_logp_chosen + self.logp_change

    @property
    def within(self) -> float:
        """Fraction of pairs with logp_change <= margin, i.e. r(x, y-) <= 0."""
        return float(np.mean(self.reward_rejected <= 0))

    @property
    def verified(self) -> float:
        """Accuracy (Definition 1): fraction of pairs with r(x, y+) > r(x, y-)."""
        return float(np.mean(self.reward_chosen > self.reward_rejected))

    @property
    def within_and_verified(self) -> float:
        return float(np.mean((self.reward_rejected <= 0) & (self.reward_chosen > self.reward_rejected)))

    def markdown(self) -> Markdown:
        """The figure's numbers in one paragraph (medians over the test pairs)."""
        return Markdown(
            f"On the {len(self.reward_chosen)} test pairs, the IM-RM verifies (r(y+) > r(y-)) **{self.verified:.0%}**; "
            f"the log-probability change of the chosen cycle stays at or below δ/β, i.e. r(y-) ≤ 0, for "
            f"**{self.within:.0%}** of the pairs (**{self.within_and_verified:.0%}** are both verified and have "
            f"r(y-) ≤ 0). The median change of ln π(y+|x) is {np.median(self.logp_change):+.2f} nats against a median "
            f"margin δ/β of {np.median(self.margin):.2f} nats; the chosen cycle's median log-probability goes from "
            f"{np.median(self.ref_logp_chosen):.1f} under π_ref to {np.median(self.theta_logp_chosen):.1f} nats "
            f"under π_θ, i.e. a probability of about {np.exp(np.median(self.theta_logp_chosen)):.1e}.")

    def comparison_sentence(self) -> str:
        """The bullet of the paper comparison."""
        return (f"*Per-pair analogue of Theorem 1* (not a test of the theorem, see above): for {self.within:.0%} of the "
                f"first seed's test pairs r(y-) ≤ 0, i.e. the chosen cycle's log-probability rose by no more than the "
                f"margin δ/β; the chosen cycle's median log-probability is {np.median(self.theta_logp_chosen):.1f} nats "
                f"under π_θ (π_ref: {np.median(self.ref_logp_chosen):.1f}).")


def accuracy_bars(acc: pd.DataFrame, title: str):
    """Bars of mean accuracy (error bars: std over seeds) of the EX-RM and IM-RM on train and test;
    ``acc`` has columns rm, eval_set, mean, std (:func:`rmlib.book.gen_vs_verify.accuracy`)."""
    mean = {(r.rm, r.eval_set): r["mean"] for _, r in acc.iterrows()}
    std = {(r.rm, r.eval_set): r["std"] for _, r in acc.iterrows()}
    fig, ax = plt.subplots(figsize=(5.5, 3))
    for i, rm_label in enumerate(("EX-RM", "IM-RM")):
        ax.bar(np.arange(2) + (i - 0.5) * 0.35, [mean[(rm_label, s)] for s in ("train", "test")], 0.35,
               yerr=[std[(rm_label, s)] for s in ("train", "test")], label=rm_label, capsize=3)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks(range(2), ["train", "test"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    plt.close(fig)
    return fig


def theorem1_figure(bound: PerPairBound):
    """Left: ln pi(y+|x) - ln pi_ref(y+|x) against the margin delta/beta per test pair (blue: verified,
    red: not) with the line y = x; right: histograms of ln pi_ref(y+|x) and ln pi(y+|x)."""
    x, y = bound.margin, bound.logp_change
    ref, theta = bound.ref_logp_chosen, bound.theta_logp_chosen
    fig, axes = plt.subplots(1, 2, figsize=(6.9, 3.2))
    ax = axes[0]
    ax.scatter(x, y, s=12, alpha=0.7, c=np.where(bound.reward_chosen > bound.reward_rejected, "tab:blue", "tab:red"))
    lo = min(x.min(), y.min(), 0) - 0.5
    hi = max(x.max(), y.max(), 0) + 0.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label=r"per-pair line $y = x$, i.e. $r(y^-) = 0$")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(r"margin $\delta/\beta = (r(y^+) - r(y^-))/\beta$ [nats]")
    ax.set_ylabel(r"$\ln\pi_\theta(y^+|x) - \ln\pi_{ref}(y^+|x)$ [nats]")
    ax.set_title("IM-RM, test pairs (blue: verified, red: not)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    bins = np.linspace(min(ref.min(), theta.min()), max(ref.max(), theta.max(), 0), 30)
    ax.hist(ref, bins=bins, alpha=0.6, label=r"$\ln\pi_{ref}(y^+|x)$")
    ax.hist(theta, bins=bins, alpha=0.6, label=r"$\ln\pi_\theta(y^+|x)$")
    ax.set_xlabel("log-probability of the chosen cycle [nats]")
    ax.set_ylabel("test pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
