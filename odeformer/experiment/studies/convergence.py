"""Does a deep residual transformer discretise an ODE? And at what order do solvers converge?

After Sander, Ablin, Peyré (NeurIPS 2022): a residual network ``x_{k+1} = x_k + (1/K) F(W_k, x_k)``
converges to the ODE ``x' = F(W(t), x)`` as the depth K grows, with error O(1/K), when its
weights are samples ``W_k = W(k/K)`` of a smooth function of depth; with weights drawn
independently per layer there is no ODE of the weights to converge to.

The field is ``odeformer.AttentionField`` (pre-LayerNorm multi-head attention) on ``tokens``
tokens of width ``width``, over depth ``t in [0, 1]``. One run is one sweep point
``(seed, convergence.weights, convergence.solver, convergence.steps)``:

- ``weights="smooth"``: ``W(t) = sum_j u_j(t) A_j`` with three independent draws ``A_j`` of
  the field's standard initialisation (from ``seed``) and ``u(t)`` a circle in the plane
  ``sum_j u_j = 1`` of the unit sphere of R^3, turning ``cycles`` times over [0, 1]
  (:func:`weight_path`). Since ``sum u_j = 1`` and ``sum u_j^2 = 1``, ``W(t)`` has at every t
  the mean and covariance of one initialisation draw (LayerNorm scales stay 1, biases 0):
  a smooth path through typical weights. With ``solver="euler"`` the run builds the
  K-layer network itself, a ``piecewise`` field with ``K = steps`` pieces ``W_k = W(k/K)``
  integrated by Euler in K steps (a K-layer residual transformer); other solvers integrate
  the smooth-in-t field with ``steps`` fixed steps.
- ``weights="random"``: K layers with independent standard-initialisation weights (a
  ``piecewise`` field with K pieces; each depth K draws its own layers, from a key that
  depends on ``seed`` and K: :func:`random_layers`), Euler in K steps: residual step 1/K,
  Sander et al.'s ResNet at i.i.d. initialisation.
- ``weights="random_sqrt"``: the same draws with residual step ``1/sqrt(K)`` (the field
  multiplied by ``sqrt(K)``), the scaling at which i.i.d. residual branches neither vanish
  nor explode with depth (Marion et al. 2022).

Metrics of a run (all distances are the max-norm ``max |a - b|`` over tokens and features
of the output at depth t = 1, ``x_N`` the run's output):

- ``error``: ``|x_N - x*|``, ``x*`` the smooth ODE's solution by ``reference_solver`` at
  ``reference_rtol``/``reference_atol`` (smooth weights only; random weights have no ODE).
- ``successive_distance``: ``|x_N - x_2N|``, with ``x_2N`` what the run with twice the steps
  computes (for random weights: a network of 2K fresh independent layers). It tends to 0
  when the outputs converge, and if it decays like ``N^-p`` (p > 0) along N = 2^m they do.
- ``distance_from_input``: ``|x_N - x_0|``; it goes to 0 if the network tends to the identity.
- ``nfe`` (exact evaluations of the run's solve), ``reference_nfe``.

The fitted slopes of a results table are ``odeformer.analysis.convergence``'s (:func:`fit_slope`,
:func:`slopes`, :func:`local_slopes` there).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from odeformer._checks import is_int
from odeformer._fields import AttentionField
from odeformer._integrate import solve
from odeformer._solvers import ADAPTIVE_SOLVERS, SOLVERS
from odeformer._time_dependence import TimeSpec
from odeformer.experiment.studies import check_numbers, check_section, register_study

WEIGHTS: tuple[str, ...] = ("smooth", "random", "random_sqrt")
SECTION: dict[str, tuple] = {
    "weights": ("smooth", "Weights over depth: " + ", ".join(WEIGHTS) + "."),
    "solver": ("euler", "Solver of the run (euler builds the K-layer residual network)."),
    "steps": (1, "Fixed steps over [0, 1] (for euler: the depth K)."),
    "width": (8, "Token width of the attention field."),
    "heads": (2, "Attention heads (divide the width)."),
    "tokens": (8, "Tokens."),
    "cycles": (1.0, "Turns of the smooth weight path over [0, 1]."),
    "reference_solver": ("dopri8", "Adaptive solver of the reference solution."),
    "reference_rtol": (1e-14, "Reference relative tolerance."),
    "reference_atol": (1e-14, "Reference absolute tolerance."),
    "reference_max_steps": (100_000, "Most steps of the reference solve."),
}
KEYS: tuple[str, ...] = tuple(SECTION)


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid key of one run's config."""
    v = check_section(c, "convergence", KEYS)
    if v.weights not in WEIGHTS:
        raise ValueError(f"convergence.weights={v.weights!r} is not one of {', '.join(WEIGHTS)}")
    if v.solver not in SOLVERS:
        raise ValueError(f"convergence.solver={v.solver!r} is not one of {', '.join(SOLVERS)}")
    if v.weights != "smooth" and v.solver != "euler":
        raise ValueError(f"convergence.solver={v.solver!r} with convergence.weights={v.weights!r}: "
                         "a residual network with independent layers is Euler with one step per "
                         "layer; use solver='euler'")
    if v.reference_solver not in ADAPTIVE_SOLVERS:
        raise ValueError(f"convergence.reference_solver={v.reference_solver!r} is not one of "
                         f"{', '.join(ADAPTIVE_SOLVERS)}")
    for key in ("steps", "width", "heads", "tokens", "reference_max_steps"):
        value = v[key]
        if not is_int(value) or value < 1:
            raise ValueError(f"convergence.{key}={value!r} must be an int >= 1")
    if v.width % v.heads:
        raise ValueError(f"convergence.width={v.width} must be a multiple of convergence.heads={v.heads}")
    check_numbers("convergence", {k: v[k] for k in ("cycles", "reference_rtol", "reference_atol")})
    for key in ("cycles", "reference_rtol", "reference_atol"):
        if not v[key] > 0:
            raise ValueError(f"convergence.{key}={v[key]!r} must be > 0")


