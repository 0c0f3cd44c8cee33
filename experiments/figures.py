"""Figures drawn from a sweep's results table (reads results only; trains nothing).

    python -m experiments.figures --workdir runs/embeddings --out docs/figures/embeddings.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from odeformer import results  # noqa: E402

KINDS = ("table", "onehot", "hashed", "qr")


def embeddings_figure(table: pd.DataFrame) -> plt.Figure:
    """Synthetic task: test AUC, neighbour precision and embedding bytes vs cardinality."""
    synthetic = table[(table["task.name"] == "synthetic_categorical") & (table.status == "ok")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for kind in KINDS:
        rows = synthetic[synthetic["model.embedding"] == kind].sort_values("task.cardinality")
        x = rows["task.cardinality"]
        axes[0].plot(x, rows.test_auc, "o-", label=kind)
        precision = rows[["p@10.c0", "p@10.c1"]].mean(axis=1)
        axes[1].plot(x, precision, "o-", label=kind)
        axes[2].plot(x, rows.embedding_bytes / 2**20, "o-", label=kind)
    chance = synthetic[["p@10_chance.c0", "p@10_chance.c1"]].to_numpy().mean()
    axes[1].axhline(chance, color="gray", ls="--", label="chance")
    labels = ("test ROC AUC", "precision@10 of learned vectors\n(same hidden cluster)",
              "embedding parameters (MiB)")
    for ax, label in zip(axes, labels, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("raw cardinality per feature (values)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle("configs/embeddings.py, synthetic categorical task (2 features, 16 clusters)")
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/embeddings")
    parser.add_argument("--out", default="docs/figures/embeddings.png")
    args = parser.parse_args()
    fig = embeddings_figure(results.load(args.workdir))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
