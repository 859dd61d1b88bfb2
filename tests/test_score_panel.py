"""The score panel of notebook 03 (rmlib.widgets.score_panel): the kernel-side scoring against naive
references on tiny-random reward models trained and saved as the notebook does, and the panel on the static
smoke book in headless Chromium (the book is built once per session, shared with tests/test_book.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rmlib.tasks import persona
from rmlib.experiment import run_experiment
from rmlib import widgets as W
from rmlib.runconfig import RunConfig
from rmlib.scoring import score
from rmlib import widgets as W
from rmlib.widgets import score_panel as SP

BETA = 0.01
SHOT_DIR = Path(__file__).resolve().parents[1] / "_build" / "screenshots"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """EX-RM and IM-RM trained on a small Persona setting with save_model_dir, loaded back as the panel does."""
    root = tmp_path_factory.mktemp("panel")
    setting = persona.load_setting(n_train=8, n_test=4, seed=0, n_eval_train_prompts=2)
    records = []
    for rm_type in ("ex", "im"):
        run = RunConfig(setting="panel_test", model="tiny-random", rm_type=rm_type, beta=BETA, precision="fp32",
                        epochs=2, lr=1e-3, batch_size=4, micro_batch_size=4, seed=0)
        out = run_experiment(run, setting.train_rows, setting.eval_sets, root / "results", task="persona",
                             save_model_dir=root / "models")
        records.append(out.record)
    return records, setting, SP.load_panel_models(records)


PROMPT = "Is the following statement something you would say?\n\"I like helping people.\""
A, B = "A truthful reply is yes", "My response would be certainly"


def _naive_logps(lm, encoded) -> torch.Tensor:
    """ln pi(y_k | x, y_<k) for every response token, from the model's full logits (no rmlib batching)."""
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=ids).logits[0].double(), dim=-1)
    start = encoded.response_start
    targets = ids[0, start:]
    return logp[start - 1:-1].gather(1, targets[:, None]).squeeze(1)


def test_rewards_and_token_changes_match_naive_references(trained):
    _, setting, models = trained
    result = SP.score_pair(models, PROMPT, A, B, setting.train_rows[0])
    im, ex = models["IM-RM"], models["EX-RM"]
    for key, text in (("A", A), ("B", B)):
        encoded = im.encode(PROMPT, text)
        for name, rm in models.items():  # each RM's reward is rmlib.scoring.score of the same text
            assert result["rewards"][name][key] == pytest.approx(float(score(rm, [rm.encode(PROMPT, text)])[0]), abs=1e-6)
        naive_trained, naive_ref = _naive_logps(im.lm, encoded), _naive_logps(im.reference_lm, encoded)
        naive_reward = BETA * float(naive_trained.sum() - naive_ref.sum())  # Eq. 2 from the raw logits
        assert result["rewards"]["IM-RM"][key] == pytest.approx(naive_reward, abs=1e-5)
        tokens = result["tokens"][key]
        assert [t["token"] for t in tokens] == [im.tokenizer.decode([i]) for i in encoded.response_ids]
        changes = torch.tensor([t["change"] for t in tokens], dtype=torch.float64)
        assert torch.allclose(changes, naive_trained - naive_ref, atol=1e-4)
        assert BETA * float(changes.sum()) == pytest.approx(result["rewards"]["IM-RM"][key], abs=1e-5)
    # the IM-RM was trained: its rewards of new text are not all zero (pi_theta differs from pi_ref)
    assert max(abs(v) for v in result["rewards"]["IM-RM"].values()) > 1e-4
    assert ex.head.weight.abs().sum() > 0


