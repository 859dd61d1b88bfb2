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
    return f"{x:.{digits}g}"
