"""`make book`: execute every numbered notebook with papermill, then build the offline jupyter-book site.

    .venv/bin/python tools/build_book.py --profile cpu      # or smoke (CI, minutes) / paper (GPU servers)

Steps, for a profile P (all output under ``_build/P/``, which git ignores):

1. Execute ``notebooks/NN_*.ipynb`` in order, each like
   ``papermill notebooks/NN.ipynb _build/P/executed/NN.ipynb -f params/NN/P.yaml -p results_dir _build/P/results``
   with the repository root as working directory. A notebook whose source, parameter file and rmlib
   source are unchanged since its last successful run (``_build/P/executed/NN.stamp.json``) is skipped.
   A failing cell stops the build with a message naming the notebook and the cell; notebooks already
   executed are kept.
2. Assemble the book's source in ``_build/P/src``: book/*.md, the executed notebooks, a generated
   results overview (from ``_build/P/results/summaries/*.json``, written by each notebook) and a generated
   table of contents, then ``jupyter-book build`` it with execution off and warnings as errors.
3. Vendor require.js, the ipywidgets html-manager, MathJax and anywidget into the site (tools/vendor_js.py)
   and check that no built page references a CDN, so the site works offline and from file://; embed the
   pages' text for the search page's snippets, which a browser cannot fetch from file:// (tools/offline_search.py).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import offline_search  # noqa: E402
import vendor_js  # noqa: E402

sys.path.insert(1, str(ROOT))  # this checkout's rmlib
from rmlib.safefiles import DamagedFile, read_json, set_aside, temp_path  # noqa: E402  (light: no torch)


def read_json_or_set_aside(path: Path, consequence: str):
    """The JSON in ``path``, or None when it is missing or damaged (then renamed ``*.corrupt``, with a
    warning naming it and saying ``consequence``)."""
    if not path.exists():
        return None
    try:
        return read_json(path)
    except DamagedFile as err:
        set_aside(path, str(err).removeprefix(f"{path}: "), consequence)
        return None

PROFILES = ("smoke", "cpu", "paper")
NOTEBOOK_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
BOOK_PAGES = ("intro.md", "rerun.md")  # committed pages, in book/


class BuildError(RuntimeError):
    """A step of the book build failed; the message says which and what to do."""


def rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def sha256_files(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(rel(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def rmlib_hash(root: Path = ROOT) -> str:
    """Hash of every source file of rmlib (code, widget front-ends), committed or not."""
    files = sorted(p for p in (root / "rmlib").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"})
    return sha256_files(files)


def find_notebooks(notebooks_dir: Path) -> list[Path]:
    return sorted(p for p in notebooks_dir.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def params_file(params_dir: Path, stem: str, profile: str) -> Path:
    path = params_dir / stem / f"{profile}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (params_dir / stem).glob("*.yaml"))
        raise BuildError(f"notebook {stem}: parameter file {rel(path)} is missing "
                         f"(profiles available for it: {available or 'none'})")
    return path


class Layout:
    """Where everything of one profile's build lives."""

    def __init__(self, build_dir: Path, profile: str):
        self.base = build_dir / profile
        self.executed = self.base / "executed"
        self.results = self.base / "results"
        self.src = self.base / "src"
        self.book = self.base / "book"
        self.html = self.book / "_build" / "html"
        self.vendor_cache = build_dir / "vendor"

    def stamp(self, stem: str) -> Path:
        return self.executed / f"{stem}.stamp.json"


def _local_socket_kernel_manager():
    from jupyter_client.manager import AsyncKernelManager

    class LocalSocketKernelManager(AsyncKernelManager):
        """The notebook's kernel talks over Unix sockets (zmq ``ipc``), not TCP on localhost: nothing is
        reachable from the network, and ipykernel does not warn "Kernel is running over TCP without
        encryption" into the build log."""

        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            super().__init__(**kwargs)

    return LocalSocketKernelManager


