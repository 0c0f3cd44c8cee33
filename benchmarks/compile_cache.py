"""python benchmarks/compile_cache.py [--config configs/quick.py] [--pairs 3] [--workers 2]

What JAX's persistent compilation cache saves a sweep: the wall time of
``python -m experiments.run --config CONFIG --quiet --workers N`` into a fresh workdir, cold
(an empty cache folder) and warm (a folder an untimed first run filled), alternated cold,
warm, cold, warm, ... so that drift of the machine's speed falls on both. Each run is a
separate process, as a user's rerun, new seed or second workdir is. It prints each time, the
medians and their ratio, and checks that every run's results table has the same losses and
accuracies (bit for bit) as the first.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = ("run_id", "train_loss", "test_loss", "test_accuracy", "val_loss", "nfe_forward")


def sweep(config: str, workers: int, cache: Path, workdir: Path) -> tuple[float, pd.DataFrame]:
    command = [sys.executable, "-m", "experiments.run", f"--config={config}", "--quiet",
               f"--workers={workers}", f"--workdir={workdir}", f"--compilation_cache_dir={cache}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    table = pd.read_csv(workdir / "results.csv")
    return seconds, table[[c for c in RESULTS if c in table]].sort_values("run_id", ignore_index=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--config", default="configs/quick.py")
    parser.add_argument("--pairs", type=int, default=3, help="cold/warm pairs, alternated")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    times = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        warm_cache = root / "warm-cache"
        _, reference = sweep(args.config, args.workers, warm_cache, root / "fill")  # untimed
        for i in range(args.pairs):
            for kind in ("cold", "warm"):
                cache = root / f"cold-cache-{i}" if kind == "cold" else warm_cache
                seconds, table = sweep(args.config, args.workers, cache, root / f"{kind}-{i}")
                pd.testing.assert_frame_equal(table, reference)
                times[kind].append(seconds)
                print(f"{kind} {i}: {seconds:.1f} s", flush=True)
    cold, warm = (statistics.median(times[k]) for k in ("cold", "warm"))
    listed = {k: ", ".join(f"{t:.1f}" for t in times[k]) for k in times}
    print(f"\n{args.config}, --workers {args.workers}: cold {listed['cold']} s; warm {listed['warm']} s; "
          f"median warm / cold = {warm / cold:.2f}; results bit for bit equal in every run")


if __name__ == "__main__":
    main()
