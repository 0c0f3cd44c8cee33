"""python benchmarks/peer_torchdiffeq.py [--steps 8] [--repeats 20] [--block 4] [--quick]

odeformer (JAX + Diffrax) against PyTorch + torchdiffeq on identical work.

torch and torchdiffeq come from the ``bench`` extra (``pip install -e ".[bench]"``). Times one
training step (loss ``mean(x(1)**2)`` on [0, 1] and its gradient in all parameters) of
``TransformerBlockField(64, 4)``, float32, x (32, 64, 64): odeformer ``adjoint="checkpoint"`` vs
backprop through ``torchdiffeq.odeint`` (eager torch field, JAX weights copied in; field, NFE,
losses, gradients checked first). The odeformer step is jitted with
``compiler_options=odeformer.compiler_options()``, as the runner's steps are. torchdiffeq's
fixed-grid ``rk4`` is Kutta's 3/8 rule: ``rk4`` pits classic RK4 against it at equal NFE,
``rk4 3/8`` runs the 3/8 rule on both sides. ``dopri5``: rtol = atol = 1e-5, each library's own
first step; error against float64 dopri8 at 1e-10.

Timing: turns of ``--block`` runs of each side (one untimed run first), so neither side runs
while the other's idle worker threads still spin; the call-by-call alternation is printed
beside it. On a GPU (JAX's default backend ``gpu`` and a CUDA build of torch) both sides run
there, in float32 with full-precision matmuls on both (JAX's default would use TF32).
"""

import argparse
import functools
import os
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
import torchdiffeq
from flax import nnx
from harness import interleaved_ms, start_benchmark

import odeformer
import odeformer.experiment.microbatch

RTOL = 1e-4
TOL = 1e-5
# torch runs where JAX does: on the GPU when JAX's default backend is one and torch has CUDA.
DEVICE = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
if jax.default_backend() == "gpu":  # float32 matmuls as torch's default computes them, not TF32
    jax.config.update("jax_default_matmul_precision", "highest")


class RK38(diffrax.AbstractERK):
    """Kutta's 3/8-rule RK4, as torchdiffeq's fixed-grid ``rk4`` (``rk4_alt_step_func``)."""

    tableau = diffrax.ButcherTableau(
        c=np.array([1 / 3, 2 / 3, 1.0]), b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]), b_error=np.zeros(4),
        a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])))
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


# name -> (odeformer solver, torchdiffeq method, same arithmetic both sides?, what each side runs)
CASES = {"euler": ("euler", "euler", True, "euler / euler"),
         "rk4": ("rk4", "rk4", False, "classic / 3/8 rule"),
         "rk4 3/8": (RK38(), "rk4", True, "3/8 rule / 3/8 rule"),
         "dopri5": ("dopri5", "dopri5", False, f"dopri5 / dopri5, tol {TOL:g}")}


def flat_params(state):
    """{'attention/attention/qkv/kernel': array, ...}: each tied weight of a JAX state."""
    return {"/".join(str(k.key) for k in path[:-2]): np.asarray(leaf[0])
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


class TorchBlockField(torch.nn.Module):
    """``F(t, x) = MHA(LN1 x) + MLP(LN2 x)`` as in odeformer/_fields.py; counts its calls."""

    def __init__(self, params, heads):
        super().__init__()
        self.p = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.tensor(v, device=DEVICE))
                                         for k, v in params.items()})
        self.heads, self.nfe = heads, 0

    def forward(self, t, x):
        self.nfe += 1
        p, (b, n, d) = self.p, x.shape
        h = F.layer_norm(x, (d,), p["attention/norm/scale"], p["attention/norm/bias"], eps=1e-6)
        qkv = h @ p["attention/attention/qkv/kernel"] + p["attention/attention/qkv/bias"]
        q, k, v = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        attn = mixed @ p["attention/attention/out/kernel"] + p["attention/attention/out/bias"]
        h = F.layer_norm(x, (d,), p["mlp_norm/scale"], p["mlp_norm/bias"], eps=1e-6)
        up = F.gelu(h @ p["mlp/up/kernel"] + p["mlp/up/bias"], approximate="tanh")
        return attn + up @ p["mlp/down/kernel"] + p["mlp/down/bias"]


def jax_step(f, solver, steps, microbatch=0):
    """Jitted ``(state, y0) -> ((loss, (nfe, y1)), grads)``; ``microbatch > 0``: the gradient
    in chunks of that many examples (``odeformer.experiment.microbatch.accumulate``, as
    ``train.microbatch``)."""
    tol = {"steps": steps} if steps else {"rtol": TOL, "atol": TOL}

    def loss(state, y0):
        sol = odeformer.solve(f, y0, args=state, solver=solver, adjoint="checkpoint", **tol)
        return jnp.mean(sol.y1**2), (sol.stats["nfe"], sol.y1)

    whole = jax.value_and_grad(loss, has_aux=True)
    if not microbatch:
        return jax.jit(whole, compiler_options=odeformer.compiler_options())

    def chunked(state, y0):
        def chunk_gradient(state, y, i):
            (value, (nfe, y1)), grads = whole(state, y)
            return grads, (value, nfe, y1)

        chunks = y0.reshape(-1, microbatch, *y0.shape[1:])
        grads, (values, nfe, y1) = odeformer.experiment.microbatch.accumulate(chunk_gradient, state, chunks)
        return (values.mean(), (nfe.max(), y1.reshape(y0.shape))), grads

    return jax.jit(chunked, compiler_options=odeformer.compiler_options())