def execute_notebooks(notebooks: list[Path], params_dir: Path, layout: Layout, profile: str,
                      force: bool = False, retrain: bool = False) -> list[dict]:
    """Run each notebook with papermill (skipping unchanged ones); returns one record per notebook."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # papermill compares the keys with the parameters cell, which holds only `profile`: the page's Config is
    # what declares and checks them (rmlib.params), so its "Passed unknown parameter" warnings say nothing
    logging.getLogger("papermill").addFilter(lambda record: "Passed unknown parameter" not in record.getMessage())

    LocalSocketKernelManager = _local_socket_kernel_manager()
    # the kernels inherit this: no huggingface/transformers progress widgets ("Loading weights") in pages
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    layout.executed.mkdir(parents=True, exist_ok=True)
    records = []
    for i, notebook in enumerate(notebooks, 1):
        stem = notebook.stem
        pfile = params_file(params_dir, stem, profile)
        output = layout.executed / f"{stem}.ipynb"
        stamp_path = layout.stamp(stem)
        summary = layout.results / "summaries" / f"{stem}.json"
        key = {"profile": profile, "notebook": sha256_files([notebook]), "params": sha256_files([pfile]),
               "rmlib": rmlib_hash()}  # hashed now: the kernel imports rmlib as it is when the notebook starts
        previous = read_json_or_set_aside(stamp_path, "the notebook is executed again")
        header = f"[{i}/{len(notebooks)}] {stem} ({profile})"
        if (not (force or retrain) and previous and output.exists() and previous.get("key") == key
                and (not previous.get("summary") or summary.exists())):
            print(f"{header}: unchanged since its run of {previous['finished']} "
                  f"({previous['seconds']:.0f} s), skipped", flush=True)
            records.append({**previous, "stem": stem, "reused": True})
            continue

        parameters = yaml.safe_load(pfile.read_text(encoding="utf-8")) or {}
        if not isinstance(parameters, dict):
            raise BuildError(f"notebook {stem}: {rel(pfile)} must hold a mapping of parameter names to values")
        parameters["results_dir"] = rel(layout.results)
        if retrain:
            parameters["force"] = True
        print(f"{header}: running papermill {rel(notebook)} -> {rel(output)} -f {rel(pfile)} "
              f"-p results_dir {rel(layout.results)}", flush=True)
        stamp_path.unlink(missing_ok=True)
        start = time.monotonic()
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(ROOT),
                                       progress_bar=sys.stderr.isatty(), log_output=True,
                                       stdout_file=sys.stdout, stderr_file=sys.stderr,
                                       kernel_manager_class=LocalSocketKernelManager)
        except PapermillExecutionError as err:
            first_line = next((line for line in (err.source or "").splitlines() if line.strip()), "")
            raise BuildError(
                f"notebook {rel(notebook)} failed (profile {profile}) in cell In [{err.exec_count}] "
                f"(cell {err.cell_index + 1} of the executed copy, starting `{first_line[:80]}`): "
                f"{err.ename}: {err.evalue}\n"
                f"  the executed copy with the full traceback: {rel(output)}\n"
                f"  notebooks executed before it are kept; fix it and run the build again to continue"
            ) from None
        except Exception as err:  # kernel died, timeout, unreadable notebook, ...
            raise BuildError(f"notebook {rel(notebook)} failed (profile {profile}): "
                             f"{type(err).__name__}: {err}\n  partial output (if any): {rel(output)}") from err
        seconds = time.monotonic() - start
        record = {"key": key, "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "summary": summary.exists()}
        tmp = temp_path(stamp_path)  # then renamed: a kill never leaves half a stamp
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, stamp_path)
        print(f"{header}: done in {seconds:.1f} s", flush=True)
        records.append({**record, "stem": stem, "reused": False})
    return records


def notebook_title(path: Path) -> str:
    """The first markdown heading of a notebook (its page title in the book)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif value is None:
        text = "–"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ") or "–"


