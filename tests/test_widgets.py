"""rmlib.widgets: the front-end files parse as ES modules without imports, and the payloads have the
promised shape and size bound."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from rmlib import widgets as W
from rmlib.widgets.score_panel import SCORE_ESM

JS_FILES = [W.RHO_ESM, W.TRAINING_ESM, SCORE_ESM]


@pytest.mark.parametrize("path", JS_FILES, ids=lambda p: p.name)
def test_front_end_parses_and_has_no_imports(path, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    text = W.esm_source(path)  # what the widget ships: the shared DOM helpers, then its own module
    copy = tmp_path / (path.stem + ".mjs")
    copy.write_text(text)
    result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("svgEl", "htmlEl", "SVG"):  # defined once, in dom.js, not again in the widget's own file
        assert not re.search(rf"^(function|const) {name}\b", path.read_text(), flags=re.M), name
    assert not re.search(r"^\s*import\s", text, flags=re.M), "the widget must not import anything"
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "export default" in text


def test_front_end_names_the_promised_dom_classes():
    rho = W.RHO_ESM.read_text()
    for name in ("rho-explorer", "rho-pair", "rho-cell", "data-k", "data-l", "rho-token-active", "rho-totals"):
        assert name in rho
    view = W.TRAINING_ESM.read_text()
    for name in ("training-view", "tv-example", "tv-panel", "tv-step"):
        assert name in view


def _pair(K=3, L=4, example=0):
    rng = np.random.default_rng(0)
    rho = rng.uniform(-2, 2, size=(K, L))
    inner = rng.normal(size=(K, L)) * 1000
    return W.rho_pair_entry("a pair", example, "chosen", "x bar", "y bar", "x", "v",
                            [f"t{k}" for k in range(K)], [f"s{l}" for l in range(L)],
                            list(range(K)), [(0, 9, 1)[l % 3] if l < 3 else 100 + l for l in range(L)], rho, inner)


def _example():
    return {"label": "e", "im_same": 1.23456, "im_different": -2.0, "im_total": -0.77, "im_delta": -1e-4,
            "ex_term": 12.3456789, "ex_delta": 3.0}


def test_rho_payload_shape_and_rounding():
    pair = _pair()
    data = W.rho_payload({"model": "m", "eta": 1.0, "beta": 0.01}, [_example()], [pair])
    p = data["pairs"][0]
    assert len(p["rho"]) == 3 and all(len(r) == 4 for r in p["rho"])
    assert all(v == round(v, 3) and -2 <= v <= 2 for r in p["rho"] for v in r)
    # same-token cells are (k=0, l=0) and (k=1, l=2); the split adds up to the total
    total = sum(r * i for rr, ii in zip(p["rho"], p["inner"]) for r, i in zip(rr, ii))
    assert p["sum_same"] + p["sum_different"] == pytest.approx(total, rel=1e-2)
    assert data["examples"][0]["ex_term"] == 12.35
    json.dumps(data)  # serializable
    widget = W.RhoExplorer(data=data)
    assert widget.data["pairs"][0]["label"] == "a pair"
    assert "rho-explorer" in widget._esm


def test_rho_payload_rejects_bad_input():
    with pytest.raises(ValueError, match="must be"):
        W.rho_pair_entry("p", 0, "chosen", "", "", "", "", ["a"], ["b"], [1], [2], np.zeros((2, 1)), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="one id per token"):
        W.rho_pair_entry("p", 0, "chosen", "", "", "", "", ["a"], ["b"], [1, 2], [2], np.zeros((1, 1)), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="refers to example"):
        W.rho_payload({}, [_example()], [_pair(example=3)])
    with pytest.raises(ValueError, match="not finite"):
        W.quantize(float("nan"))


def test_payload_size_bound():
    big = [_pair(K=60, L=60) for _ in range(12)]
    with pytest.raises(ValueError, match="byte bound"):
        W.rho_payload({}, [_example()], big)


def test_training_payload_subsamples_and_checks_lengths():
    steps = list(range(200))
    example = {"label": "e", "prompt": "p",
               "responses": [{"name": "chosen", "text": "y", "kind": "chosen", "paraphrased": False}],
               "ex": [list(np.linspace(0, 1, 200))], "im": [list(np.linspace(0, -1, 200))]}
    data = W.training_payload({"note": ""}, steps, [example], max_points=50)
    assert len(data["steps"]) <= 50 and data["steps"][0] == 0 and data["steps"][-1] == 199
    assert len(data["examples"][0]["ex"][0]) == len(data["steps"])
    assert W.payload_size(data) < W.MAX_PAYLOAD_BYTES
    bad = dict(example, im=[[0.0] * 10])
    with pytest.raises(ValueError, match="one series"):
        W.training_payload({}, steps, [bad])
    widget = W.TrainingView(data=data)
    assert "training-view" in widget._esm
