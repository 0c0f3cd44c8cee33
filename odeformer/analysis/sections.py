"""The generated blocks of docs/results.md: each experiment's committed table
(``results/<name>.csv``) rendered by code, between ``<!-- results:<name>:begin -->`` and
``<!-- results:<name>:end -->``.

``python -m experiments.export --config configs/<name>.py --update_docs`` writes a block
(:func:`replace_block`); a test
renders every block from its table and fails while the docs disagree.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from odeformer import _docblocks
from odeformer.analysis import (
    adaptive,
    clustering,
    convergence,
    depth_vs_width,
    invariance,
    lm_depth_vs_width,
    lm_invariance,
    lm_param_efficiency,
    lm_stability,
    param_efficiency,
    stability,
)

RENDERERS: dict[str, Callable[[pd.DataFrame], str]] = {
    "clustering": clustering.render,
    "convergence": convergence.render,
    "depth_vs_width": depth_vs_width.render,
    "invariance": invariance.render,
    "param_efficiency": param_efficiency.render,
    "stability": stability.render,
    "adaptive": adaptive.render,
    "lm_invariance": lm_invariance.render,
    "lm_depth_vs_width": lm_depth_vs_width.render_choice,
    "lm_depth_vs_width_test": lm_depth_vs_width.render,
    "lm_param_efficiency": lm_param_efficiency.render_pilot,
    "lm_param_efficiency_test": lm_param_efficiency.render,
    "lm_stability": lm_stability.render,
}


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
    """``name -> body`` of every results block in ``text`` (``odeformer._docblocks.blocks``)."""
    return _docblocks.blocks(text, "results")


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the body of ``name``'s results block replaced by ``body``
    (``odeformer._docblocks.replace_block``; raises ValueError where the block is missing)."""
    return _docblocks.replace_block(text, "results", name, body)