def _naive_rho(lm, bar, v) -> torch.Tensor:
    """Eq. 5's definition cell by cell: 1[yb_k = v_l] - pi(yb_k|x, v_<l) - pi(v_l|xb, yb_<k) + <pi_k, pi_l>."""
    def probs(encoded):
        ids = torch.tensor([encoded.input_ids])
        with torch.no_grad():
            p = torch.softmax(lm(input_ids=ids).logits[0].double(), dim=-1)
        return p[encoded.response_start - 1:-1], list(encoded.response_ids)
    p_bar, t_bar = probs(bar)
    p_v, t_v = probs(v)
    out = torch.zeros(len(t_bar), len(t_v), dtype=torch.float64)
    for k in range(len(t_bar)):
        for l in range(len(t_v)):
            out[k, l] = (float(t_bar[k] == t_v[l]) - p_v[l, t_bar[k]] - p_bar[k, t_v[l]] + p_bar[k] @ p_v[l])
    return out


def test_rho_grid_matches_eq5_definition(trained):
    _, setting, models = trained
    im = models["IM-RM"]
    train = setting.train_rows[1]
    result = SP.score_pair(models, PROMPT, A, B, train)
    for key, text in (("A", A), ("B", B)):
        for role in ("chosen", "rejected"):
            grid = result["rho"][key][role]
            naive = _naive_rho(im.lm, im.encode(PROMPT, text), im.encode(train["prompt"], train[role]))
            assert torch.allclose(torch.tensor(grid["rho"], dtype=torch.float64), naive, atol=1e-5)
            assert len(grid["eval_tokens"]) == naive.shape[0] and len(grid["train_tokens"]) == naive.shape[1]
    assert SP.score_pair(models, PROMPT, A, B, None)["rho"] is None


def test_preference_and_agreement_logic():
    assert SP.preferred(1.0, 0.5) == "A" and SP.preferred(-1.0, 0.5) == "B" and SP.preferred(0.2, 0.2) == "tie"
    assert SP.verdict({"EX-RM": "A", "IM-RM": "A"}) == {"agree": True, "sentence": "EX-RM and IM-RM agree: both prefer A."}
    split = SP.verdict({"EX-RM": "A", "IM-RM": "B", "EX-GRM": "A"})
    assert split["agree"] is False and "EX-RM prefers A" in split["sentence"] and "IM-RM prefers B" in split["sentence"]
    assert SP.verdict({"EX-RM": "tie", "IM-RM": "B"})["agree"] is False


def test_identical_responses_tie_and_agree(trained):
    _, _, models = trained
    result = SP.score_pair(models, PROMPT, A, A)
    assert set(result["preferred"].values()) == {"tie"} and result["agree"] is True


def test_bad_input_is_a_message_not_a_traceback(trained):
    _, setting, models = trained
    panel = SP.ScorePanel(models=models, data={"train_pairs": []})
    for prompt, a, b, expected in (("  ", A, B, "prompt is empty"), (PROMPT, "", B, "response A is empty"),
                                   (PROMPT, A, "yes " * 200, "response B has"),
                                   ("word " * 1000, A, B, "prompt has")):
        reply = panel.answer({"type": "score", "id": 7, "prompt": prompt, "a": a, "b": b, "train": None})
        assert reply["type"] == "error" and reply["id"] == 7 and expected in reply["message"], reply
        assert "Traceback" not in reply["message"]
    assert panel.answer({"type": "ping"}) == {"type": "pong", "live": True}
    assert SP.ScorePanel(data={}).answer({"type": "ping"}) == {"type": "pong", "live": False}
    ok = panel.answer({"type": "score", "id": 8, "prompt": PROMPT, "a": A, "b": B, "train": None})
    assert ok["type"] == "result" and ok["id"] == 8 and set(ok["result"]["rewards"]) == {"EX-RM", "IM-RM"}
    json.dumps(ok)


def test_a_frozen_im_rm_is_refused(trained):
    _, _, models = trained
    from rmlib.rewards import ImplicitRM

    frozen = ImplicitRM(models["IM-RM"].lm, models["IM-RM"].tokenizer, beta=BETA)
    with pytest.raises(ValueError, match="load_reward_model"):
        SP.score_pair({"EX-RM": models["EX-RM"], "IM-RM": frozen}, PROMPT, A, B)