def results_page(records: list[dict], layout: Layout, profile: str) -> str:
    """The results overview, generated from the summaries the notebooks wrote during this profile's run."""
    lines = ["# Results overview", "",
             f"Key numbers of each notebook as executed for this build (profile `{profile}`), read from "
             f"`{rel(layout.results)}/summaries/*.json`, which every notebook writes at its end with "
             "`rmlib.results.write_summary`. The column *paper* is the paper's corresponding figure; "
             "each notebook's page discusses the comparison.", ""]
    if profile == "smoke":
        lines += ["```{warning}", "This is a `smoke` build: tiny random models and a handful of examples, "
                  "meant to test the machinery. Its numbers say nothing about the paper's claims.", "```", ""]
    lines += claims_table(records, layout)
    for record in records:
        stem = record["stem"]
        path = layout.results / "summaries" / f"{stem}.json"
        lines += [f"## {{doc}}`{stem}`", ""]
        summary = read_json_or_set_aside(path, "the overview leaves it out; rebuild with --force to redo it")
        if summary is None:
            lines += [f"*This notebook wrote no readable summary (`{rel(path)}` is missing or damaged).*", ""]
            continue
        if summary.get("profile") not in (None, profile):
            lines += [f"*Summary written by a `{summary['profile']}` run.*", ""]
        lines += ["| quantity | this run | paper | note |", "|---|---|---|---|"]
        lines += [f"| {_cell(row['quantity'])} | {_cell(row['value'])} | {_cell(row.get('paper'))} | "
                  f"{_cell(row.get('note'))} |" for row in summary["rows"]]
        lines.append("")
    lines += ["## Execution times", "",
              "| notebook | seconds | executed |", "|---|---|---|"]
    lines += [f"| {r['stem']} | {r['seconds']:.0f} | {r['finished']} |" for r in records]
    total = sum(r["seconds"] for r in records)
    lines += ["", f"Total execution time: {total / 60:.1f} min on the machine that built this page.", ""]
    return "\n".join(lines)


CLAIM_COLUMNS = ("claim", "paper", "this build", "verdict")
# notebook -> (page module, parameter holding the number of independent test units) for the power table
PROFILE_UNITS = {"01_gen_vs_verify": ("gen_vs_verify", "n_test", "test graphs"),
                 "03_persona_paraphrase": ("persona_paraphrase", "n_test", "test prompts"),
                 "04_real_world_shifts": ("real_world_shifts", "n_eval", "prompts per data set"),
                 "05_augmentation": ("augmentation", "n_eval", "prompts per data set")}
ALL_ROWS = 200  # n_eval null (all rows): the UltraFeedback and RewardBench test sets hold about 200 prompts each


def _n_text(claim: dict) -> str:
    pairs, clusters = claim.get("n_pairs"), claim.get("n_clusters")
    if pairs is None:
        return "–"
    return f"{pairs}" if clusters in (None, pairs) else f"{pairs} / {clusters}"


def _test_text(claim: dict, holm_p: float | None) -> str:
    """The exact test's p, with the Holm-adjusted p in brackets: "0.054 (0.16)" (the test is named per page)."""
    if claim.get("p_value") is None:
        return _cell(claim.get("test"))
    fmt = lambda p: "< 0.001" if p < 0.001 else f"{p:.2g}"  # noqa: E731
    return fmt(claim["p_value"]) + (f" ({fmt(holm_p)})" if holm_p is not None else "")


NOT_COMPARABLE = "not comparable"


def _verdict_text(claim: dict, stem: str, reasons: dict) -> str:
    """The verdict in a few words: "undecided at this size" without its bracket (the table has a column for the
    detectable difference); "not comparable: <reason>" as "not comparable [k]", its reason collected in
    ``reasons`` (``{(stem, reason): k}``) for one line under the table."""
    verdict = str(claim.get("verdict") or "")
    if verdict.startswith(NOT_COMPARABLE + ":"):
        k = reasons.setdefault((stem, verdict.split(":", 1)[1].strip()), len(reasons) + 1)
        return f"{NOT_COMPARABLE} [{k}]"
    return verdict.split(" (", 1)[0] if verdict.startswith("undecided") else verdict


