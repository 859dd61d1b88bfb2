"""Interactive explorers for the learning-dynamics notebook, as anywidget widgets.

Each widget carries a small precomputed payload (the ``data`` traitlet, synced to the front end) and
front-end code shipped in this folder (``rho_explorer.js``, ``training_view.js``, ``widgets.css``):
plain DOM/SVG ES modules with no imports, so they work in JupyterLab and, once the widget state is
embedded in an executed notebook, in a static jupyter-book page with no kernel and no network.

* :class:`RhoExplorer`: heatmap of rho_{k,l}(v) (Eq. 5) for (evaluated response, training response)
  pairs, hover a cell to see the two tokens and the value, and the totals of Eq. 5 split into same-token
  and different-token contributions next to the EX-RM term <h, h+ - h-> of Eq. 4.
  Payload: ``{"meta", "examples": [...], "pairs": [...]}`` built by :func:`rho_payload`.
* :class:`TrainingView`: rewards of held-out responses over training steps, EX-RM vs IM-RM.
  Payload: ``{"meta", "steps": [...], "examples": [...]}`` built by :func:`training_payload`.
* :class:`rmlib.widgets.score_panel.ScorePanel` (notebook 03): score a prompt and two responses with the
  trained RMs, live through the kernel or, in the static book, precomputed examples (its own module).

Stable DOM names for browser tests: ``.rho-explorer``, ``select.rho-pair``, ``rect.rho-cell[data-k][data-l]``,
``.rho-token`` (``rho-token-active`` while its cell is hovered), ``.rho-readout``, ``.rho-totals``;
``.training-view``, ``select.tv-example``, ``svg.tv-panel[data-rm]``, ``polyline.tv-line``, ``input.tv-step``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import anywidget
import traitlets

HERE = Path(__file__).parent
RHO_ESM = HERE / "rho_explorer.js"
TRAINING_ESM = HERE / "training_view.js"
CSS = HERE / "widgets.css"
DOM_HELPERS = HERE / "dom.js"  # svgEl, htmlEl: put in front of every widget's module
MAX_PAYLOAD_BYTES = 400_000  # per widget; a book page embeds the JSON once


def quantize(x: float, digits: int = 3) -> float:
    """Round to ``digits`` decimals (the payload's precision); non-finite values are refused."""
    if not math.isfinite(x):
        raise ValueError(f"payload value is not finite: {x}")
    return round(float(x), digits)


def significant(x: float, digits: int = 3) -> float:
    """Round to ``digits`` significant digits (for large inner products of hidden states)."""
    if not math.isfinite(x):
        raise ValueError(f"payload value is not finite: {x}")
    if x == 0:
        return 0.0
    return round(float(x), digits - 1 - int(math.floor(math.log10(abs(x)))))


def payload_size(data: dict) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode("utf-8"))


def _check_size(data: dict) -> dict:
    size = payload_size(data)
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"widget payload is {size} bytes, above the {MAX_PAYLOAD_BYTES} byte bound: "
                         "subsample examples or truncate token lists")
    return data


def _matrix(m, round_fn) -> list[list[float]]:
    return [[round_fn(float(v)) for v in row] for row in m]


def rho_pair_entry(label: str, example: int, role: str, eval_prompt: str, eval_response: str,
                   train_prompt: str, train_response: str, eval_tokens: list[str], train_tokens: list[str],
                   eval_ids: list[int], train_ids: list[int], rho, inner) -> dict:
    """One selectable (evaluated response, training response v) pair; ``rho`` and ``inner`` are [K, L]."""
    K, L = len(eval_tokens), len(train_tokens)
    if tuple(rho.shape) != (K, L) or tuple(inner.shape) != (K, L):
        raise ValueError(f"rho {tuple(rho.shape)} and inner {tuple(inner.shape)} must be [K, L] = [{K}, {L}]")
    if len(eval_ids) != K or len(train_ids) != L:
        raise ValueError(f"need one id per token: {len(eval_ids)} ids for {K} tokens, {len(train_ids)} for {L}")
    if role not in ("chosen", "rejected"):
        raise ValueError(f"role must be 'chosen' or 'rejected', got {role!r}")
    contrib = rho * inner
    same = [[a == b for b in train_ids] for a in eval_ids]
    sum_same = float(sum(float(contrib[k, l]) for k in range(K) for l in range(L) if same[k][l]))
    return {"label": label, "example": example, "role": role,
            "eval_prompt": eval_prompt, "eval_response": eval_response,
            "train_prompt": train_prompt, "train_response": train_response,
            "eval_tokens": list(eval_tokens), "train_tokens": list(train_tokens),
            "eval_ids": [int(i) for i in eval_ids], "train_ids": [int(i) for i in train_ids],
            "rho": _matrix(rho, quantize), "inner": _matrix(inner, significant),
            "sum_same": significant(sum_same, 4), "sum_different": significant(float(contrib.sum()) - sum_same, 4)}


