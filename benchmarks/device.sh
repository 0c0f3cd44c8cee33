#!/usr/bin/env bash
# Issue 6, item 4: the benchmarks on an accelerator in one call, each table to its own file.
#
#   bash benchmarks/device.sh [--quick]        # from the repository root
#
# Runs roofline.py, solver_overhead.py, peer_torchdiffeq.py and scaling.py on JAX's default
# backend (a GPU where there is one; torch follows JAX there, see peer_torchdiffeq.py), each
# under a time limit, and writes <name>.txt and device.txt (devices, versions, exit codes)
# to $OUT, or to device-results/ where $OUT is unset. --quick passes --quick to each script
# (tiny shapes: checks that everything runs, not figures to record).
#
# odeformer is imported from this checkout (PYTHONPATH), so the machine's own jax, flax,
# diffrax and torch are used. Python packages it lacks can travel as wheels in .whl/ (the
# device tool's README says how): they are installed to /tmp/site first. The GPU image seen
# so far had every dependency but ml-collections. Never run on a GPU yet: the CPU runs of
# `bash benchmarks/device.sh --quick` are what checked it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-results}
mkdir -p "$out"
limit=${BENCH_LIMIT_S:-150}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, diffrax, flax; print(jax.devices(), 'jax', jax.__version__, 'flax', flax.__version__,
              'diffrax', diffrax.__version__)"
} >"$out/device.txt" 2>&1
for name in roofline solver_overhead peer_torchdiffeq scaling; do
  timeout "$limit" python3 "benchmarks/$name.py" "$@" >"$out/$name.txt" 2>&1
  echo "$name.py: exit $?" | tee -a "$out/device.txt"
done