def torch_step(field, method, steps, y0):
    """``() -> (loss, nfe, y1, grads)``: one odeint forward and backward, no adjoint."""
    options = {"options": {"step_size": 1.0 / steps}} if steps else {"rtol": TOL, "atol": TOL}

    def step():
        field.nfe = 0
        span = torch.tensor([0.0, 1.0], device=DEVICE)
        y1 = torchdiffeq.odeint(field, y0, span, method=method, **options)[-1]
        loss = torch.mean(y1**2)
        grads = torch.autograd.grad(loss, list(field.p.values()))
        grads = dict(zip(field.p.keys(), grads, strict=True))
        return loss.item(), field.nfe, y1.detach().cpu().numpy(), grads

    return step


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def check_same_work(name, fixed, exact, jax_result, torch_result):
    """NFE equal for fixed steps; loss and gradients equal where the arithmetic is identical."""
    (loss, (nfe, _)), grads = jax_result
    t_loss, t_nfe, _, t_grads = torch_result
    assert not fixed or int(nfe) == t_nfe, f"{name}: odeformer made {int(nfe)} evaluations, torch {t_nfe}"
    if exact:
        assert rel_err(loss, t_loss) <= RTOL, f"{name}: loss {float(loss)} (odeformer) != {t_loss} (torch)"
        for key, g in flat_params(grads).items():
            err = rel_err(t_grads[key].cpu().numpy(), g)
            assert err <= RTOL, f"{name}: gradient of {key} differs by {err:.1e} of its max (> {RTOL})"
    return rel_err(loss, t_loss)


