"""The book: papermill execution (skip, stop on failure), the smoke build, and the site in headless Chromium.

The browser part opens every page of the ``smoke`` build both served over http://127.0.0.1 and from
file:// in Debian's chromium (``make browser`` installs it; playwright cannot download browsers here),
with every request to another host blocked and recorded. It checks that nothing fails to load, nothing
is logged as an error, math is typeset, every widget renders, and the rho explorer on the dynamics page
responds to selection and hover. Screenshots go to ``_build/smoke/screenshots/``.
"""

from __future__ import annotations

import functools
import html as html_lib
import http.server
import json
import re
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402
import vendor_js  # noqa: E402

pytestmark = pytest.mark.slow

WAIT_MS = 60_000  # generous upper bound for a page to settle on a busy 2-core machine (not a timing test)


# ---------------------------------------------------------------------------------------------------
# execution machinery, on tiny notebooks of our own (no model, a few seconds each)

def _write_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"),
                nbformat.v4.new_code_cell('profile = "cpu"\nresults_dir = "results"\nx = 1',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def _setup(tmp_path: Path, bodies: dict[str, str]):
    notebooks, params = tmp_path / "notebooks", tmp_path / "params"
    notebooks.mkdir()
    for stem, body in bodies.items():
        _write_notebook(notebooks / f"{stem}.ipynb", body)
        (params / stem).mkdir(parents=True)
        (params / stem / "smoke.yaml").write_text("profile: smoke\nx: 2\n")
    return notebooks, params, build_book.Layout(tmp_path / "_build", "smoke")


def test_failing_cell_stops_the_build_and_keeps_earlier_notebooks(tmp_path):
    notebooks, params, layout = _setup(tmp_path, {"01_ok": "print('x is', x)", "02_bad": "x / 0",
                                                  "03_later": "print('later')"})
    run = functools.partial(build_book.execute_notebooks, build_book.find_notebooks(notebooks), params,
                            layout, "smoke")
    with pytest.raises(build_book.BuildError) as failure:
        run()
    message = str(failure.value)
    assert "02_bad.ipynb" in message and "In [3]" in message and "`x / 0`" in message
    assert "ZeroDivisionError" in message
    assert layout.stamp("01_ok").exists() and not layout.stamp("02_bad").exists()
    assert not (layout.executed / "03_later.ipynb").exists()
    ok = nbformat.read(layout.executed / "01_ok.ipynb", as_version=4)
    assert "x is 2" in ok.cells[-1].outputs[0]["text"]  # the profile's value reached the notebook
    assert any("results_dir" in c.source and layout.results.name in c.source for c in ok.cells
               if "injected-parameters" in c.metadata.get("tags", []))

    _write_notebook(notebooks / "02_bad.ipynb", "print(x / 2)")  # fixed: only 02 and 03 run now
    assert [r["reused"] for r in run()] == [True, False, False]
    assert [r["reused"] for r in run()] == [True, True, True]
    (params / "03_later" / "smoke.yaml").write_text("profile: smoke\nx: 3\n")  # a parameter changed
    assert [r["reused"] for r in run()] == [True, True, False]


def test_build_log_streams_cell_output_without_kernel_warnings(tmp_path, capfd):
    """Cell output reaches the build console while the notebook runs (a user can tell slow from hung),
    and the kernel runs over local sockets, so ipykernel's "running over TCP without encryption" warning
    does not clutter the log."""
    notebooks, params, layout = _setup(tmp_path, {"01_ok": "import sys\nprint('x is', x)\nprint('on stderr', file=sys.stderr)"})
    build_book.execute_notebooks(build_book.find_notebooks(notebooks), params, layout, "smoke")
    out, err = capfd.readouterr()
    assert "x is 2" in out + err and "on stderr" in out + err
    assert "TCP" not in out + err, [line for line in (out + err).splitlines() if "TCP" in line]


def test_missing_parameter_file_is_named(tmp_path):
    notebooks, params, layout = _setup(tmp_path, {"01_ok": "pass"})
    with pytest.raises(build_book.BuildError, match=r"params/01_ok/paper\.yaml is missing|01_ok/paper.yaml"):
        build_book.execute_notebooks(build_book.find_notebooks(notebooks), params, layout, "paper")


def test_results_page_is_generated_from_summaries(tmp_path):
    layout = build_book.Layout(tmp_path, "cpu")
    (layout.results / "summaries").mkdir(parents=True)
    (layout.results / "summaries" / "01_a.json").write_text(json.dumps(
        {"notebook": "01_a", "profile": "cpu", "rows": [
            {"quantity": "IM-RM test accuracy", "value": 0.98765, "paper": "0.99", "note": "mean of 3 seeds"}]}))
    records = [{"stem": "01_a", "seconds": 60.0, "finished": "now"},
               {"stem": "02_b", "seconds": 30.0, "finished": "now"}]
    page = build_book.results_page(records, layout, "cpu")
    assert "| IM-RM test accuracy | 0.988 | 0.99 | mean of 3 seeds |" in page
    assert "02_b.json` is missing" in page  # a notebook without a summary is said so, not skipped silently


def test_claims_table_lists_every_notebooks_claims_first(tmp_path):
    layout = build_book.Layout(tmp_path, "cpu")
    (layout.results / "summaries").mkdir(parents=True)
    claim = {"claim": "IM-RM < EX-RM on paraphrases", "paper": "1.00 vs 0.00", "this build": "+0.40 [+0.10, +0.70]",
             "verdict": "agrees with the paper", "estimate": 0.4}
    (layout.results / "summaries" / "03_c.json").write_text(json.dumps(
        {"notebook": "03_c", "profile": "cpu", "rows": [{"quantity": "q", "value": 1}], "claims": [claim]}))
    (layout.results / "summaries" / "04_d.json").write_text(json.dumps(
        {"notebook": "04_d", "profile": "cpu", "rows": [{"quantity": "q", "value": 1}]}))  # no claims: no rows
    records = [{"stem": s, "seconds": 1.0, "finished": "now"} for s in ("03_c", "04_d")]
    page = build_book.results_page(records, layout, "cpu")
    row = ("| {doc}`03 <03_c>` | IM-RM < EX-RM on paraphrases | agrees with the paper | – | +0.40 [+0.10, +0.70] | "
           "1.00 vs 0.00 | – | – | – | – |")  # the verdict beside its claim (the table is wide)
    assert row in page
    assert "**Verdict rule.**" in page and "**Multiplicity.**" in page
    assert page.index("## Claims tested in this build") < page.index("## {doc}`03_c`")
    assert page.count("| {doc}`03 <03_c>`") == 1


def test_claims_table_states_size_test_holm_and_what_would_decide(tmp_path):
    import numpy as np
    from rmlib.analysis import stats

    layout = build_book.Layout(tmp_path, "smoke")
    (layout.results / "summaries").mkdir(parents=True)
    rng = np.random.default_rng(0)
    decided = stats.compare(rng.random((3, 300)) < 0.9, rng.random((3, 300)) < 0.5, +1, unit="prompt")
    undecided = stats.compare(np.ones(4), np.r_[1, 1, 1, 0.0], +1, paper_value=0.3,
                              clusters=["a", "a", "b", "b"], unit="prompt")
    check = stats.compare(np.ones(40), 0.5, +1, rule="check")
    claims = [c.claim_row(name, "p") for name, c in (("big", decided), ("small", undecided), ("pre", check))]
    (layout.results / "summaries" / "04_real_world_shifts.json").write_text(json.dumps(
        {"notebook": "04_real_world_shifts", "profile": "smoke", "rows": [{"quantity": "q", "value": 1}],
         "claims": claims}))
    page = build_book.results_page([{"stem": "04_real_world_shifts", "seconds": 1.0, "finished": "now"}], layout,
                                   "smoke")
    big = next(line for line in page.splitlines() if "| big |" in line)
    assert "| 300 | 3 | < 0.001 (< 0.001) |" in big  # p, then Holm's over the build
    assert "| big | agrees with the paper | direction |" in big
    small = next(line for line in page.splitlines() if "| small |" in line and "4 / 2" in line)
    assert "| small | undecided at this size | direction |" in small  # the detectable difference has its own column
    assert "check: passed" in page
    assert "This build states 2 verdicts" in page and "1 of the 1 decided verdicts" in page
    power = next(line for line in page.splitlines() if line.startswith("| {doc}`04_real_world_shifts` | small | +0.300"))
    assert "`cpu`" in power or "`paper`" in power or "none of the profiles" in power


def test_claims_table_says_a_not_comparable_reason_once_under_the_table(tmp_path):
    layout = build_book.Layout(tmp_path, "cpu")
    (layout.results / "summaries").mkdir(parents=True)
    reason = "final training accuracy EX-RM 0.84 vs IM-RM 1.00 differ by more than 0.05 (fairness check failed)"
    claims = [{"claim": f"chat, {c}", "verdict": f"not comparable: {reason}", "rule": "direction, beyond +-0.05",
               "p_value": 0.5} for c in ("in-distribution", "token-level shift")]
    claims.append({"claim": "math, tie", "verdict": "not comparable: another reason", "rule": "tie within +-0.05"})
    (layout.results / "summaries" / "04_d.json").write_text(json.dumps(
        {"notebook": "04_d", "profile": "cpu", "rows": [{"quantity": "q", "value": 1}], "claims": claims}))
    page = build_book.results_page([{"stem": "04_d", "seconds": 1.0, "finished": "now"}], layout, "cpu")
    assert "| chat, in-distribution | not comparable [1] | direction |" in page
    assert "| chat, token-level shift | not comparable [1] | direction |" in page
    assert "| math, tie | not comparable [2] | tie |" in page
    assert page.count(reason) == 1 and f"- [1] *Not comparable* (notebook 04): {reason}." in page
    assert "- [2] *Not comparable* (notebook 04): another reason." in page
    assert "This build states 0 verdicts" in page  # not-comparable rows are no verdicts


def test_holm_matches_a_hand_computed_case():
    from rmlib.analysis import stats

    assert stats.holm([0.01, 0.04, 0.03, 0.2]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_retrain_passes_force_to_every_notebook(tmp_path, monkeypatch):
    notebooks, params, layout = _setup(tmp_path, {"01_ok": "pass", "02_ok": "pass"})
    seen = []
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda src, out, parameters, **kw: (seen.append(parameters), Path(out).write_text("{}")))
    build_book.execute_notebooks(build_book.find_notebooks(notebooks), params, layout, "smoke", retrain=True)
    assert [p.get("force") for p in seen] == [True, True]
    seen.clear()
    build_book.execute_notebooks(build_book.find_notebooks(notebooks), params, layout, "smoke", force=True)
    assert [p.get("force") for p in seen] == [None, None]  # --force re-executes, reusing stored runs


def test_pages_fold_code_and_keep_stderr_out(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("cfg = page.Config.from_namespace(globals())\ncfg"),
                nbformat.v4.new_code_cell("print(x)", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="2\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="UserWarning: /home/me/.venv/x.py\n")]),
                nbformat.v4.new_code_cell("y", metadata={"tags": ["remove-input"]}),
                nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("load()", outputs=[
                    nbformat.v4.new_output("display_data", data={
                        "application/vnd.jupyter.widget-view+json": {"model_id": "a", "version_major": 2},
                        "text/plain": "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]"}),
                    nbformat.v4.new_output("display_data", data={
                        "application/vnd.jupyter.widget-view+json": {"model_id": "b", "version_major": 2},
                        "text/plain": "RhoExplorer(data={...})"})])]
    source, target, log = tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "a.stderr.txt"
    nbformat.write(nb, source)
    assert build_book.prepare_for_reading(source, target, log) == 2
    cells = nbformat.read(target, as_version=4).cells
    assert [c.metadata.get("tags") for c in cells[:5]] == [
        ["parameters", "hide-cell"], ["injected-parameters", "hide-cell"], ["hide-input"], ["hide-input"], ["remove-input"]]
    assert [o.get("name") for o in cells[3].outputs] == ["stdout"]  # the warning left the page ...
    assert "UserWarning" in log.read_text()                         # ... for the build log
    widgets = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"] for o in cells[6].outputs]
    assert widgets == ["b"] and "Loading weights" in log.read_text()  # the progress widget left, the explorer stays


def test_links_to_pages_outside_a_partial_build_become_plain_text():
    """A build of some notebooks only (build(notebooks_dir=...)): intro.md's links to the others are text."""
    text = "See {doc}`02_learning_dynamics`, {doc}`the dynamics <02_learning_dynamics>` and {doc}`the results <results>`."
    out, missing = build_book._drop_missing_links(text, {"intro", "results"})
    assert out == "See 02_learning_dynamics, the dynamics and {doc}`the results <results>`."
    assert missing == ["02_learning_dynamics", "02_learning_dynamics"]


def test_cdn_check_finds_remote_scripts_but_not_hyperlinks(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.jsdelivr.net/npm/x@1/dist/index.js"></script>'
                                     '<link rel="stylesheet" href="//example.org/style.css">'
                                     '<a href="https://arxiv.org/abs/2507.07981">paper</a>')
    (tmp_path / "b.html").write_text('<script src="_vendor/require.js"></script>'
                                     '<a href="https://arxiv.org/abs/2507.07981">paper</a>')
    assert vendor_js.cdn_urls(tmp_path) == {
        "a.html": ["//example.org/style.css", "https://cdn.jsdelivr.net/npm/x@1/dist/index.js"]}


# ---------------------------------------------------------------------------------------------------
# the smoke build of the real notebooks

NOTEBOOKS = build_book.find_notebooks(ROOT / "notebooks")


# the `site` fixture (the smoke build, once per session) is in conftest.py, shared with tests/test_score_panel.py


def test_site_has_every_notebook_in_order_and_the_generated_pages(site):
    stems = [p.stem for p in NOTEBOOKS]
    for page in stems + ["intro", "results", "rerun"]:
        assert (site / f"{page}.html").exists(), f"{page}.html missing from the site"
    sidebar = (site / "intro.html").read_text(encoding="utf-8")
    positions = [sidebar.find(f'href="{page}.html"') for page in stems + ["results", "rerun"]]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), "navigation out of book order"

    results = _words(html_lib.unescape(re.sub(r"<[^>]+>", " ", (site / "results.html").read_text("utf-8"))))
    summaries = sorted((ROOT / "_build" / "smoke" / "results" / "summaries").glob("*.json"))
    assert {p.stem for p in summaries} >= set(stems), "a notebook wrote no summary for the results overview"
    for summary in summaries:
        for row in json.loads(summary.read_text())["rows"]:
            assert _words(str(row["quantity"])) in results, \
                f"{summary.stem}: {row['quantity']!r} missing from the results overview"
    rerun = html_lib.unescape(re.sub(r"<[^>]+>", "", (site / "rerun.html").read_text("utf-8")))  # code is highlighted
    for stem in stems:
        assert f"papermill notebooks/{stem}.ipynb" in rerun and f"-f params/{stem}/smoke.yaml" in rerun


def _words(text: str) -> str:
    """Letters and digits only: compares text across Markdown rendering (smart quotes, escapes, math)."""
    return "".join(ch for ch in text if ch.isalnum())


def test_no_page_references_a_cdn(site):
    assert vendor_js.cdn_urls(site) == {}


# ---------------------------------------------------------------------------------------------------
# the site in headless Chromium (the `browser` fixture is in conftest.py)

@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Visit:
    """A page opened in a fresh browser context; records every problem while it loads and settles."""

    def __init__(self, browser, url: str):
        self.problems: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed request: {r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.goto(url, wait_until="load")
        self._settle()

    def _route(self, route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("http:", "https:")) and host != "127.0.0.1":
            self.problems.append(f"request to another host (blocked): {route.request.url}")
            return route.abort()
        return route.continue_()

    def _settle(self):
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        checks = {
            # the html-manager inserts a filled .widget-subarea before each embedded widget view it renders
            "a widget view was not rendered": """() => Array.from(document.querySelectorAll(
                'script[type="application/vnd.jupyter.widget-view+json"]')).every(s => s.previousElementSibling
                && s.previousElementSibling.classList.contains('widget-subarea')
                && s.previousElementSibling.childElementCount > 0)""",
            "math was not typeset by MathJax":
                "() => Array.from(document.querySelectorAll('.math')).every(m => m.querySelector('mjx-container'))",
        }
        for problem, condition in checks.items():
            try:
                self.page.wait_for_function(condition, timeout=WAIT_MS)
            except PlaywrightTimeout:
                self.problems.append(f"{problem} (waited {WAIT_MS / 1000:.0f} s)")
        self.page.evaluate("() => document.fonts.ready.then(() => true)")  # fonts (MathJax's, the theme's) loaded
        self.problems += [f"MathJax error: {t}" for t in self.page.locator("mjx-merror").all_inner_texts()]
        broken = self.page.evaluate(
            "() => Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)")
        self.problems += [f"broken image: {src}" for src in broken]

    def close(self):
        self.context.close()


def _pages(site: Path) -> list[str]:
    return sorted(p.name for p in site.glob("*.html"))


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_every_page_loads_offline_without_errors(site, server, browser, scheme):
    shots = site.parents[2] / "screenshots"
    shots.mkdir(exist_ok=True)
    problems, math_pages = {}, 0
    for name in _pages(site):
        url = f"{server}/{name}" if scheme == "http" else (site / name).as_uri()
        visit = Visit(browser, url)
        try:
            math_pages += visit.page.locator("mjx-container").count() > 0
            if scheme == "file":
                visit.page.screenshot(path=str(shots / f"{Path(name).stem}.png"), full_page=True)
        finally:
            visit.close()
        if visit.problems:
            problems[name] = visit.problems
    assert not problems, json.dumps(problems, indent=1)
    assert math_pages >= 1  # the introduction has display math


def test_rho_explorer_responds(site, browser):
    dynamics = sorted(site.glob("*_learning_dynamics.html"))
    if not dynamics:
        if list((ROOT / "notebooks").glob("*_learning_dynamics.ipynb")):
            pytest.fail("the dynamics notebook exists but its page is not in the site")
        pytest.skip("notebooks/02_learning_dynamics.ipynb not written yet")
    visit = Visit(browser, dynamics[0].as_uri())
    try:
        page = visit.page
        page.wait_for_selector("select.rho-pair", timeout=WAIT_MS)
        explorer = page.locator(".widget-subarea", has=page.locator("select.rho-pair")).first
        select = explorer.locator("select.rho-pair").first
        options = select.locator("option").evaluate_all("os => os.map(o => o.value)")
        assert len(options) >= 2, "the rho explorer offers fewer than two pairs"

        def heatmap():
            return explorer.locator(".rho-cell").evaluate_all("cs => cs.map(c => c.outerHTML)")
        before = heatmap()
        assert before, "no .rho-cell in the rho explorer"
        current = select.input_value()
        select.select_option(next(v for v in options if v != current))
        page.wait_for_function("([el, old]) => Array.from(el.querySelectorAll('.rho-cell'))"
                               ".map(c => c.outerHTML).join('') !== old",
                               arg=[explorer.element_handle(), "".join(before)], timeout=WAIT_MS)
        assert heatmap() != before

        assert explorer.locator(".rho-token-active").count() == 0
        explorer.locator(".rho-cell").first.hover()
        page.wait_for_selector(".rho-token-active", timeout=WAIT_MS)
        assert explorer.locator(".rho-token-active").count() >= 2, \
            "hovering a cell should highlight its two tokens"

        # keyboard: focus the heatmap, move right; the active cell and the readout follow
        heat = explorer.locator("svg.rho-svg").first
        heat.focus()
        heat.press("Home")
        first = explorer.locator(".rho-cell-active").first.get_attribute("data-l")
        readout = explorer.locator(".rho-readout").inner_text()
        heat.press("ArrowRight")
        assert explorer.locator(".rho-cell-active").count() == 1
        assert explorer.locator(".rho-cell-active").first.get_attribute("data-l") == str(int(first) + 1)
        assert explorer.locator(".rho-readout").inner_text() != readout
        # touch: a tap activates the tapped cell
        cell = explorer.locator(".rho-cell").nth(3)
        cell.dispatch_event("pointerdown", {"pointerType": "touch"})
        assert "rho-cell-active" in cell.get_attribute("class")

        assert explorer.locator(".rho-scale").count() == 1, "the heatmap has no colour bar"
        text = explorer.inner_text() + " ".join(select.locator("option").all_inner_texts()) \
            + " ".join(explorer.locator("select.rho-mode option").all_inner_texts())
        assert "_{" not in text, "raw LaTeX-style notation (_{...}) in the explorer's text"

        # a phone-sized column: the controls stay on screen
        page.set_viewport_size({"width": 420, "height": 800})
        page.wait_for_timeout(300)
        right = select.evaluate("el => el.getBoundingClientRect().right")
        assert right <= 420, f"the pair dropdown runs off a 420 px screen (right edge at {right:.0f} px)"
        assert not visit.problems, visit.problems
    finally:
        visit.close()


def test_book_text_helpers():
    from rmlib.book import plural, significant

    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs" and plural(0, "seed") == "0 seeds"
    assert plural(3, "combination") == "3 combinations" and plural(2, "analysis", "analyses") == "2 analyses"
    assert significant(0.0001) == "0.0001" and significant(2e-5) == "2e-05" and significant(0.98765) == "0.988"
    assert significant(-0.0) == "0" and significant(float("nan")) == "–" and significant(7) == "7"
    assert significant(1234.5) == "1,234" and significant(2.5e7) == "2.5e+07"


def test_book_tables_read_as_english():
    """The issue's cases: lr 1e-4 shown as 0.000, -0.000000, NaN cells, 0..N index columns, empty
    MultiIndex header rows."""
    import re

    import numpy as np
    import pandas as pd

    from rmlib.book import table

    sweep = pd.DataFrame({"lr": [1e-4, 1e-6], "test_accuracy": [0.98765, np.nan], "delta": [-1e-9, 0.5],
                          "pairs": [3, 12345], "fitted": [True, False]})
    shown = table(sweep).data
    assert list(shown.columns) == ["lr", "test accuracy", "delta", "pairs", "fitted"]
    assert shown["lr"].tolist() == ["0.0001", "1e-06"] and shown["test accuracy"].tolist() == ["0.988", "–"]
    assert shown["delta"].tolist() == ["-1e-09", "0.5"] and shown["pairs"].tolist() == ["3", "12,345"]
    assert shown["fitted"].tolist() == ["yes", "no"]
    html = table(sweep).to_html()
    assert "nan" not in html.lower() and not re.search(r"0\.000(?!\d)", html) and 'class="row_heading' not in html

    long = pd.DataFrame({"rm": ["EX", "EX", "IM", "IM"], "eval_set": ["train", "test"] * 2,
                         "mean": [1.0, 0.7, 1.0, 0.9], "std": [0.0, 0.1, 0.0, 0.05]})
    wide = table(long.pivot(index="rm", columns="eval_set", values=["mean", "std"])).data
    assert list(wide.columns) == ["rm", "mean test", "mean train", "std test", "std train"]
    assert wide.iloc[1].tolist() == ["IM", "0.9", "1", "0.05", "0"]
    grouped = table(long.groupby(["rm", "eval_set"])[["mean"]].mean(), rename={"eval_set": "evaluation set"}).data
    assert list(grouped.columns) == ["rm", "evaluation set", "mean"] and len(grouped) == 4
    errors = long.assign(step=[0.1, 0.2] * 2).pivot_table(index="rm", columns="step", values="mean")
    assert list(table(errors).data.columns) == ["rm", "step 0.1", "step 0.2"]  # the columns' name is kept


def test_machine_paths_are_written_as_the_parameter(tmp_path):
    from rmlib.book import without_machine_paths

    (tmp_path / "data").mkdir()
    note = f"{(tmp_path / 'data').resolve()}/ultrafeedback/train.jsonl line 63: chosen and rejected are identical"
    assert without_machine_paths(note, tmp_path / "data", "data_dir") == \
        "data_dir/ultrafeedback/train.jsonl line 63: chosen and rejected are identical"


_READER_CHECKS = r"""() => {
  const main = document.querySelector('main') || document.body;
  const code = 'pre, code, .highlight, script, style, mjx-container, .cell_input, textarea';
  const rawMath = [], leaks = [];
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, text = node.textContent;
    if (!node.parentElement.closest(code) && /\$\\|\\\(|\\\[/.test(text)) rawMath.push(text.trim().slice(0, 120));
    if (!node.parentElement.closest('.cell_input, script, style')
        && /\/(work|root|home|tmp|usr|opt)\/[\w.]|site-packages|\b\w*Warning:|warnings\.warn/.test(text))
      leaks.push(text.trim().slice(0, 160));
  }
  const uncaptioned = Array.from(main.querySelectorAll('.cell_output img')).filter(img => {
    const fig = img.closest('figure');
    return !fig || !fig.querySelector('figcaption .caption-number');
  }).map(img => img.getAttribute('src'));
  const folded = el => { const d = el.closest('details'); return d !== null && !d.open; };
  const openCode = Array.from(main.querySelectorAll('.cell_input')).filter(el => !folded(el))
    .map(el => el.textContent.trim().slice(0, 80));
  const cells = main.querySelectorAll('div.cell:not(.tag_remove-input):not(.tag_remove-cell)').length;
  const progress = Array.from(main.querySelectorAll('.widget-hprogress, .widget-progress, progress'))
    .map(el => (el.closest('.widget-subarea') || el).textContent.trim().slice(0, 80) || 'a progress bar');
  const toggles = main.querySelectorAll('div.cell details.hide').length;
  const body = main.querySelector('article') || main, article = body.getBoundingClientRect();
  const overflowing = Array.from(body.querySelectorAll('mjx-container:not([display="true"])'))
    .filter(m => m.getBoundingClientRect().right > article.right + 2)
    .map(m => m.textContent.slice(0, 60));
  return {rawMath, leaks, uncaptioned, openCode, progress, overflowing, cells, toggles};
}"""


def test_pages_read_as_a_book(site, browser):
    """What a reader meets on every notebook page: no raw LaTeX outside code, every figure numbered and
    captioned, no inline math running past the text column (cut off), no machine path, Python warning
    text or progress bar, and every code cell folded behind a toggle."""
    problems = {}
    for page in [p for p in _pages(site) if p[:2].isdigit()]:
        visit = Visit(browser, (site / page).as_uri())
        try:
            found = visit.page.evaluate(_READER_CHECKS)
        finally:
            visit.close()
        bad = {k: found[k] for k in ("rawMath", "leaks", "uncaptioned", "openCode", "progress", "overflowing") if found[k]}
        if found["toggles"] < found["cells"]:
            bad["unfolded"] = f"{found['cells'] - found['toggles']} of {found['cells']} code cells have no toggle"
        if bad:
            problems[page] = bad
    assert not problems, json.dumps(problems, indent=1)


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_search_shows_snippets(site, server, browser, scheme):
    """Sphinx's search page fetches every hit's page for a snippet; from file:// the browser refuses the
    fetch (CORS) unless the build embedded the pages (tools/offline_search.py)."""
    url = f"{server}/search.html?q=reward" if scheme == "http" else (site / "search.html").as_uri() + "?q=reward"
    visit = Visit(browser, url)
    try:
        visit.page.wait_for_selector("#search-results li", timeout=WAIT_MS)
        visit.page.wait_for_function("() => document.querySelectorAll('#search-results li p.context').length >= 3",
                                     timeout=WAIT_MS)
        snippets = visit.page.locator("#search-results li p.context").all_inner_texts()
        assert any("reward" in s.lower() for s in snippets), snippets[:3]
        assert not visit.problems, visit.problems
    finally:
        visit.close()
