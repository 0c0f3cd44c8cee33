"""Clustering of self-attention dynamics on the sphere (Geshkovski, Letrouit, Polyanskiy, Rigollet 2023).

Tokens ``x_1..x_n`` on the unit sphere of R^d move by self-attention with ``Q = K = V = I``::

    x_i' = P(x_i) ( sum_j e^{β <x_i, x_j>} x_j / Z_i ),   P(x) y = y - (<x, y> / |x|^2) x,

with ``normalisation="softmax"``: ``Z_i = sum_j e^{β <x_i, x_j>}`` (their SA), or ``"mean"``:
``Z_i = n`` (their unnormalised USA). ``P(x)`` removes the radial part exactly, so norms are
conserved by the flow and any drift off the sphere is solver error (on the sphere it is the
paper's ``y - <x, y> x``). One run is one sweep point, ``clustering.part`` being:

- ``"phase"``: tokens uniform on the sphere (normalised Gaussians from ``seed``), integrated to
  ``horizon`` by an adaptive solver. Columns ``clustered@t=<t>`` for every ``t`` of
  ``times``: the fraction of the ``n(n-1)/2`` pairs ``i < j`` with ``<x_i, x_j> > threshold``;
  ``clusters@t=<t>``: the number of connected components of the graph of such pairs;
  ``max_norm_deviation``: ``max | |x_i| - 1 |`` over tokens and a grid of 61 times plus ``times``.
- ``"equal_angle"``: ``d >= n`` tokens with every pairwise inner product ``rho0``
  (:func:`equal_angle_tokens`). By symmetry the inner products stay equal, ``rho(t)``, and
  (derivation in :func:`equal_angle_rate`)
  ``rho' = 2 e^{β rho} (1 - rho) ((n - 1) rho + 1) / Z(rho)``, ``Z = e^β + (n - 1) e^{β rho}``
  (softmax) or ``Z = n`` (mean). Columns: ``max_inner_product_deviation``, the largest
  ``|<x_i, x_j>(t) - rho(t)|`` over pairs and ``check_points`` times in ``[0, horizon]``;
  ``max_norm_deviation``; ``rho_final`` and ``log10_one_minus_rho_final`` (of the scalar ODE at
  ``horizon``); ``scalar_nfe``; the decay rate of ``1 - rho`` fitted at late times
  (``decay_rate_scalar``: minus the least-squares slope of ``log(1 - rho)`` against t over
  ``[horizon/2, horizon]``
  from the scalar ODE, solved for ``s = log(1 - rho)`` so that no precision is lost as rho -> 1;
  ``decay_rate_particles``: the same slope from the particles' mean inner product, over the
  times at which ``1 - rho`` lies in ``rate_window``, where float64 resolves it; NaN if fewer
  than 3 such times) against ``decay_rate_predicted``, the limit of ``-rho'/(1 - rho)`` as
  rho -> 1: 2 (softmax) or ``2 e^β`` (mean).

Every run reports its solve's exact ``nfe`` and ``num_steps``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from odeformer._checks import is_int
from odeformer._integrate import solve
from odeformer._solvers import ADAPTIVE_SOLVERS
from odeformer.experiment.studies import check_numbers, check_section, register_study

PARTS: tuple[str, ...] = ("phase", "equal_angle")
NORMALISATIONS: tuple[str, ...] = ("softmax", "mean")
SECTION: dict[str, tuple] = {
    "part": ("phase", "Which experiment: " + ", ".join(PARTS) + "."),
    "beta": (1.0, "Inverse temperature β of the attention (>= 0)."),
    "normalisation": ("softmax", "Z_i: " + ", ".join(NORMALISATIONS) + "."),
    "tokens": (32, "Tokens n."),
    "dim": (2, "Dimension d of the sphere's space."),
    "horizon": (30.0, "End time T of the solve."),
    "times": ((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0),
              "Times at which the phase part counts clustered pairs and clusters."),
    "threshold": (0.999, "Inner product above which a pair counts as clustered."),
    "rho0": (0.0, "Equal-angle part: initial pairwise inner product."),
    "check_points": (3001, "Equal-angle part: times compared with the scalar ODE."),
    "rate_window": ((1e-10, 1e-3), "Equal-angle part: the range of 1 - rho where the particles' "
                    "decay rate is fitted."),
    "solver": ("dopri5", "Adaptive solver."),
    "rtol": (1e-8, "Relative tolerance."),
    "atol": (1e-8, "Absolute tolerance."),
    "max_steps": (1_000_000, "Most solver steps."),
}
KEYS: tuple[str, ...] = tuple(SECTION)
_NORM_GRID = 61  # times (with ``times``) at which the phase part checks the norms


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid key of one run's config."""
    v = check_section(c, "clustering", KEYS)
    if v.part not in PARTS:
        raise ValueError(f"clustering.part={v.part!r} is not one of {', '.join(PARTS)}")
    if v.normalisation not in NORMALISATIONS:
        raise ValueError(f"clustering.normalisation={v.normalisation!r} is not one of "
                         f"{', '.join(NORMALISATIONS)}")
    if v.solver not in ADAPTIVE_SOLVERS:
        raise ValueError(f"clustering.solver={v.solver!r} is not one of {', '.join(ADAPTIVE_SOLVERS)} "
                         "(adaptive solvers)")
    for key, low in (("tokens", 2), ("dim", 2), ("check_points", 2), ("max_steps", 1)):
        if not is_int(v[key]) or v[key] < low:
            raise ValueError(f"clustering.{key}={v[key]!r} must be an int >= {low}")
    check_numbers("clustering", {k: v[k] for k in ("beta", "horizon", "rtol", "atol", "times",
                                                   "threshold", "rate_window", "rho0")})
    if not v.beta >= 0:
        raise ValueError(f"clustering.beta={v.beta!r} must be >= 0")
    for key in ("horizon", "rtol", "atol"):
        if not v[key] > 0:
            raise ValueError(f"clustering.{key}={v[key]!r} must be > 0")
    times = tuple(v.times)
    if not times or any(not 0 < t <= v.horizon for t in times) or any(
            b <= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError(f"clustering.times={v.times!r} must be a non-empty increasing tuple of times "
                         f"in (0, horizon={v.horizon}]")
    if not -1 < v.threshold < 1:
        raise ValueError(f"clustering.threshold={v.threshold!r} must lie in (-1, 1)")
    window = tuple(v.rate_window)
    if len(window) != 2 or not 0 < window[0] < window[1] < 1:
        raise ValueError(f"clustering.rate_window={v.rate_window!r} must be (low, high) with "
                         "0 < low < high < 1")
    if v.part == "equal_angle":
        if v.dim < v.tokens:
            raise ValueError(f"clustering.dim={v.dim} must be >= clustering.tokens={v.tokens} for "
                             "part='equal_angle' (n unit vectors with equal inner products need d >= n)")
        if not -1 / (v.tokens - 1) <= v.rho0 < 1:
            raise ValueError(f"clustering.rho0={v.rho0!r} must lie in [-1/(tokens-1), 1) = "
                             f"[{-1 / (v.tokens - 1):.4g}, 1)")


def attention_field(t, x, args):
    """``x' = P(x_i)(sum_j e^{β<x_i,x_j>} x_j / Z_i)`` for tokens ``x`` of shape ``(n, d)``.

    ``args = (beta, softmax)``, both traced: ``softmax`` True for ``Z_i = sum_j e^{β<x_i,x_j>}``,
    False for ``Z_i = n``, so one compiled solve serves both normalisations.
    """
    beta, softmax = args
    scores = beta * (x @ x.T)
    weights = jnp.where(softmax, jax.nn.softmax(scores, axis=-1), jnp.exp(scores) / x.shape[0])
    y = weights @ x
    radial = jnp.sum(x * y, -1, keepdims=True) / jnp.sum(x * x, -1, keepdims=True)
    return y - radial * x


@functools.cache
def _particle_solve(solver: str, max_steps: int):
    """Jitted ``(x0, (beta, softmax), horizon, ts, rtol, atol) -> (xs at ts, nfe, num_steps)``."""

    def run(x0, args, horizon, ts, rtol, atol):
        sol = solve(attention_field, x0, args=args, t1=horizon, solver=solver, rtol=rtol, atol=atol,
                    ts=ts, max_steps=max_steps)
        return sol.ys, sol.stats["nfe"], sol.stats["num_steps"]

    return jax.jit(run)


def _pull(rho, beta, softmax, n):
    """``g(rho) = e^{βrho} ((n - 1) rho + 1) / Z(rho)``, so that ``rho' = 2 (1 - rho) g(rho)``."""
    z = jnp.where(softmax, jnp.exp(beta) + (n - 1) * jnp.exp(beta * rho), n)
    return jnp.exp(beta * rho) * ((n - 1) * rho + 1) / z


def equal_angle_rate(rho, beta, n: int, normalisation: str):
    """``rho'`` of the equal-angle reduction.

    With unit ``x_i``, ``<x_i, x_j> = rho`` (i != j) and ``S = sum_j x_j``: the attention
    average is ``y_i = ((e^β - e^{βrho}) x_i + e^{βrho} S) / Z``, ``<x_i, S> = 1 + (n-1) rho``,
    so ``x_i' = y_i - <x_i, y_i> x_i = e^{βrho} (S - (1 + (n-1) rho) x_i) / Z`` and
    ``rho' = <x_i', x_j> + <x_i, x_j'> = 2 e^{βrho} (1 - rho)(1 + (n-1) rho) / Z``, with
    ``Z = e^β + (n-1) e^{βrho}`` (softmax) or ``Z = n`` (mean).
    """
    return 2 * (1 - rho) * _pull(rho, beta, normalisation == "softmax", n)


@functools.cache
def _scalar_solve(solver: str, max_steps: int):
    """Jitted ``(rho0, (beta, softmax, n), horizon, ts, rtol, atol) -> (log(1 - rho) at ts, nfe)``.

    Solves for ``s = log(1 - rho)``: ``s' = rho' / (rho - 1) = -2 g(rho)`` with
    ``rho = 1 - e^s``, with no cancellation as rho -> 1, where ``1 - rho`` itself falls below
    float64 resolution.
    """
    def f(t, s, args):
        return -2 * _pull(-jnp.expm1(s), *args)

    def run(rho0, args, horizon, ts, rtol, atol):
        sol = solve(f, jnp.log1p(-rho0), args=args, t1=horizon, solver=solver, rtol=rtol, atol=atol,
                    ts=ts, max_steps=max_steps)
        return sol.ys, sol.stats["nfe"]

    return jax.jit(run)


def equal_angle_tokens(n: int, d: int, rho0: float, key: jax.Array) -> jax.Array:
    """``n`` unit vectors in R^d (``d >= n``) with every pairwise inner product ``rho0``.

    ``x_i = a e_i + c v`` with ``v = (1, ..., 1)/sqrt(n)``: ``|x_i|^2 = a^2 + 2ac/sqrt(n) + c^2``
    and ``<x_i, x_j> = 2ac/sqrt(n) + c^2``, so ``a = sqrt(1 - rho0)`` and
    ``c = -a/sqrt(n) + sqrt(a^2/n + rho0)`` (real when ``rho0 >= -1/(n-1)``); then a random
    rotation of R^d (from ``key``) so that no coordinate is special.
    """
    a = math.sqrt(1 - rho0)
    c = -a / math.sqrt(n) + math.sqrt(max(0.0, (1 + (n - 1) * rho0) / n))  # a^2/n + rho0
    x = a * jnp.eye(n, d) + c / math.sqrt(n) * jnp.pad(jnp.ones((n, n)), ((0, 0), (0, d - n)))
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    return x @ (q * jnp.sign(jnp.diag(r)))


def uniform_tokens(n: int, d: int, key: jax.Array) -> jax.Array:
    """``n`` independent tokens uniform on the unit sphere of R^d."""
    x = jax.random.normal(key, (n, d))
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def clusters(gram: np.ndarray, threshold: float) -> int:
    """Connected components of the graph with an edge where ``gram > threshold``."""
    n = gram.shape[0]
    label = np.arange(n)
    linked = gram > threshold
    for _ in range(n):  # label propagation: each token takes the smallest label it links to
        new = np.array([label[linked[i] | (np.arange(n) == i)].min() for i in range(n)])
        if np.array_equal(new, label):
            break
        label = new
    return len(np.unique(label))


def _field_args(v: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    return jnp.float64(v.beta), jnp.asarray(v.normalisation == "softmax")


def _time_label(t: float) -> str:
    return f"{t:g}"


def _phase(c: ml_collections.ConfigDict) -> dict:
    v = c.clustering
    x0 = uniform_tokens(v.tokens, v.dim, jax.random.key(c.seed))
    times = np.asarray(v.times, float)
    grid = np.linspace(0, v.horizon, _NORM_GRID)
    ts = np.union1d(grid[np.min(np.abs(grid[:, None] - times), axis=1) > 1e-9 * v.horizon], times)
    xs, nfe, num_steps = _particle_solve(v.solver, v.max_steps)(
        x0, _field_args(v), jnp.float64(v.horizon), jnp.asarray(ts), jnp.float64(v.rtol),
        jnp.float64(v.atol))
    xs = np.asarray(xs)
    upper = np.triu_indices(v.tokens, 1)
    row = {}
    for t in v.times:
        x = xs[np.searchsorted(ts, t)]
        gram = x @ x.T
        row[f"clustered@t={_time_label(t)}"] = float(np.mean(gram[upper] > v.threshold))
        row[f"clusters@t={_time_label(t)}"] = clusters(gram, v.threshold)
    row.update(max_norm_deviation=float(np.max(np.abs(np.linalg.norm(xs, axis=-1) - 1))), nfe=int(nfe),
               num_steps=int(num_steps))
    return row


def _late_slope(ts: np.ndarray, log_values: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 3:
        return float("nan")
    return float(np.polyfit(ts[mask], log_values[mask], 1)[0])


def _equal_angle(c: ml_collections.ConfigDict) -> dict:
    v = c.clustering
    n = v.tokens
    x0 = equal_angle_tokens(n, v.dim, v.rho0, jax.random.key(c.seed))
    ts = np.linspace(0, v.horizon, v.check_points)
    rest = (jnp.float64(v.horizon), jnp.asarray(ts), jnp.float64(v.rtol), jnp.float64(v.atol))
    xs, nfe, num_steps = _particle_solve(v.solver, v.max_steps)(x0, _field_args(v), *rest)
    s, scalar_nfe = _scalar_solve(v.solver, v.max_steps)(
        jnp.float64(v.rho0), (*_field_args(v), jnp.float64(n)), *rest)
    xs, s = np.asarray(xs), np.asarray(s)
    rho = -np.expm1(s)
    gram = np.einsum("tid,tjd->tij", xs, xs)
    upper = np.triu_indices(n, 1)
    pairs = gram[:, upper[0], upper[1]]  # (times, pairs)
    one_minus = 1 - pairs.mean(-1)
    low, high = v.rate_window
    with np.errstate(divide="ignore", invalid="ignore"):
        particles_rate = -_late_slope(ts, np.log(one_minus), (one_minus > low) & (one_minus < high))
    predicted = 2.0 if v.normalisation == "softmax" else 2 * math.exp(v.beta)
    return dict(max_inner_product_deviation=float(np.max(np.abs(pairs - rho[:, None]))),
                max_norm_deviation=float(np.max(np.abs(np.linalg.norm(xs, axis=-1) - 1))),
                rho_final=float(rho[-1]), log10_one_minus_rho_final=float(s[-1] / math.log(10)),
                decay_rate_scalar=-_late_slope(ts, s, ts >= v.horizon / 2),
                decay_rate_particles=particles_rate, decay_rate_predicted=predicted,
                nfe=int(nfe), num_steps=int(num_steps), scalar_nfe=int(scalar_nfe))


@register_study("clustering", validate=validate, section=SECTION)
def measure(c: ml_collections.ConfigDict) -> dict:
    """One run's row (see the module docstring for the columns of each part)."""
    with jax.enable_x64(True):
        return _phase(c) if c.clustering.part == "phase" else _equal_angle(c)