def test_find_paraphrase_flip_on_a_hand_made_case():
    orig = [{"prompt": p, "chosen": c, "rejected": "n"} for p in ("p1", "p2") for c in ("y1", "y2")]
    para = [{"prompt": p, "chosen": "c", "rejected": r} for p in ("p1", "p2") for r in ("r1", "r2")]
    # p1: one original pair wrong (no flip there); p2: originals right, paraphrase r2 wrong
    ev_orig = {"reward_chosen": [0.0, 1.0, 1.0, 1.0], "reward_rejected": [0.5, 0.0, 0.0, 0.0]}
    ev_para = {"reward_chosen": [0.0, 0.0, 1.0, 1.0], "reward_rejected": [1.0, 1.0, 0.0, 2.0]}
    flip = SP.find_paraphrase_flip(orig, ev_orig, para, ev_para)
    assert flip["prompt"] == "p2" and flip["paraphrased"]["rejected"] == "r2" and flip["original"]["prompt"] == "p2"
    ev_para_ok = {"reward_chosen": [1.0] * 4, "reward_rejected": [0.0] * 4}
    assert SP.find_paraphrase_flip(orig, ev_orig, para, ev_para_ok) is None


def test_panel_data_from_the_run(trained):
    records, setting, models = trained
    im_record = next(r for r in records if r["spec"]["rm_type"] == "im")
    data = SP.panel_data(models, setting, im_record, "tiny-random")
    assert W.payload_size(data) < W.MAX_PAYLOAD_BYTES
    assert len(data["examples"]) == 3 and len(data["train_pairs"]) == 4
    flip = SP.find_paraphrase_flip(setting.eval_sets["test/original"].rows, im_record["evals"]["test/original"],
                                   setting.eval_sets["test/paraphrased"].rows, im_record["evals"]["test/paraphrased"])
    assert data["meta"]["flip_found"] == (flip is not None)
    paraphrased = data["examples"][2]
    assert paraphrased["a"] in persona.PARAPHRASED_CHOSEN and paraphrased["b"] in persona.PARAPHRASED_REJECTED
    if flip is not None:  # the reloaded IM-RM flips the paraphrased pair as the stored rewards say
        assert paraphrased["result"]["preferred"]["IM-RM"] in ("B", "tie")
        assert data["examples"][1]["result"]["preferred"]["IM-RM"] == "A"
    for example in data["examples"]:  # the payload's rewards are the live ones, rounded
        live = SP.score_pair(models, example["prompt"], example["a"], example["b"])
        for name, r in example["result"]["rewards"].items():
            assert r["A"] == pytest.approx(live["rewards"][name]["A"], rel=1e-3, abs=1e-6)
    saved = str(records[0]["saved_model"])
    assert saved.split("/models/")[0] not in json.dumps(data)  # no machine path in the page's payload


def test_front_end_parses_and_has_no_imports(tmp_path):
    text = W.esm_source(SP.SCORE_ESM)
    assert not re.search(r"^\s*import\s", text, flags=re.M)
    assert "https://" not in text and "export default" in text
    for name in ("score-panel", "sp-example", "sp-status", "sp-score", "sp-verdict", "sp-token", "sp-cell", "aria-live"):
        assert name in text
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    copy = tmp_path / "score_panel.mjs"
    copy.write_text(text)
    result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------
# the panel on the static smoke book (no kernel): precomputed examples, controls respond

def _screenshot(page, panel, path) -> None:
    """The panel alone, from a full-page capture (an element capture scrolls, and the page's sticky header
    then covers part of it)."""
    box = panel.evaluate("""el => { const r = el.getBoundingClientRect();
      return {x: Math.max(0, r.left + scrollX - 4), y: r.top + scrollY - 4, width: r.width + 8, height: r.height + 8}; }""")
    page.screenshot(path=str(path), full_page=True, clip=box)


def _panel_state(panel) -> dict:
    return panel.evaluate("""el => ({
      verdict: el.querySelector('.sp-verdict').textContent,
      rewards: Array.from(el.querySelectorAll('table.sp-rewards tr.sp-rm')).map(r => r.textContent),
      tokens: Array.from(el.querySelectorAll('.sp-token')).map(t => t.textContent).join('|'),
      prompt: el.querySelector('textarea.sp-prompt').value,
      cells: Array.from(el.querySelectorAll('rect.sp-cell')).map(c => c.getAttribute('fill')).join(',')})""")


