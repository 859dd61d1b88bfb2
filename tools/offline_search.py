"""Search snippets for a book opened from disk (file://).

Sphinx's search page fetches each hit's page to show a snippet around the search words; browsers refuse
``fetch`` for file:// URLs. After the Sphinx build, this writes the main content of every page (text and
section ids, no scripts, images or widget state) into ``_vendor/search-pages.js``, copies
``tools/book_assets/search-offline.js`` (which answers those fetches from it when the page is a file) and
adds both to ``search.html`` before Sphinx's ``searchtools.js``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bs4 import BeautifulSoup

ASSETS = Path(__file__).resolve().parent / "book_assets"
MARKER = '<script src="_static/searchtools.js">'


def page_content(html: str) -> str:
    """The article of the page's ``[role=main]`` element, stripped to what a snippet needs (text and element ids)."""
    soup = BeautifulSoup(html, "html.parser")
    main = soup.select_one('[role="main"]')
    if main is None:
        return ""
    main = main.select_one("article") or main  # the text, without the theme's header and contents bar
    for junk in main.select("script, style, img, svg, .headerlink, .widget-subarea"):
        junk.decompose()
    for element in main.find_all(True):
        element.attrs = {k: v for k, v in element.attrs.items() if k in ("id", "role")}
    return f'<div role="main">{main.decode_contents()}</div>'


def install(site: Path) -> None:
    search_page = site / "search.html"
    text = search_page.read_text(encoding="utf-8")
    if "search-offline.js" in text:
        return
    if MARKER not in text:
        raise RuntimeError(f"{search_page} does not load {MARKER!r}: Sphinx's search page changed")
    pages = {p.name: page_content(p.read_text(encoding="utf-8")) for p in sorted(site.glob("*.html"))
             if p.name not in ("search.html", "genindex.html")}
    vendor = site / "_vendor"
    vendor.mkdir(exist_ok=True)
    (vendor / "search-pages.js").write_text("window.BOOK_PAGES = " + json.dumps(pages) + ";\n", encoding="utf-8")
    shutil.copyfile(ASSETS / "search-offline.js", vendor / "search-offline.js")
    scripts = '<script src="_vendor/search-pages.js"></script><script src="_vendor/search-offline.js"></script>'
    search_page.write_text(text.replace(MARKER, scripts + MARKER, 1), encoding="utf-8")
