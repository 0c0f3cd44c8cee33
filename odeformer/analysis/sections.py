"""The generated blocks of docs/results.md: each experiment's committed table
(``results/<name>.csv``) rendered by code, between ``<!-- results:<name>:begin -->`` and
``<!-- results:<name>:end -->``.

``python -m experiments.export --config configs/<name>.py --update_docs`` writes a block
(:func:`replace_block`); a test
renders every block from its table and fails while the docs disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd

from odeformer.analysis import lm_depth_vs_width, lm_invariance

RENDERERS: dict[str, Callable[[pd.DataFrame], str]] = {
    "lm_invariance": lm_invariance.render,
    "lm_depth_vs_width": lm_depth_vs_width.render_choice,
    "lm_depth_vs_width_test": lm_depth_vs_width.render,
}
_BLOCK = re.compile(r"<!-- results:(?P<name>[a-z0-9_]+):begin -->\n(?:(?P<body>.*?)\n)?"
                    r"<!-- results:(?P=name):end -->", re.DOTALL)


def render(name: str, table: pd.DataFrame) -> str:
    """The block of experiment ``name`` from its table, headed by where it comes from (the table,
    and how many commits its rows were made by; the hashes stay in the table).

    Raises:
      KeyError: naming the experiments that have a renderer.
    """
    if name not in RENDERERS:
        raise KeyError(f"no renderer for {name!r}; rendered experiments: {', '.join(sorted(RENDERERS))}")
    commits = table["commit"].nunique() if "commit" in table else 0
    made = (f"made by {commits} commit{'s' if commits > 1 else ''}, each row with its commit and command"
            if commits else "no commit recorded")
    source = (f"From `results/{name}.csv` ({len(table)} rows {made}; `python -m experiments.export` "
              "renders this block).")
    return source + "\n\n" + RENDERERS[name](table)


def blocks(text: str) -> dict[str, str]:
    """``name -> body`` of every generated block in ``text`` (an empty block's body is "").

    Raises:
      ValueError: an experiment's block appears twice.
    """
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        if match["name"] in found:
            raise ValueError(f"the block of {match['name']!r} appears twice")
        found[match["name"]] = match["body"] or ""
    return found


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the body of ``name``'s block replaced by ``body``.

    Raises:
      ValueError: ``text`` has no block for ``name`` (add its two marker lines first).
    """
    match = next((m for m in _BLOCK.finditer(text) if m["name"] == name), None)
    if match is None:
        raise ValueError(f"the page has no block for {name!r}: add the lines <!-- results:{name}:begin --> "
                         f"and <!-- results:{name}:end --> where it belongs")
    block = f"<!-- results:{name}:begin -->\n{body}\n<!-- results:{name}:end -->"
    return text[:match.start()] + block + text[match.end():]
