"""Presentation helpers for the book's pages: one figure style, plurals, numbers that read well.

Nothing here computes results (it is not part of ``rmlib.results.code_version()``).
"""

from __future__ import annotations

import math

COLUMN_WIDTH_IN = 6.9  # the book theme's text column (~690 px at 100 dpi): figures are sized for it


def use_style() -> None:
    """The book's one figure style: seaborn's whitegrid theme, sizes for the text column, retina output
    (figures are rendered at 2x and shown at the column's width, so labels stay crisp)."""
    import matplotlib
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    matplotlib.rcParams.update({"figure.figsize": (COLUMN_WIDTH_IN, 3.2), "figure.dpi": 100,
                                "savefig.bbox": "tight", "axes.titlesize": 10, "legend.fontsize": 8})
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")
    except ImportError:  # not in a kernel
        pass


def plural(n: int, word: str, plural_form: str | None = None) -> str:
    """``plural(1, "epoch")`` -> "1 epoch", ``plural(2, "epoch")`` -> "2 epochs"."""
    return f"{n} {word if n == 1 else plural_form or word + 's'}"


def significant(x, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, never rounded to a misleading 0.000:
    0.0001 -> "1e-04", 2e-5 -> "2e-05", 0.98765 -> "0.988", 1234.5 -> "1.23e+03", -0.0 -> "0"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    if 1e3 <= abs(x) < 1e6:  # 1,234 reads better than 1.23e+03
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _header(label) -> str:
    """A column label as English: tuples of a MultiIndex joined, underscores as spaces, "" dropped."""
    parts = label if isinstance(label, tuple) else (label,)
    return " ".join(str(p).replace("_", " ") for p in parts if str(p) != "").strip()


def _cell(value, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        if math.isnan(number):
            return "–"
        if float(number).is_integer() and abs(number) < 1e6 and not isinstance(value, float):
            return f"{int(number):,}" if abs(number) >= 1e4 else str(int(number))
        return significant(number, digits)
    return str(value)


def table(frame, digits: int = 3, index: bool = True, rename: dict | None = None):
    """A pandas table as the book shows it: the index (if ``index``) turned into ordinary leading columns
    and no 0..N row numbers, MultiIndex headers flattened into one English header row, numbers with
    ``digits`` significant digits (1e-04, never 0.000), missing values as "–", booleans as yes/no; the
    columns' own name, if any, goes into each header ("logit step 0.1").
    ``rename`` maps raw column names to headers. Returns a :class:`Table` (shown as HTML by the notebook)."""
    import pandas as pd

    frame = frame.to_frame() if isinstance(frame, pd.Series) else frame.copy()
    if not isinstance(frame.columns, pd.MultiIndex) and frame.columns.name:  # e.g. a pivot's "logit step"
        frame.columns = [f"{frame.columns.name} {c}" for c in frame.columns]
    has_index = index and not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None)
    if has_index:
        names = [n if n is not None else "" for n in frame.index.names]
        frame.index = frame.index.set_names([n or f"level_{i}" for i, n in enumerate(names)])
        frame = frame.reset_index()
        if isinstance(frame.columns, pd.MultiIndex):  # reset_index pads the new columns' labels with ""
            frame.columns = pd.MultiIndex.from_tuples(
                [(c[0] if not str(c[0]).startswith("level_") else "",) + tuple(c[1:]) for c in frame.columns])
        else:
            frame = frame.rename(columns={f"level_{i}": "" for i in range(len(names))})
    rename = rename or {}
    frame.columns = [rename.get(c, _header(c)) for c in frame.columns]
    numeric = list(dict.fromkeys(c for c, t in zip(frame.columns, frame.dtypes)
                                 if pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)))
    text = frame.map(lambda v: _cell(v, digits)) if hasattr(frame, "map") else frame.applymap(lambda v: _cell(v, digits))
    style = (text.style.hide(axis="index").set_table_attributes('class="dataframe rm-table"')
             .set_table_styles([{"selector": "th, td", "props": "padding: 0.2em 0.8em; vertical-align: top;"},
                                {"selector": "th", "props": "text-align: left;"}]))
    if frame.columns.is_unique:
        if numeric:  # numbers right-aligned, so that digits line up and neighbouring columns never run together
            style = style.set_properties(subset=numeric, **{"text-align": "right"})
        # short cells ("EX-RM", "-1.55") never break at their hyphen or minus sign; long ones keep a width
        style = style.map(lambda v: "white-space: nowrap;" if len(v) <= 16 else "min-width: 14em;")
    return Table(style)


class Table:
    """What :func:`table` returns: the formatted cells (``.data``, a DataFrame of strings) and the HTML,
    inside a box that scrolls sideways when the table is wider than the text column (never cut off)."""

    def __init__(self, styler):
        self.styler, self.data = styler, styler.data

    def to_html(self) -> str:
        return f'<div class="rm-table-box" style="overflow-x: auto; max-width: 100%;">{self.styler.to_html()}</div>'

    def _repr_html_(self) -> str:
        return self.to_html()


def without_machine_paths(text: str, folder, label: str) -> str:
    """``text`` with the absolute ``folder`` (as given, and resolved) written as ``label``: the book shows
    "data_dir/ultrafeedback/train.jsonl line 63", not the reader-irrelevant path of the build machine."""
    from pathlib import Path

    for form in sorted({str(Path(folder).resolve()), str(Path(folder).absolute()), str(folder)}, key=len, reverse=True):
        text = text.replace(form.rstrip("/"), label)
    return text
