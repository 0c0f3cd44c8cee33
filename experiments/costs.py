"""Prints the cost table of each toy experiment of docs/results.md, the blocks between its
``<!-- costs:<experiment>:begin -->`` and ``<!-- costs:<experiment>:end -->`` markers.

    python -m experiments.costs [--experiments depth_vs_width,stability] [--write_docs]

Each arm's width is resolved from its budget as the runner resolves it; its FLOPs are counted by
``odeformer.experiment.costs``. ``--write_docs`` also replaces the blocks in docs/results.md.
"""

import importlib
import sys
from pathlib import Path

from absl import app, flags

from odeformer.experiment.cost_tables import SECTIONS, render, replace_blocks

_EXPERIMENTS = flags.DEFINE_list("experiments", list(SECTIONS), "Which configs/<name>.py to print.")
_WRITE_DOCS = flags.DEFINE_bool("write_docs", False, "Also replace the blocks in docs/results.md.")
_DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def main(argv):
    del argv
    unknown = [name for name in _EXPERIMENTS.value if name not in SECTIONS]
    if unknown:
        raise app.UsageError(f"--experiments names {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    rendered = {}
    for name in _EXPERIMENTS.value:
        config = importlib.import_module(f"configs.{name}").get_config()
        rendered[name] = render(config, SECTIONS[name])
        print(f"<!-- costs:{name}:begin -->\n{rendered[name]}\n<!-- costs:{name}:end -->\n")
    if _WRITE_DOCS.value:
        _DOCS.write_text(replace_blocks(_DOCS.read_text(), rendered))
        print(f"replaced {len(rendered)} blocks in {_DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