def _rule_text(claim: dict) -> str | None:
    """The rule's name, the first word of its description: size, direction, tie, non-inferiority or check."""
    match = re.match(r"[a-z-]+", str(claim.get("rule") or ""))
    return match.group(0) if match else None


def _decided(claim: dict) -> bool:
    verdict = str(claim.get("verdict", ""))
    return claim.get("kind") != "check" and not verdict.startswith(("undecided", "not comparable", "check"))


def _profile_units(stem: str, profile: str) -> tuple[int, int] | None:
    """(units per seed, seeds) that ``profile`` gives notebook ``stem`` (its params file over its Config)."""
    if stem not in PROFILE_UNITS:
        return None
    module, key, _ = PROFILE_UNITS[stem]
    path = ROOT / "params" / stem / f"{profile}.yaml"
    try:  # the params file over the Config's field defaults, unchecked (checking would look up every model)
        import importlib
        from dataclasses import MISSING, fields

        config = importlib.import_module(f"rmlib.book.{module}").Config
        values = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                  for f in fields(config)}
        values.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (ImportError, OSError, AttributeError, TypeError):  # a page without a Config or params: no sizes
        return None
    units = values.get(key)
    return (ALL_ROWS if units is None else int(units)), len(values.get("seeds") or [0])


def claims_table(records: list[dict], layout: Layout) -> list[str]:
    """The book's claims table: one row per claim that a notebook tested (``claims`` in its summary, written by
    ``rmlib.results.write_summary``), with this build's estimate and interval, its size (pairs / clusters,
    seeds), the exact test (with Holm's adjustment over the build), the detectable difference and the verdict;
    the verdict rule above it, a family-wise statement and the power table (:func:`power_table`) below."""
    from rmlib.analysis import stats

    rows = []
    for record in records:
        path = layout.results / "summaries" / f"{record['stem']}.json"
        summary = read_json_or_set_aside(path, "the claims table leaves it out; rebuild with --force to redo it")
        if summary is not None:
            rows += [(record["stem"], claim) for claim in summary.get("claims") or []]
    if not rows:
        return []
    with_p = [i for i, (_, c) in enumerate(rows) if c.get("p_value") is not None and c.get("kind") != "check"
              and not str(c.get("verdict")).startswith("not comparable")]  # the family: this build's verdicts
    adjusted = dict(zip(with_p, stats.holm([rows[i][1]["p_value"] for i in with_p]))) if with_p else {}
    lines = ["## Claims tested in this build", "",
             "Each row is a claim a notebook tested: the paper's (notebooks 01-04), or, in notebook 05, the book's own "
             "question (the paper makes no claim about augmentation). *this build*: the estimate with its 95% "
             "interval; *n*: evaluation pairs / independent clusters (prompts; a prompt's versions and base models "
             "share one); *seeds*: training runs (with one, the interval covers evaluation noise only, not the "
             "training run); *rule*: which of the verdict rules below decides the row; *p (Holm)*: the exact test "
             "that a verdict also needs (a sign-flip test over clusters; for notebook 01's generation claim a sign "
             "test over graphs; each page names its own), with its Holm-adjusted p over this build's rows in "
             "brackets; *detectable*: the smallest difference the row's sample detects with 80% power.", "",
             f"**Verdict rule.** {stats.VERDICT_RULE}", "",
             "| nb | claim | verdict | rule | this build (95% CI) | paper | n | seeds | p (Holm) | detectable |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    reasons = {}  # a "not comparable" row's reason, said once under the table (it is the same for a setting's rows)
    for i, (stem, claim) in enumerate(rows):  # the verdict next to its claim: the table is wider than a phone
        verdict = _verdict_text(claim, stem, reasons)
        cells = [claim.get("claim"), verdict, _rule_text(claim), claim.get("this build"), claim.get("paper"),
                 _n_text(claim), claim.get("n_seeds"), _test_text(claim, adjusted.get(i)),
                 None if claim.get("mdd") is None else f"{claim['mdd']:.2f}"]
        lines.append(f"| {{doc}}`{stem[:2]} <{stem}>` | " + " | ".join(_cell(c) for c in cells) + " |")
    if reasons:
        lines += [""] + [f"- [{k}] *Not comparable* (notebook {stem[:2]}): {reason}." for (stem, reason), k in reasons.items()]
    claims_only = [c for _, c in rows
                   if c.get("kind") != "check" and not str(c.get("verdict")).startswith("not comparable")]
    n_verdicts = f"{len(claims_only)} verdict" + ("" if len(claims_only) == 1 else "s")
    decided = [i for i, (_, c) in enumerate(rows) if _decided(c)]
    holm_kept = [i for i in decided if i in adjusted and adjusted[i] <= stats.ALPHA]
    lines += ["", f"**Multiplicity.** Each verdict is made at the {stats.ALPHA:g} level (its interval errs with "
              f"probability at most {stats.ALPHA / 2:g} on each side; calibrated by simulation on clustered and "
              f"seed-varying data, `tests/test_stats.py`). This build states {n_verdicts} "
              f"(checks and not-comparable rows excluded), so even if every claim sat on the edge of its region about "
              f"{stats.ALPHA * len(claims_only):.1f} false verdicts would be expected. Across the build, {len(holm_kept)} of "
              f"the {len(decided)} decided verdicts also have a Holm-adjusted exact-test p <= {stats.ALPHA:g} "
              "(family-wise); a decided tie or non-inferiority rests on its interval alone and has no such p below "
              f"{stats.ALPHA:g}.", ""]
    return lines + power_table(rows) + [""]


def power_table(rows: list[tuple[str, dict]]) -> list[str]:
    """For each undecided claim with a stated paper effect: the clusters needed at 1 and at 3 seeds to decide it
    with 80% power if the paper's effect is true (``rmlib.analysis.stats.units_needed``: normal formula with this
    build's variance per cluster and seed), and the smallest profile that provides them."""
    needed = [(stem, c) for stem, c in rows if isinstance(c.get("needed"), dict)]
    if not needed:
        return []
    lines = ["**What would decide the undecided claims.** Clusters (test prompts or graphs) per seed needed for an "
             "80% chance of a verdict if the paper's effect is the truth (normal formula with this build's variance "
             "per cluster and seed, `rmlib.analysis.stats.units_needed`; from a one-seed build it cannot see "
             "seed-to-seed variation, so it is a lower bound), and the first profile that provides them.", "",
             "| notebook | claim | paper's effect | clusters at 1 seed | clusters at 3 seeds | provided by |",
             "|---|---|---|---|---|---|"]
    for stem, claim in needed:
        n = claim["needed"]
        one, three = n.get("clusters at 1 seed"), n.get("clusters at 3 seeds")
        provided = "none (the paper's own value is within the margin)" if one is None else "none of the profiles"
        for profile in ("cpu", "paper"):
            size = _profile_units(stem, profile)
            if size and one is not None:
                units, seeds = size
                need = one if seeds < 3 else three
                if units >= need:
                    provided = f"`{profile}` ({units} {PROFILE_UNITS[stem][2]}, {seeds} seed{'s' if seeds > 1 else ''})"
                    break
        effect = n.get("effect")
        lines.append(f"| {{doc}}`{stem}` | " + " | ".join(_cell(x) for x in (
            claim.get("claim"), None if effect is None else f"{effect:+.3f}", one, three, provided)) + " |")
    return lines + [""]


def papermill_commands(stems: list[str], layout: Layout, profile: str) -> str:
    """The exact command that executed each notebook of this build (for the re-run page)."""
    lines = [f"```bash"]
    for stem in stems:
        lines += [f".venv/bin/papermill notebooks/{stem}.ipynb {rel(layout.executed)}/{stem}.ipynb \\",
                  f"    -f params/{stem}/{profile}.yaml -p results_dir {rel(layout.results)} --cwd ."]
    lines += ["```", "", f"This book was built with the `{profile}` profile; for another profile replace "
              f"`{profile}` by `smoke`, `cpu` or `paper` in both the parameter file and the output folders."]
    return "\n".join(lines)


DOC_ROLE = re.compile(r"\{doc\}`(?:([^`<]*?)\s*<)?([^`>]+)>?`")


def _drop_missing_links(text: str, docs: set[str]) -> tuple[str, list[str]]:
    """Replace {doc} links to pages not in this build (a notebook not yet written) by plain text."""
    missing = []

    def repl(match):
        label, target = match.group(1), match.group(2).strip()
        if target in docs:
            return match.group(0)
        missing.append(target)
        return label or target
    return DOC_ROLE.sub(repl, text), missing


FOLDED_CELL_TAGS = {"parameters", "injected-parameters"}  # folded whole; other code cells show their output


TQDM_TEXT = re.compile(r"\d+%\|.*\| *[\d.]+\w*/[\d.?]+\w* \[")  # tqdm's "  50%|█████     | 1/2 [00:04<..."


def _is_progress_widget(output: dict) -> bool:
    """A tqdm.auto progress bar shown as an ipywidget (its text/plain fallback is tqdm's bar)."""
    data = output.get("data", {})
    return ("application/vnd.jupyter.widget-view+json" in data
            and bool(TQDM_TEXT.search("".join(data.get("text/plain", "")))))


def prepare_for_reading(executed: Path, target: Path, stderr_log: Path) -> int:
    """Copy an executed notebook into the book's source, shaped for a reader:

    * the parameter cells (papermill's ``parameters`` and ``injected-parameters``) and the cell that
      validates them are folded whole (tag ``hide-cell``), every other code cell shows its output with the
      code folded behind a toggle (``hide-input``);
    * stderr outputs (library warnings, progress bars) and progress-bar widgets (tqdm.auto's, e.g.
      transformers' "Loading weights") are left out of the page and written to ``stderr_log``, so nothing
      is lost. Returns how many outputs were moved."""
    nb = json.loads(executed.read_text(encoding="utf-8"))
    moved = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        source = "".join(cell.get("source", ""))
        fold = "hide-cell" if FOLDED_CELL_TAGS & set(tags) else "hide-input"
        if not {"hide-cell", "hide-input", "remove-cell", "remove-input"} & set(tags):
            tags.append(fold)
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                moved.append(f"--- cell {index}\n" + "".join(output.get("text", "")))
            elif _is_progress_widget(output):
                moved.append(f"--- cell {index} (progress widget)\n" + "".join(output["data"]["text/plain"]))
            else:
                kept.append(output)
        cell["outputs"] = kept
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    if moved:
        stderr_log.write_text("\n".join(moved), encoding="utf-8")
    return len(moved)


def assemble_source(records: list[dict], layout: Layout, profile: str, book_dir: Path) -> None:
    """Write the book's source folder: pages, executed notebooks, results overview, _toc.yml, _config.yml."""
    if layout.src.exists():
        shutil.rmtree(layout.src)
    layout.src.mkdir(parents=True)
    stems = [r["stem"] for r in records]
    docs = set(stems) | {"intro", "rerun", "results"}
    for page in BOOK_PAGES:
        text, missing = _drop_missing_links((book_dir / page).read_text(encoding="utf-8"), docs)
        for target in missing:
            print(f"  note: {page} links to {target}, which is not in this build; shown as plain text")
        if page == "rerun.md":
            text = text.replace("<!-- papermill-commands -->", papermill_commands(stems, layout, profile))
        (layout.src / page).write_text(text, encoding="utf-8")
    for stem in stems:
        moved = prepare_for_reading(layout.executed / f"{stem}.ipynb", layout.src / f"{stem}.ipynb",
                                    layout.executed / f"{stem}.stderr.txt")
        if moved:
            print(f"  {stem}: {moved} stderr output(s) (warnings, progress) kept out of the page, in "
                  f"{rel(layout.executed / f'{stem}.stderr.txt')}")
    (layout.src / "results.md").write_text(results_page(records, layout, profile), encoding="utf-8")
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": s} for s in stems] + [{"file": "results"}, {"file": "rerun"}]}
    (layout.src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    config_path = book_dir / "_config.yml"  # a custom book folder may carry its own; else the repo's top level
    config_path = config_path if config_path.exists() else ROOT / "_config.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if profile != "cpu":
        config["title"] = f"{config['title']} ({profile})"
    if profile == "smoke":
        config.setdefault("html", {})["announcement"] = (
            "Smoke build: tiny random models and a handful of examples, to test the machinery; "
            "its numbers mean nothing.")
    (layout.src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def build_site(layout: Layout) -> None:
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb) if jb.exists() else "jupyter-book", "build", str(layout.src), "--path-output",
               str(layout.book), "--builder", "html", "--all", "-W", "-n", "--keep-going", "-q"]
    print("building the site: " + " ".join(rel(Path(c)) if c.startswith("/") else c for c in command),
          flush=True)
    shutil.rmtree(layout.book, ignore_errors=True)  # no stale pages from an earlier build
    # vendored first, so that Sphinx finds the files and stamps their URLs with checksums (?v=...)
    vendor_js.install(layout.html, layout.vendor_cache)
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"jupyter-book build failed (warnings are errors):\n{output[-6000:]}")
    offline_search.install(layout.html)  # search snippets also from file://
    remote = vendor_js.cdn_urls(layout.html)
    if remote:
        listing = "\n".join(f"  {page}: {', '.join(urls)}" for page, urls in remote.items())
        raise BuildError(f"the built pages still reference remote scripts or CDNs (the site must work offline):\n"
                         f"{listing}")


