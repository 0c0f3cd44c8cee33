"""Kinetic-energy and Jacobian-norm regularisers of a flow (Finlay et al. 2020).

"How to train your neural ODE" penalises, along the trajectory ``x(t)`` of
``dx/dt = f(t, x)``,

- the kinetic energy ``K = ∫_0^T ||f(t, x)||² dt``, and
- the Jacobian Frobenius norm ``J = ∫_0^T ||∂f/∂x (t, x)||_F² dt``,

so that training prefers straight, slowly varying flows that an adaptive solver crosses
in few steps. Both integrals ride along with the state (an augmented ODE ``(x, r)`` with
``dr/dt = rates``), so they are integrated by the same solver and the same steps as ``x``.

Normalisation (scale-free weights): both rates are divided by the number of elements of
the state ``x`` (batch x tokens x width), i.e. they are the mean over examples, tokens and
features of ``f²`` and of ``(εᵀ ∂f/∂x)²``. Finlay et al.'s code averages per example the
same way (their kinetic term has an extra factor 1/2; ours does not). A field ``f = -x``
has ``J`` rate exactly 1; a batch of any size, tokens and width give weights of the same
meaning.

Hutchinson estimator: ``||∂f/∂x||_F² = E_ε ||εᵀ ∂f/∂x||²`` for noise with
``E[εεᵀ] = I``; ``εᵀ ∂f/∂x`` is one vector-Jacobian product per field evaluation. ε is
drawn once per solve (per training step, from an explicit key) and held fixed over time,
as the ODE must be deterministic. Rademacher noise (the default) has the lowest variance
of such estimators; Gaussian is available. The batch's examples do not interact in the
field (attention mixes tokens of one example), so the Jacobian of the batched field is
block diagonal and one ε over the whole batch estimates the sum of the per-example norms.

Error control: Finlay et al. exclude the regulariser channels from the adaptive error
estimate (their training solve passes ``atol = rtol = 1e20`` for them), so that the
regularised solve takes the steps the plain one would. Diffrax's PID controller takes the
RMS of the scaled error over every element of the state pytree (``optx.rms_norm``), so
here the channels are two scalars (sums over the batch, not one per example) that weigh
``2 / (N + 2)`` against the ``N`` elements of ``x``. Measured on random transformer-block
fields with dopri5 at rtol = atol from 1e-1 to 1e-6 (t1 = 4): at N = 32 x 16 x 16 = 8,192
(the adaptive experiment's training batch) and at N = 4 x 8 x 8 = 256 the NFE with and
without the channels were identical in every case; only for a 16-element state did they
differ (e.g. 55 vs 103). tests/test_regularisers.py pins the equality at training size.
Excluding them exactly would need a ``norm`` argument in :func:`odeformer.solve`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from odeformer._block import ODEBlock, vector_field
from odeformer._integrate import Solution, solve

PENALTIES: tuple[str, ...] = ("kinetic", "jacobian")
NOISES: tuple[str, ...] = ("rademacher", "gaussian")


def weights(train) -> dict[str, float]:
    """The weights of the penalties a ``train`` config section switches on.

    A penalty is on when its weight (``train.kinetic``, ``train.jacobian``) is > 0;
    which are on is structural (a compile each), their values are traced.
    """
    return {name: float(train[name]) for name in PENALTIES if train[name] > 0}


def hutchinson_noise(key: jax.Array, shape, dtype, kind: str = "rademacher") -> jax.Array:
    """Noise ε with ``E[εεᵀ] = I``: ±1 (``rademacher``) or standard normal (``gaussian``)."""
    if kind == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    if kind == "gaussian":
        return jax.random.normal(key, shape, dtype)
    raise ValueError(f"noise={kind!r} is not one of {', '.join(NOISES)}")


def augment(f: Callable, penalties: tuple[str, ...]) -> Callable:
    """The augmented field ``g(t, (x, r), (args, ε)) -> (f(t, x, args), rates)``.

    ``rates`` has one scalar per name in ``penalties``: ``mean(f²)`` for ``kinetic``,
    ``mean((εᵀ ∂f/∂x)²)`` for ``jacobian`` (one vjp, only when it is asked for).
    """
    unknown = set(penalties) - set(PENALTIES)
    if unknown or not penalties:
        raise ValueError(f"penalties={penalties!r} must name some of {', '.join(PENALTIES)}")

    def g(t, y, args):
        x, _ = y
        params, noise = args
        if "jacobian" in penalties:
            dx, vjp = jax.vjp(lambda x: f(t, x, params), x)
            (noise_jac,) = vjp(noise)
        else:
            dx = f(t, x, params)
        rates = {}
        if "kinetic" in penalties:
            rates["kinetic"] = jnp.mean(jnp.square(dx))
        if "jacobian" in penalties:
            rates["jacobian"] = jnp.mean(jnp.square(noise_jac))
        return dx, rates

    return g


def integrate(block: ODEBlock, x: jax.Array, penalties: tuple[str, ...], key: jax.Array, *,
              rtol=None, atol=None, t1=None, steps=None,
              noise: str = "rademacher") -> tuple[Solution, dict]:
    """Integrates ``block`` from ``x`` with the penalties' integrals alongside.

    Args:
      block: the :class:`odeformer.ODEBlock`; its solver, steps, adjoint, max_steps and
        throw are used as in :meth:`ODEBlock.integrate`.
      x: initial state, e.g. tokens ``[batch, tokens, width]``.
      penalties: names from :data:`PENALTIES` (structural).
      key: draws the Hutchinson noise (used only for ``jacobian``).
      rtol, atol, t1, steps: as in :meth:`ODEBlock.integrate` (traced).
      noise: ``rademacher`` or ``gaussian``.

    Returns:
      ``(solution, values)``: the solution of ``x`` alone (``y1``, ``stats`` counting
      evaluations of the augmented field, ``ok``) and ``{name: ∫_0^T rate dt}``.
    """
    options = block.solve_options(rtol=rtol, atol=atol, t1=t1, steps=steps)
    f, state = vector_field(block.field)
    eps = hutchinson_noise(key, x.shape, x.dtype, noise) if "jacobian" in penalties else None
    zero = jnp.zeros((), x.dtype)
    sol = solve(augment(f, penalties), (x, {name: zero for name in penalties}), args=(state, eps),
                t0=zero, **options)
    x1, values = sol.y1
    return Solution(y1=x1, stats=sol.stats, ok=sol.ok), values
