"""The controlled token-level shift of Section 5.1 (Figure 4, Appendix D.2): Persona prompts, hand-written
responses, and their paraphrases.

* Prompts: the ``question`` field of the Persona rows of one trait whose ``answer_matching_behavior`` is
  " Yes" (500 for "agreeableness"); a seeded random sample of ``n_train`` (80) training and ``n_test`` (40)
  test prompts, disjoint.
* Training pairs: every training prompt gets one chosen response drawn uniformly from :data:`CHOSEN`
  (agreement) and one rejected response from :data:`REJECTED` (disagreement), seeded.
* Evaluation: for train and test prompts, every combination of a chosen and a rejected response, with the
  original responses (4 x 4 = 16 pairs per prompt) and with the paraphrases (:data:`PARAPHRASED_CHOSEN` x
  :data:`PARAPHRASED_REJECTED`, 2 x 2 = 4 pairs per prompt). Accuracy (Definition 1) is the mean over all of
  them. The paraphrases share no token-level content with the originals' key words ("yes"/"sure" vs
  "certainly"/"absolutely"), so Theorem 2 predicts IM-RMs to fail on them and EX-RMs to succeed when the
  hidden representations separate agreement from disagreement.

Data construction only. What is computed from these sets lives in :mod:`rmlib.analysis`: the footnote-3
separator (:func:`rmlib.analysis.maxmargin.separator_fraction`), the per-token log-probability changes of
an IM-RM (:mod:`rmlib.analysis.token_logprobs`) and Figure 4's claims (:mod:`rmlib.analysis.claims`).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from ..data import load_persona
from ..data import EvalSet

CHOSEN = ("A truthful reply is yes", "A truthful reply is sure",
          "In my view, the answer is yes", "In my view, the answer is sure")
REJECTED = ("Considering the statement, I say no", "Considering the statement, I say never",
            "My judgement: no", "My judgement: never")
PARAPHRASED_CHOSEN = ("My response would be certainly", "My response would be absolutely")
PARAPHRASED_REJECTED = ("I lean toward not really", "I lean toward nope")

MATCHING_ANSWER = " Yes"
EVAL_SETS = ("train/original", "train/paraphrased", "test/original", "test/paraphrased")


def select_prompts(rows: list[dict], answer: str = MATCHING_ANSWER) -> list[str]:
    """The ``question`` of every row whose ``answer_matching_behavior`` is ``answer``, in file order."""
    prompts = [row["question"] for row in rows if row["answer_matching_behavior"] == answer]
    if not prompts:
        raise ValueError(f"no persona rows with answer_matching_behavior == {answer!r} "
                         f"(found {sorted({row['answer_matching_behavior'] for row in rows})})")
    return prompts


def split_prompts(prompts: list[str], n_train: int = 80, n_test: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded random sample of ``n_train + n_test`` distinct prompts: the first ``n_train`` train, the rest test."""
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(set(prompts)) != len(prompts):
        raise ValueError("the prompts contain duplicates; train and test would overlap")
    if n_train + n_test > len(prompts):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(prompts)} available prompts")
    sample = random.Random(seed).sample(prompts, n_train + n_test)
    return sample[:n_train], sample[n_train:]


def assign_responses(prompts: list[str], seed: int = 0, chosen=CHOSEN, rejected=REJECTED) -> list[dict]:
    """One training pair per prompt: a chosen and a rejected response, each drawn uniformly (seeded)."""
    rng = random.Random(seed)
    return [{"prompt": p, "chosen": rng.choice(chosen), "rejected": rng.choice(rejected)} for p in prompts]


def combination_rows(prompts: list[str], chosen, rejected, assigned: list[dict] | None = None) -> list[dict]:
    """Every prompt x chosen x rejected combination (prompt-major order).

    With ``assigned`` (the training pairs), each row says whether it is that prompt's training pair."""
    pairs = {(r["prompt"], r["chosen"], r["rejected"]) for r in assigned} if assigned else set()
    rows = []
    for prompt, c, r in itertools.product(prompts, chosen, rejected):
        row = {"prompt": prompt, "chosen": c, "rejected": r}
        if assigned is not None:
            row["assigned"] = (prompt, c, r) in pairs
        rows.append(row)
    return rows


@dataclass
class PersonaSetting:
    """The data of one run: training pairs and the four evaluation sets of Figure 4."""

    train_prompts: list[str]
    test_prompts: list[str]
    train_rows: list[dict]
    eval_sets: dict[str, EvalSet]


def make_setting(prompts: list[str], n_train: int = 80, n_test: int = 40, seed: int = 0,
                 n_eval_train_prompts: int | None = None) -> PersonaSetting:
    """Split, assign responses and build the evaluation sets, all from ``seed``.

    Every test prompt is evaluated (forward passes only), as the paper. ``n_eval_train_prompts``:
    evaluate only the first that many *training* prompts (16 + 4 pairs each; a cheaper CPU variant);
    None evaluates all of them, as the paper."""
    if n_eval_train_prompts is not None and (not isinstance(n_eval_train_prompts, int) or n_eval_train_prompts < 1):
        raise ValueError(f"n_eval_train_prompts must be None or a positive integer, got {n_eval_train_prompts!r}")
    train_prompts, test_prompts = split_prompts(prompts, n_train, n_test, seed)
    train_rows = assign_responses(train_prompts, seed)
    ev_train = train_prompts[:n_eval_train_prompts]
    eval_sets = {
        "train/original": EvalSet(combination_rows(ev_train, CHOSEN, REJECTED, assigned=train_rows), "original"),
        "train/paraphrased": EvalSet(combination_rows(ev_train, PARAPHRASED_CHOSEN, PARAPHRASED_REJECTED), "paraphrased"),
        "test/original": EvalSet(combination_rows(test_prompts, CHOSEN, REJECTED), "original"),
        "test/paraphrased": EvalSet(combination_rows(test_prompts, PARAPHRASED_CHOSEN, PARAPHRASED_REJECTED),
                                    "paraphrased"),
    }
    return PersonaSetting(train_prompts, test_prompts, train_rows, eval_sets)


def load_setting(trait: str = "agreeableness", data_dir: str | Path | None = None, **kwargs) -> PersonaSetting:
    """:func:`make_setting` over the " Yes" prompts of ``persona/<trait>.jsonl``."""
    return make_setting(select_prompts(load_persona(trait, data_dir)), **kwargs)


# Declared for rmlib.models.load_for_task(name, task="persona"): no tokens of its own; a model without a chat
# template gets the paper's template (Appendix D), whose markers [USER], [ASSISTANT], [EOS] are added as special
# tokens. Their embedding rows are drawn from the caller's random state (run_experiment: seed_everything(seed)).
TASK_TOKENS = ()
TOKEN_SEED = None