@pytest.mark.slow
def test_panel_on_the_static_book(site, browser):
    from test_book import WAIT_MS, Visit

    pages = sorted(site.glob("*_persona_paraphrase.html"))
    assert pages, "the persona paraphrase page is missing from the site"
    visit = Visit(browser, pages[0].as_uri())
    try:
        page = visit.page
        page.wait_for_selector(".score-panel table.sp-rewards", timeout=WAIT_MS)
        panel = page.locator(".score-panel").first
        page.wait_for_timeout(2500)  # the panel pings twice; nobody answers in a static page
        status = panel.locator(".sp-status")
        assert status.get_attribute("data-mode") == "static"
        assert "needs a running kernel" in status.inner_text()
        assert panel.locator("button.sp-score").is_disabled()
        assert panel.locator("textarea.sp-a").get_attribute("readonly") is not None

        names = [r.split("\n")[0] for r in panel.locator("tr.sp-rm td:first-child").all_inner_texts()]
        assert names[:2] == ["EX-RM", "IM-RM"], names
        assert panel.locator(".sp-token[data-response='A']").count() > 0
        assert panel.locator(".sp-token[data-response='B']").count() > 0
        assert panel.locator(".sp-flip").inner_text().strip(), "the flip search says nothing"
        assert panel.locator(".sp-verdict").get_attribute("aria-live") == "polite"

        select = panel.locator("select.sp-example")
        options = select.locator("option").evaluate_all("os => os.map(o => o.value)")
        assert len(options) >= 3, options
        before = _panel_state(panel)
        select.select_option(options[2])  # the test prompt's paraphrased pair
        after = _panel_state(panel)
        assert after["rewards"] != before["rewards"] and after["tokens"] != before["tokens"]
        assert after["prompt"] != before["prompt"]
        shots = site.parents[2] / "screenshots"
        shots.mkdir(exist_ok=True)
        _screenshot(page, panel, shots / "score_panel_1280.png")

        grid = panel.locator("select.sp-grid")
        cells = after["cells"]
        grid.select_option(grid.locator("option").nth(3).get_attribute("value"))
        assert _panel_state(panel)["cells"] != cells, "choosing another rho grid changed nothing"
        readout = panel.locator(".sp-readout").inner_text()
        panel.locator("rect.sp-cell").nth(1).hover()
        assert panel.locator(".sp-readout").inner_text() != readout
        heat = panel.locator("svg.sp-grid-svg")
        heat.focus()
        heat.press("ArrowDown")
        assert panel.locator(".sp-cell-active").first.get_attribute("data-k") == "1"

        heat.evaluate("el => el.blur()")
        page.set_viewport_size({"width": 420, "height": 900})
        page.wait_for_timeout(300)
        for control in ("select.sp-example", "select.sp-train", "button.sp-score", "textarea.sp-b", "table.sp-rewards"):
            right = panel.locator(control).first.evaluate("el => el.getBoundingClientRect().right")
            assert right <= 420, f"{control} runs off a 420 px screen (right edge at {right:.0f} px)"
        _screenshot(page, panel, shots / "score_panel_420.png")
        assert not visit.problems, visit.problems
    finally:
        visit.close()


# ---------------------------------------------------------------------------------------------------
# live mode: the front end in Chromium with a stand-in for the widget model whose messages are answered
# by the real kernel side (ScorePanel.answer on the tiny models), as the kernel does through the comm

_MOUNT = """async ([code, css, data]) => {
  const style = document.createElement('style');
  style.textContent = css;
  document.head.appendChild(style);
  const mod = await import(URL.createObjectURL(new Blob([code], {type: 'text/javascript'})));
  const handlers = {};
  window.sent = [];
  const model = {get: () => data, on: (event, f) => { (handlers[event] = handlers[event] || []).push(f); },
                 send: (msg) => { window.sent.push(msg); }};
  window.deliver = (msg) => (handlers['msg:custom'] || []).forEach(f => f(msg));
  mod.default.render({model, el: document.getElementById('el')});
}"""