_E1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
_E2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6)


def weight_path(t, cycles: float):
    """Mixing coefficients ``u(t)`` (shape ``t.shape + (3,)``) of the smooth weights.

    ``u(t) = (1, 1, 1)/3 + sqrt(2/3) (cos θ e1 + sin θ e2)``, ``θ = 2π cycles t``, with
    ``e1, e2`` orthonormal in the plane ``sum u = 0``: then ``sum_j u_j = 1`` and
    ``sum_j u_j^2 = 1`` for every t. NumPy in, NumPy out; JAX in (traced), JAX out.
    """
    xp = jnp if isinstance(t, jax.Array) else np
    theta = 2 * np.pi * cycles * xp.asarray(t)[..., None]
    return 1 / 3 + math.sqrt(2 / 3) * (xp.cos(theta) * _E1 + xp.sin(theta) * _E2)


def _field(width: int, heads: int, time: TimeSpec, key: jax.Array) -> nnx.Module:
    field = AttentionField(width, heads, time=time, rngs=nnx.Rngs(params=key))
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), field)


@functools.cache
def _graphdef(width: int, heads: int, time: TimeSpec):
    return nnx.split(nnx.eval_shape(lambda: AttentionField(width, heads, time=time, rngs=nnx.Rngs(0))))[0]


def _piecewise(layers: int) -> TimeSpec:
    return TimeSpec(mode="piecewise", pieces=layers)


def smooth_layers(anchors: nnx.State, layers: int, cycles: float) -> nnx.State:
    """The K-layer network's weights ``W_k = W(k/K)`` from the three anchor draws."""
    mix = weight_path(np.arange(layers) / layers, cycles)  # (K, 3)
    return jax.tree_util.tree_map(lambda a: np.einsum("kj,j...->k...", mix, np.asarray(a)), anchors)


_DRAW_CHUNK = 64  # layers drawn per call of the one compiled sampler, whatever K


@functools.cache
def _layer_sampler(width: int, heads: int):
    """Jitted ``(key, indices (C,)) -> C weight sets``: the standard initialisation drawn
    from ``fold_in(key, index)`` for each index."""

    def draw(key, index):
        _, state = nnx.split(_field(width, heads, TimeSpec(), jax.random.fold_in(key, index)))
        return jax.tree_util.tree_map(lambda a: a[0], state)  # a tied field's single weight set

    return jax.jit(jax.vmap(draw, in_axes=(None, 0)))


def random_layers(width: int, heads: int, layers: int, key: jax.Array) -> nnx.State:
    """The state of a ``layers``-piece field whose layer k is the standard initialisation
    drawn from ``fold_in(key, k)``: independent, identically distributed layers."""
    sampler = _layer_sampler(width, heads)
    chunks = [sampler(key, np.arange(i, i + _DRAW_CHUNK)) for i in range(0, layers, _DRAW_CHUNK)]
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts)[:layers], *chunks)