def time_interleaved(jax_fn, torch_fn, repeats, block):
    """``(odeformer ms, torch ms, ratio, ratio call by call)``. ``ratio``: blocks of each
    side in turn (one untimed call, then ``block`` timed ones; ``repeats // block`` turns
    each), the median over turns of the ratio of the two blocks' medians; the ms are each
    side's median over its blocks. ``ratio call by call``: sides alternating every call
    (A, B, A, B, ...; ``repeats`` pairs), the median per-pair ratio. Call by call, each
    runtime's worker threads are still spinning from its last call while the other's run,
    so both sides are slowed (benchmarks/README.md)."""
    turns = max(1, repeats // block)
    ms = interleaved_ms({"jax": jax_fn, "torch": torch_fn}, turns, block=block)
    per_turn = {name: np.median(np.reshape(ms[name], (turns, block)), axis=1) for name in ms}
    ratio = float(np.median(per_turn["jax"] / per_turn["torch"]))
    pairs = interleaved_ms({"jax": jax_fn, "torch": torch_fn}, repeats)
    by_call = statistics.median(a / b for a, b in zip(pairs["jax"], pairs["torch"], strict=True))
    return statistics.median(ms["jax"]), statistics.median(ms["torch"]), ratio, by_call


def print_one_evaluation(f, state, y0, t_field, t_y0, repeats, block):
    """One field evaluation's forward + backward (loss ``mean(F(x)**2)``, gradient in the
    parameters), each framework on its own: what every solver step of either side is made of."""
    jax_fn = functools.partial(jax.jit(jax.grad(lambda s, y: jnp.mean(f(0.0, y, s) ** 2))), state, y0)
    params = list(t_field.p.values())

    def torch_fn():
        return torch.autograd.grad(torch.mean(t_field(0.0, t_y0) ** 2), params)

    jax.block_until_ready(jax_fn())
    torch_fn()
    ms_jax, ms_torch, ratio, by_call = time_interleaved(jax_fn, torch_fn, 3 * repeats, block)
    print(f"one field evaluation, forward + backward: odeformer {ms_jax:.2f} ms, torch {ms_torch:.2f} ms, "
          f"ratio {ratio:.2f} (call by call {by_call:.2f})")


def reference(params, heads, y0):
    """x(1) by torchdiffeq dopri8 in float64 at rtol = atol = 1e-10."""
    with torch.no_grad():
        ys = torchdiffeq.odeint(TorchBlockField(params, heads).double(), y0.double(),
                                torch.tensor([0.0, 1.0], device=DEVICE), rtol=1e-10, atol=1e-10,
                                method="dopri8")
    return ys[-1].cpu().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--steps", type=int, default=8, help="fixed steps over [0, 1]")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each side per case")
    parser.add_argument("--block", type=int, default=4,
                        help="timed runs of one side in a row before the other's turn (1: every call)")
    parser.add_argument("--microbatch", type=int, default=0,
                        help="odeformer's gradient in chunks of this many examples (0: the whole batch)")
    parser.add_argument("--data-parallel", action="store_true",
                        help="odeformer's batch split over every JAX device (on a CPU: run with "
                             "XLA_FLAGS=--xla_force_host_platform_device_count=<cores>)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 3 repeats")
    args = parser.parse_args()
    batch, tokens, width, heads, repeats = (2, 8, 64, 4, 3) if args.quick else (32, 64, 64, 4, args.repeats)
    if args.microbatch < 0 or (args.microbatch and batch % args.microbatch):
        parser.error(f"--microbatch={args.microbatch} must be 0 or divide the batch ({batch})")
    if args.data_parallel and (args.microbatch or jax.device_count() < 2 or batch % jax.device_count()):
        parser.error(f"--data-parallel needs 2 or more JAX devices that divide the batch ({batch}; "
                     f"{jax.device_count()} devices: on a CPU set XLA_FLAGS="
                     "--xla_force_host_platform_device_count=<cores>) and no --microbatch")
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)

    start_benchmark(torch=torch.__version__, torchdiffeq=torchdiffeq.__version__)
    print(f"threads: XLA {cores} (affinity mask; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}), "
          f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}; "
          f"torch device {DEVICE}")
    print(f"workload: TransformerBlockField({width}, {heads}) float32, x {(batch, tokens, width)}, "
          f"{args.steps} fixed steps, dopri5 at rtol=atol={TOL:g}, {repeats} repeats; odeformer's "
          f"gradient {f'in chunks of {args.microbatch}' if args.microbatch else 'on the whole batch'}"
          f"{f', batch split over {jax.device_count()} devices' if args.data_parallel else ''}\n")

    param_key, data_key = jax.random.split(jax.random.key(0))
    f, state = odeformer.vector_field(odeformer.TransformerBlockField(width, heads, rngs=nnx.Rngs(param_key)))
    y0 = jax.random.normal(data_key, (batch, tokens, width), jnp.float32)
    t_field, t_y0 = TorchBlockField(flat_params(state), heads), torch.tensor(np.asarray(y0), device=DEVICE)
    with torch.no_grad():
        err = rel_err(t_field(torch.tensor(0.0), t_y0).cpu().numpy(), f(0.0, y0, state))
    assert err <= RTOL, f"one field evaluation differs by {err:.1e} of its max (> {RTOL})"
    print(f"field evaluation: torch vs odeformer differ by {err:.1e} of the max entry")
    ref = reference(flat_params(state), heads, t_y0)
    print_one_evaluation(f, state, y0, t_field, t_y0, repeats, args.block)
    if args.data_parallel:  # after the checks above, which run on one device
        mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        y0 = jax.device_put(y0, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

    rows = []
    for name, (solver, method, exact, _) in CASES.items():
        steps = None if method == "dopri5" else args.steps
        jax_fn = functools.partial(jax_step(f, solver, steps, args.microbatch), state, y0)
        torch_fn = torch_step(t_field, method, steps, t_y0)
        start = time.perf_counter()
        jax_result, torch_result = jax.block_until_ready(jax_fn()), torch_fn()
        loss_diff = check_same_work(name, steps is not None, exact, jax_result, torch_result)
        print(f"{name:8s} compile + first run {time.perf_counter() - start:4.1f}s, loss: odeformer "
              f"{float(jax_result[0][0]):.7f}, torch {torch_result[0]:.7f}; checks passed")
        nfes = (int(jax_result[0][1][0]), torch_result[1])
        errors = (rel_err(jax_result[0][1][1], ref), rel_err(torch_result[2], ref))
        rows.append((name, nfes, errors, loss_diff, time_interleaved(jax_fn, torch_fn, repeats, args.block)))

    print("\n| case | odeformer / torchdiffeq | nfe | err vs ref | loss diff | odeformer ms | torch ms "
          "| ratio | ratio, call by call |\n|---|---|---|---|---|---|---|---|---|")
    for name, nfes, errors, loss_diff, (ms_jax, ms_torch, ratio, by_call) in rows:
        print(f"| {name} | {CASES[name][3]} | {nfes[0]} / {nfes[1]} | {errors[0]:.1e} / {errors[1]:.1e} "
              f"| {loss_diff:.1e} | {ms_jax:.1f} | {ms_torch:.1f} | {ratio:.2f} | {by_call:.2f} |")
    print(f"\nratio: odeformer ms / torch ms (< 1: odeformer faster), median over turns of {args.block} runs "
          "of each side\n(after one untimed run); call by call: median over pairs A, B, A, B, ..., where "
          "each side's\nidle threads still spin while the other runs; err: max|x(1) - ref| / max|ref|; "
          "loss diff: |odeformer - torch| / |torch|")


if __name__ == "__main__":
    main()