def build(profile: str, force: bool = False, retrain: bool = False, notebooks_dir: Path = ROOT / "notebooks",
          params_dir: Path = ROOT / "params", build_dir: Path = ROOT / "_build",
          book_dir: Path = ROOT / "book") -> Path:
    """Execute and build; returns the site's index.html."""
    layout = Layout(build_dir, profile)
    layout.base.mkdir(parents=True, exist_ok=True)
    with open(layout.base / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another build of profile {profile} is running; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        start = time.monotonic()
        notebooks = find_notebooks(notebooks_dir)
        if not notebooks:
            raise BuildError(f"no notebooks named NN_name.ipynb in {rel(notebooks_dir)}")
        print(f"book ({profile}): {len(notebooks)} notebooks: {', '.join(p.stem for p in notebooks)}", flush=True)
        records = execute_notebooks(notebooks, params_dir, layout, profile, force, retrain)
        executed_at = time.monotonic()
        assemble_source(records, layout, profile, book_dir)
        build_site(layout)
        index = layout.html / "index.html"
        total_run = sum(r["seconds"] for r in records if not r["reused"])
        print(f"execution: {total_run:.0f} s this time "
              f"({sum(r['seconds'] for r in records):.0f} s for all notebooks' last runs); "
              f"site: {time.monotonic() - executed_at:.0f} s; total {time.monotonic() - start:.0f} s", flush=True)
        print(f"site: {index}  (open file://{index.resolve()}, works offline)", flush=True)
        return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=os.environ.get("PROFILE", "cpu"), choices=PROFILES)
    parser.add_argument("--force", action="store_true",
                        help="re-execute every notebook (runs stored by the same code are reused)")
    parser.add_argument("--retrain", action="store_true",
                        help="re-execute every notebook with force=True: every run is trained again")
    args = parser.parse_args(argv)
    try:
        build(args.profile, force=args.force, retrain=args.retrain)
    except (BuildError, vendor_js.VendorError) as err:
        print(f"\nBOOK BUILD FAILED: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
