#!/usr/bin/env bash
# Issues 6 (item 4) and 24: the benchmarks on an accelerator in one call, each step's output in its own file.
#
#   bash benchmarks/device.sh [--quick] [--tests] [--only STEP[,STEP...]]   # from the repository root
#
# Steps, in this order, each under its own time limit and all under one budget:
#   device            always: nvidia-smi, jax.devices(), the versions of python, jax, jaxlib, flax,
#                     optax, diffrax, equinox, numpy, torch (-> device.txt)
#   tests             only with --tests (or named in --only): the fast tier, python -m pytest -q -x
#                     -m "not slow" -p no:cacheprovider (-n 4 where pytest-xdist is installed), on
#                     the machine's own jax: what widening the jax pins needs to pass (issue 24, item 4)
#   peer_gpu          the language-modelling workload at nanoGPT's GPU recipe: peer_nanogpt.py
#                     --recipe gpu --families gpt ode: the PyTorch peer and odeformer's gpt and ode
#                     (configs/lm_gpu.py) on the same data and seeds (-> peer_gpu.csv, peer_gpu.txt)
#   roofline, solver_overhead, peer_torchdiffeq, scaling, and attention where benchmarks/attention.py
#                     exists: the benchmarks as before (-> <name>.txt)
# device.txt also gets each step's exit code and wall time (124: cut at its limit). The files go
# to $OUT, or to device-results/ where $OUT is unset. --only runs the named steps alone (device
# always runs first). --quick makes everything tiny, to check on a CPU that every step runs (a few
# minutes on 2 cores): --quick to each benchmark (--repeats 3 to one without it) and to peer_gpu
# (the GPU recipe's settings at a tiny shape, 4 iterations, 20,000 characters per split;
# odeformer's configs still checked against the full recipe: one iteration at full size takes
# ~20 s on the 2-core development machine), tests on tests/test_layout.py alone. Its figures are
# not ones to record.
#
# Time: a device session has about 15 minutes of device time, starting the machine included, and
# one command may run at most 600 s. DEVICE_BUDGET_S (default 540) bounds the whole call: a step
# gets the smaller of its own limit and what is left of the budget, and is skipped with under 20 s
# left. Own limits: TESTS_LIMIT_S (300), PEER_LIMIT_S (300), BENCH_LIMIT_S (150, each benchmark).
# PEER_ITERS (default 2000) sets peer_gpu's iterations, the same for all three models: nanoGPT's
# recipe has 5000, but three 5000-iteration trainings (the ode at the gpt's FLOPs per token, plus
# two XLA compilations and the start of both frameworks) are not known to fit in 300 s on a GPU
# that has never run them, and the step rewrites its CSV after each run, so a cut loses the run
# under way. PEER_ITERS=5000 with PEER_LIMIT_S=500 and --only peer_gpu is nanoGPT's full recipe
# where a session can give it a command of its own. Asked for, the tests come before the other
# steps: with --tests, leave them budget enough, or give them a call of their own (--only tests).
#
# odeformer is imported from this checkout (PYTHONPATH), so the machine's own jax, flax, diffrax and
# torch are used. Python packages it lacks can travel as wheels in .whl/ (the device tool's README
# says how): they are installed to /tmp/site first. The GPU image seen so far had every dependency
# but ml-collections. $PYTHON (default python3) runs everything. Never run on a GPU yet: the CPU runs
# of `bash benchmarks/device.sh --quick` are what checked it.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0 tests=0 only=""
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --tests) tests=1 ;;
    --only) only=${2:?--only needs a comma-separated list of steps}; shift ;;
    --only=*) only=${1#--only=} ;;
    *) echo "usage: bash benchmarks/device.sh [--quick] [--tests] [--only STEP[,STEP...]]" >&2; exit 2 ;;
  esac
  shift
done
out=${OUT:-device-results}
mkdir -p "$out"
py=${PYTHON:-python3}
budget=${DEVICE_BUDGET_S:-540}
deadline=$((SECONDS + budget))
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$py" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("jax", "jaxlib", "flax", "optax", "diffrax", "equinox", "numpy", "torch"):
    try:
        module = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" (cuda {module.version.cuda}, available {module.cuda.is_available()})"
        print(name, getattr(module, "__version__", "?") + extra)
    except Exception as error:  # a missing package is a finding, not a stop
        print(name, "not importable:", error)
import jax
print("jax.devices():", jax.devices(), "default backend:", jax.default_backend())
EOF
} >"$out/device.txt" 2>&1
echo "budget: ${budget}s; quick=$quick; only=${only:-all}" >>"$out/device.txt"
cat "$out/device.txt"

wanted() {  # wanted STEP: whether this call runs STEP
  if [[ -n $only ]]; then [[ ",$only," == *",$1,"* ]]; elif [[ $1 == tests ]]; then ((tests)); else true; fi
}

run_step() {  # run_step NAME OWN_LIMIT COMMAND...: stdout and stderr to $out/NAME.txt
  local name=$1 own=$2 left=$((deadline - SECONDS)) start=$SECONDS code
  shift 2
  wanted "$name" || return 0
  if ((left < 20)); then
    echo "$name: skipped, ${left}s of the budget left" | tee -a "$out/device.txt"
    return 0
  fi
  local limit=$((own < left ? own : left))
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.txt" 2>&1
  code=$?
  echo "$name: exit $code after $((SECONDS - start))s (limit ${limit}s)" | tee -a "$out/device.txt"
  tail -n "${TAIL_LINES:-6}" "$out/$name.txt" | sed 's/^/    /'
}

# --- the fast test tier -----------------------------------------------------------------------
if "$py" -c "import pytest" 2>/dev/null; then
  parallel=()
  "$py" -c "import xdist" 2>/dev/null && ((!quick)) && parallel=(-n 4)
  selection=()
  ((quick)) && selection=(tests/test_layout.py)
  # Several test processes share the GPU: none may take 75% of its memory at its start.
  XLA_PYTHON_CLIENT_PREALLOCATE=false run_step tests "${TESTS_LIMIT_S:-300}" \
    "$py" -m pytest -q -x -m "not slow" -p no:cacheprovider "${parallel[@]}" "${selection[@]}"
elif wanted tests; then
  echo "tests: skipped, pytest is not installed (it can travel as a wheel in .whl/)" | tee -a "$out/device.txt"
fi

# --- language modelling at nanoGPT's GPU recipe: the torch peer, odeformer's gpt and ode ------------
if ((quick)); then peer_size=(--quick --max_chars 20000); else peer_size=(--iters "${PEER_ITERS:-2000}"); fi
run_step peer_gpu "${PEER_LIMIT_S:-300}" "$py" benchmarks/peer_nanogpt.py --recipe gpu --families gpt ode \
  "${peer_size[@]}" --out "$out/peer_gpu.csv"

# --- the benchmarks ------------------------------------------------------------------------------
for name in roofline solver_overhead peer_torchdiffeq scaling attention; do
  flags=()  # --quick: the script's own --quick, else 3 repeats
  if ((quick)) && grep -q -- '"--quick"' "benchmarks/$name.py" 2>/dev/null; then flags=(--quick)
  elif ((quick)) && grep -q -- '"--repeats"' "benchmarks/$name.py" 2>/dev/null; then flags=(--repeats 3); fi
  if [[ -f benchmarks/$name.py ]]; then
    run_step "$name" "${BENCH_LIMIT_S:-150}" "$py" "benchmarks/$name.py" "${flags[@]}"
  elif wanted "$name"; then
    echo "$name: skipped, benchmarks/$name.py does not exist" | tee -a "$out/device.txt"
  fi
done
