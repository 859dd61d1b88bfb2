"""Vendor the scripts the book's pages load, so the site works offline and from file://.

The built HTML must not reference any CDN. Sources (fetched once into a cache outside git,
``_build/vendor/``, with ``npm pack``, or taken from installed Python packages):

- require.js (npm ``requirejs``): the AMD loader the ipywidgets html-manager needs;
- ``@jupyter-widgets/html-manager`` ``dist/embed-amd.js`` (+ its font files): renders the widget state
  that papermill stores in the executed notebooks;
- MathJax 3 (npm ``mathjax``, ``es5/``): math rendering (Sphinx's default points at a CDN);
- anywidget's front-end (AMD bundle shipped in the installed ``anywidget`` Python package, same version
  as the kernel side), which then imports each widget's own ESM from the embedded widget state;
- ``widgets-config.js`` (ours, tools/book_assets/): tells require.js where the vendored anywidget lives.

Everything is copied into ``<site>/_vendor/`` *after* the Sphinx build: jupyter-book 1.x injects every
``.js`` found under the book's ``_static/`` into every page, so vendored files must not live there.
Pages reference them through ``_static/../_vendor/...`` paths (see book/_config.yml).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import anywidget

ASSETS = Path(__file__).resolve().parent / "book_assets"

# npm package -> (pinned version, {path inside the package: destination under _vendor/})
NPM_PACKAGES = {
    "requirejs": ("2.3.8", {"require.js": "require.js"}),
    "@jupyter-widgets/html-manager": ("1.0.15", {"dist/": "html-manager/"}),
    "mathjax": ("3.2.2", {"es5/": "mathjax/"}),
}
# files of html-manager's dist/ we do not need (other bundles, source maps)
SKIP = re.compile(r"(^|/)(embed\.js.*|libembed-amd\.js|.*\.map)$")
SOURCE_MAP = re.compile(rb"\n//# sourceMappingURL=[^\n]*")
# URLs of public CDNs: none may appear in a built page
CDN_PATTERN = re.compile(r"https?://(cdn\.jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com|cdn\.plot\.ly|"
                         r"ajax\.googleapis\.com|fonts\.googleapis\.com|esm\.sh|code\.jquery\.com|"
                         r"cdn\.bokeh\.org|polyfill\.io)[^\s\"'<>]*", re.IGNORECASE)


class VendorError(RuntimeError):
    pass


def _tarball_name(package: str, version: str) -> str:
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch(cache: Path) -> dict[str, Path]:
    """Make sure every npm package is unpacked under ``cache``; returns package -> unpacked folder.

    Uses ``npm pack`` (the registry's ordinary client, which checks the tarball's integrity) only for
    tarballs not already in the cache, so a second build needs no network."""
    tarballs = cache / "tarballs"
    tarballs.mkdir(parents=True, exist_ok=True)
    unpacked = {}
    for package, (version, _) in NPM_PACKAGES.items():
        tgz = tarballs / _tarball_name(package, version)
        if not tgz.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise VendorError(f"npm is needed once to fetch {package}@{version} into {tarballs} "
                                  "(install Node.js/npm, or copy the tarball there)")
            print(f"  vendoring {package}@{version} (npm pack)", flush=True)
            proc = subprocess.run([npm, "pack", f"{package}@{version}", "--silent", "--pack-destination",
                                   str(tarballs)], capture_output=True, text=True)
            if proc.returncode != 0 or not tgz.exists():
                raise VendorError(f"npm pack {package}@{version} failed:\n{proc.stderr.strip()}")
        folder = cache / "npm" / f"{package.lstrip('@').replace('/', '-')}-{version}"
        if not (folder / "package.json").exists():
            if folder.exists():
                shutil.rmtree(folder)
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(tgz) as tar:
                tar.extractall(tmp, filter="data")
            (tmp / "package").rename(folder)
            shutil.rmtree(tmp)
        unpacked[package] = folder
    return unpacked


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if src.suffix == ".js":  # the maps are not shipped; a dangling reference makes devtools request them
        data = SOURCE_MAP.sub(b"\n", data)
    dst.write_bytes(data)


def install(site: Path, cache: Path) -> Path:
    """Copy every vendored script into ``<site>/_vendor/``; returns that folder."""
    unpacked = fetch(cache)
    target = site / "_vendor"
    if target.exists():
        shutil.rmtree(target)
    for package, (version, mapping) in NPM_PACKAGES.items():
        for inner, dest in mapping.items():
            src = unpacked[package] / inner
            if inner.endswith("/"):
                for path in sorted(src.rglob("*")):
                    rel = path.relative_to(src).as_posix()
                    if path.is_file() and not SKIP.search(rel):
                        _copy_file(path, target / dest / rel)
            else:
                _copy_file(src, target / dest)
    anywidget_js = Path(anywidget.__file__).parent / "nbextension" / "index.js"
    if not anywidget_js.exists():
        raise VendorError(f"anywidget's front-end bundle is missing: {anywidget_js}")
    _copy_file(anywidget_js, target / "anywidget" / "index.js")
    _copy_file(ASSETS / "widgets-config.js", target / "widgets-config.js")
    for required in ("require.js", "html-manager/embed-amd.js", "mathjax/tex-mml-chtml.js",
                     "anywidget/index.js", "widgets-config.js"):
        if not (target / required).is_file():
            raise VendorError(f"vendoring incomplete: {target / required} is missing")
    return target


# a resource the browser loads by itself (not a hyperlink the reader may follow) from another host
REMOTE_RESOURCE = re.compile(r"<(?:script|img|iframe|source|embed|audio|video)\b[^>]*?\bsrc=[\"']?"
                             r"((?:https?:)?//[^\"'\s>]+)"
                             r"|<link\b[^>]*?\bhref=[\"']?((?:https?:)?//[^\"'\s>]+)", re.IGNORECASE)


def cdn_urls(html_dir: Path) -> dict[str, list[str]]:
    """CDN URLs and remote resources found in the built HTML pages: {page: [urls]} (empty when offline-clean).

    Hyperlinks (``<a href>``) to other sites are fine; anything the browser would fetch by itself is not."""
    found = {}
    for page in sorted(html_dir.rglob("*.html")):
        if "_vendor" in page.relative_to(html_dir).parts:
            continue
        text = page.read_text(encoding="utf-8")
        urls = {m.group(0) for m in CDN_PATTERN.finditer(text)}
        urls |= {m.group(1) or m.group(2) for m in REMOTE_RESOURCE.finditer(text)}
        urls = sorted(urls)
        if urls:
            found[page.relative_to(html_dir).as_posix()] = urls
    return found