def _answer_pending(page, widget) -> list[dict]:
    """Answer every message the front end sent since the last call, as the kernel would."""
    sent = page.evaluate("() => window.sent.splice(0)")
    for message in sent:
        page.evaluate("m => window.deliver(m)", json.loads(json.dumps(widget.answer(message))))
    return sent


@pytest.mark.slow
def test_live_mode_round_trip(trained, browser):
    records, setting, models = trained
    im_record = next(r for r in records if r["spec"]["rm_type"] == "im")
    widget = SP.ScorePanel(models=models, data=SP.panel_data(models, setting, im_record, "tiny-random"))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.set_content("<!doctype html><html><body><div id='el'></div></body></html>")
        page.evaluate(_MOUNT, [W.esm_source(SP.SCORE_ESM), W.CSS.read_text(), widget.data])
        panel = page.locator(".score-panel")
        assert panel.locator(".sp-status").get_attribute("data-mode") == "static"
        assert _answer_pending(page, widget) == [{"type": "ping"}]
        assert panel.locator(".sp-status").get_attribute("data-mode") == "live"
        assert not panel.locator("button.sp-score").is_disabled()
        labels = panel.locator("select.sp-example option").all_inner_texts()
        assert any(label.startswith("start from:") for label in labels), labels

        prompt, a, b = setting.test_prompts[0], "In my view, the answer is yes", "I lean toward nope"
        panel.locator("textarea.sp-prompt").fill(prompt)
        panel.locator("textarea.sp-a").fill(a)
        panel.locator("textarea.sp-b").fill(b)
        assert panel.locator("select.sp-example").input_value() == "own"  # no stale example name
        panel.locator("button.sp-score").click()
        sent = _answer_pending(page, widget)
        assert [(m["type"], m["prompt"], m["a"], m["b"], m["train"]) for m in sent] == [("score", prompt, a, b, 0)]
        expected = SP.score_pair(models, prompt, a, b, setting.train_rows[0])
        assert panel.locator(".sp-verdict").inner_text() == expected["sentence"]
        shown = {r.split("\t")[0]: r.split("\t")[1:3] for r in panel.locator("tr.sp-rm").all_inner_texts()}
        for name, rewards in expected["rewards"].items():
            assert float(shown[name][0]) == pytest.approx(rewards["A"], rel=2e-3, abs=1e-7)
        tokens = panel.locator(".sp-token[data-response='B'] .sp-token-text").all_inner_texts()
        assert tokens == [t["token"].replace(" ", "\u00b7").replace("\n", "\\n") for t in expected["tokens"]["B"]]
        assert panel.locator("rect.sp-cell").count() == len(expected["rho"]["A"]["chosen"]["rho"]) * \
            len(expected["rho"]["A"]["chosen"]["rho"][0])

        panel.locator("select.sp-train").select_option("1")  # another training pair: scored again against it
        assert [m["train"] for m in _answer_pending(page, widget)] == [1]
        assert setting.train_rows[1]["chosen"] in panel.locator(".sp-section").last.inner_text()

        panel.locator("textarea.sp-a").fill("   ")
        panel.locator("textarea.sp-a").press("Control+Enter")  # the keyboard path
        _answer_pending(page, widget)
        assert panel.locator(".sp-error").inner_text() == "response A is empty: type a response"
        assert not panel.locator("button.sp-score").is_disabled()
        panel.locator("textarea.sp-a").fill(a)
        panel.locator("button.sp-score").click()
        _answer_pending(page, widget)
        assert panel.locator(".sp-error").inner_text() == ""
        page.set_viewport_size({"width": 1280, "height": 900})
        SHOT_DIR.mkdir(parents=True, exist_ok=True)
        _screenshot(page, panel, SHOT_DIR / "score_panel_live.png")
        assert not errors, errors
    finally:
        context.close()