def rho_payload(meta: dict, examples: list[dict], pairs: list[dict]) -> dict:
    """Payload of :class:`RhoExplorer`. ``examples[i]``: label, im_same, im_different, im_total, im_delta,
    ex_term, ex_delta (Eq. 5 / Eq. 4 totals of one (evaluated pair, training example)); ``pairs``: entries
    of :func:`rho_pair_entry` referring to an example by index."""
    keys = ("label", "im_same", "im_different", "im_total", "im_delta", "ex_term", "ex_delta")
    clean = []
    for e in examples:
        missing = [k for k in keys if k not in e]
        if missing:
            raise ValueError(f"rho example lacks {missing}")
        clean.append({k: (e[k] if k == "label" else significant(e[k], 4)) for k in keys}
                     | {k: v for k, v in e.items() if k not in keys})
    for p in pairs:
        if not 0 <= p["example"] < len(examples):
            raise ValueError(f"pair {p['label']!r} refers to example {p['example']} of {len(examples)}")
    return _check_size({"meta": meta, "examples": clean, "pairs": pairs})


def training_payload(meta: dict, steps: list[int], examples: list[dict], max_points: int = 60) -> dict:
    """Payload of :class:`TrainingView`. ``examples[i]``: label, prompt, responses (name, text, kind,
    paraphrased), ex / im: one reward series per response, aligned with ``steps``. Series are subsampled
    to at most ``max_points`` steps (first and last kept) and rounded."""
    n = len(steps)
    if n == 0:
        raise ValueError("need at least one step")
    keep = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)}) if n > max_points else list(range(n))
    out = []
    for e in examples:
        for rm in ("ex", "im"):
            if len(e[rm]) != len(e["responses"]) or any(len(s) != n for s in e[rm]):
                raise ValueError(f"example {e['label']!r}: {rm} needs one series of {n} rewards per response")
        out.append({"label": e["label"], "prompt": e["prompt"], "responses": e["responses"],
                    "ex": [[significant(s[i], 4) for i in keep] for s in e["ex"]],
                    "im": [[significant(s[i], 4) for i in keep] for s in e["im"]]})
    return _check_size({"meta": meta, "steps": [int(steps[i]) for i in keep], "examples": out})


def esm_source(path: Path) -> str:
    """A widget's front end as one self-contained ES module: the shared DOM helpers, then its own file."""
    return DOM_HELPERS.read_text(encoding="utf-8") + "\n" + Path(path).read_text(encoding="utf-8")


class RhoExplorer(anywidget.AnyWidget):
    """rho_{k,l} heatmaps and Eq. 4/5 totals (payload: :func:`rho_payload`)."""

    _esm = esm_source(RHO_ESM)
    _css = CSS
    data = traitlets.Dict().tag(sync=True)


class TrainingView(anywidget.AnyWidget):
    """Held-out rewards over training steps, EX-RM vs IM-RM (payload: :func:`training_payload`)."""

    _esm = esm_source(TRAINING_ESM)
    _css = CSS
    data = traitlets.Dict().tag(sync=True)


def token_strings(tokenizer, ids) -> list[str]:
    """Each token id decoded on its own (leading spaces kept, shown as a middle dot by the front end)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def rho_explorer_data(items: list[dict], tokenizer, meta: dict, max_tokens: int = 40) -> dict:
    """Payload of :class:`RhoExplorer` from analyses. ``items``: dicts with ``label``, ``analysis``
    (:class:`rmlib.analysis.dynamics.PairAnalysis`), ``train`` = (x, y+, y-), ``evaluated`` = (xb, yb); each gives
    one example and two selectable pairs (v = y+ and v = y-). ``meta`` needs eta, g and beta. Responses longer than ``max_tokens`` are
    refused (the payload would grow as K * L)."""
    examples, pairs = [], []
    for i, item in enumerate(items):
        a = item["analysis"]
        lengths = (len(a.bar), len(a.plus), len(a.minus))
        if max(lengths) > max_tokens:
            raise ValueError(f"{item['label']!r}: responses of {lengths} tokens exceed max_tokens={max_tokens}")
        examples.append({"label": item["label"], "im_same": a.im.same, "im_different": a.im.different,
                         "im_total": a.im.total, "im_delta": a.im.delta, "ex_term": a.ex_term,
                         "ex_delta": a.ex_term * meta["eta"] * meta["g"]})  # Eq. 4
        x, y_plus, y_minus = item["train"]
        xb, yb = item["evaluated"]
        for role, v, response, r, inner in (("chosen", a.plus, y_plus, a.rho_plus, a.inner_plus),
                                            ("rejected", a.minus, y_minus, a.rho_minus, a.inner_minus)):
            pairs.append(rho_pair_entry(
                f"{item['label']} | v = training {role}", i, role, _short(xb), yb, _short(x), response,
                token_strings(tokenizer, a.bar.tokens), token_strings(tokenizer, v.tokens),
                a.bar.tokens.tolist(), v.tokens.tolist(), r.numpy(), inner.numpy()))
    return rho_payload(meta, examples, pairs)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"