@functools.cache
def _network(width: int, heads: int, layers: int):
    """Jitted ``(state, x0, scale) -> (x_K, nfe)``: K residual layers, Euler in K steps."""
    graphdef = _graphdef(width, heads, _piecewise(layers))

    def run(state, x0, scale):
        def f(t, x, state):
            return scale * nnx.merge(graphdef, state)(t, x)

        sol = solve(f, x0, args=state, t1=1.0, solver="euler", steps=layers)
        return sol.y1, sol.stats["nfe"]

    return jax.jit(run)


@functools.cache
def _smooth_solve(width: int, heads: int, solver: str, steps: int | None, max_steps: int):
    """Jitted ``(anchors, x0, cycles, rtol, atol) -> (x(1), nfe)`` for the smooth-in-t field.

    ``steps=None`` is an adaptive solve at ``rtol``/``atol`` (traced).
    """
    graphdef = _graphdef(width, heads, TimeSpec())

    def f(t, x, args):
        anchors, cycles = args
        mix = weight_path(t, cycles).astype(x.dtype)
        weights = jax.tree_util.tree_map(lambda a: jnp.tensordot(mix, a, axes=1)[None], anchors)
        return nnx.merge(graphdef, weights)(t, x)

    def run(anchors, x0, cycles, rtol, atol):
        tolerances = dict(rtol=rtol, atol=atol) if steps is None else dict(steps=steps)
        sol = solve(f, x0, args=(anchors, cycles), t1=1.0, solver=solver, max_steps=max_steps,
                    **tolerances)
        return sol.y1, sol.stats["nfe"]

    return jax.jit(run)


def _problem(seed: int, width: int, heads: int, tokens: int):
    """Initial tokens, the three anchor weight draws and the key of the random layers."""
    anchor_key, random_key, token_key = jax.random.split(jax.random.key(seed), 3)
    _, anchors = nnx.split(_field(width, heads, _piecewise(3), anchor_key))
    x0 = jax.random.normal(token_key, (tokens, width), jnp.float64)
    return x0, anchors, random_key


@functools.lru_cache(maxsize=16)
def _reference(seed: int, width: int, heads: int, tokens: int, cycles: float, solver: str,
               rtol: float, atol: float, max_steps: int) -> tuple[np.ndarray, int]:
    x0, anchors, _ = _problem(seed, width, heads, tokens)
    y, nfe = _smooth_solve(width, heads, solver, None, max_steps)(
        anchors, x0, jnp.float64(cycles), jnp.float64(rtol), jnp.float64(atol))
    return np.asarray(y), int(nfe)


def output(c: ml_collections.ConfigDict, steps: int) -> tuple[np.ndarray, int]:
    """The run's output at depth 1 with ``steps`` steps (= layers), and its exact nfe."""
    v = c.convergence
    x0, anchors, random_key = _problem(c.seed, v.width, v.heads, v.tokens)
    if v.weights == "smooth" and v.solver != "euler":
        y, nfe = _smooth_solve(v.width, v.heads, v.solver, steps, 1)(
            anchors, x0, jnp.float64(v.cycles), None, None)
        return np.asarray(y), int(nfe)
    if v.weights == "smooth":
        state = smooth_layers(anchors, steps, v.cycles)
    else:
        state = random_layers(v.width, v.heads, steps, jax.random.fold_in(random_key, steps))
    scale = math.sqrt(steps) if v.weights == "random_sqrt" else 1.0
    y, nfe = _network(v.width, v.heads, steps)(state, x0, jnp.float64(scale))
    return np.asarray(y), int(nfe)


@register_study("convergence", validate=validate, section=SECTION)
def measure(c: ml_collections.ConfigDict) -> dict:
    """One run's row: ``error`` (smooth weights), ``successive_distance``,
    ``distance_from_input``, ``nfe``, ``reference_nfe`` (see the module docstring)."""
    v = c.convergence
    with jax.enable_x64(True):
        x0, _, _ = _problem(c.seed, v.width, v.heads, v.tokens)
        y, nfe = output(c, v.steps)
        y2, _ = output(c, 2 * v.steps)
        row = {"successive_distance": float(np.max(np.abs(y - y2))),
               "distance_from_input": float(np.max(np.abs(y - np.asarray(x0)))), "nfe": nfe}
        if v.weights == "smooth":
            reference, reference_nfe = _reference(
                c.seed, v.width, v.heads, v.tokens, v.cycles, v.reference_solver, v.reference_rtol,
                v.reference_atol, v.reference_max_steps)
            row.update(error=float(np.max(np.abs(y - reference))), reference_nfe=reference_nfe)
    return row
