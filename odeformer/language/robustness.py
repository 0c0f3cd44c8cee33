"""Robustness of a trained character-level language model: how its loss and its depth map respond
to perturbations of the text and of the embeddings.

Everything is measured per window: token ids ``tokens [B, n]`` with next-character targets
``targets [B, n]``, whose loss is the mean cross-entropy over the window's ``n`` positions (nats).
``x0 = model.embed(tokens)`` ``[B, n, width]`` is the body's initial state and ``Φ: x0 -> x(T)``
its depth map, over the horizon ``T``: ``layers`` for ``gpt`` and ``rk2_gated`` (unit steps), the
solve's ``t1`` for ``ode`` and ``smooth``. Every window is solved as its own system (``vmap``), so
an adaptive solver picks its own steps and each gradient and Jacobian belongs to one window. Norms
are Frobenius norms over a window's ``[n, width]``. Measured per window:

- substitution (``sub_loss@<rate>``): each input position independently, with probability
  ``rate``, replaced by a character drawn uniformly from the ``vocab_size - 1`` others; the targets
  stay the true next characters. Every rate uses the same draws: the positions corrupted at one
  rate include those of every smaller rate, with the same replacements, so the loss against the
  rate is one curve and not independent samples.
- embedding noise (``noise_loss``): ``x0 + s ε``, ``ε ~ N(0, I)``, with an absolute ``s``, the same
  for every model: scaled to each model's own ``||x0||``, a model with larger embeddings would be
  given a larger perturbation.
- attack (``attack_loss@<budget>``): projected gradient ascent on the loss in embedding space, in
  the ball ``||δ|| <= budget sqrt(n)`` (an RMS of ``budget`` per token, absolute as the noise is):
  from ``δ = 0``, ``steps`` steps of length ``2.5 radius / steps`` along the normalised gradient,
  each projected onto the ball; the best iterate (``δ = 0`` included) is kept, so an attack never
  reports a loss below the clean one.
- Jacobian (``sigma``, ``sigma_change``, ``lyapunov``): ``σ_max(∂Φ/∂x0)`` by power iteration on
  ``JᵀJ`` (``jvp`` through a forward-mode copy of the solve,
  :func:`odeformer.forward_mode`; ``vjp`` through the trained one), its relative change
  over the last iteration (a convergence check), and the largest finite-time Lyapunov exponent
  ``λ = log(σ_max) / T``.

Every random draw comes from the ``key`` argument only, never from the model: models of the same
vocabulary and block size are compared on the same corrupted text (and, at equal width, the same
noise and start vectors). :func:`make_robustness_step` measures a batch of windows;
:func:`summarise_robustness` turns the measurements into the ``robust.*`` columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odeformer._checks import is_int
from odeformer._integrate import _concrete
from odeformer._stability import _TINY, _norm, _per_example, lyapunov_exponent, spectral_norm
from odeformer.language.models import LanguageModel

# Streams of the step's key (jax.random.fold_in): one per kind of draw, the same for every model.
_SUBSTITUTION, _NOISE, _START = 0, 1, 2


def _check_range(name: str, value, low: float, high: float | None = None) -> None:
    """Refuses a concrete ``value`` (scalar or array) outside ``[low, high)`` (``[low, ∞)``
    without ``high``); a traced one is not known until run time and passes."""
    allowed = f"[{low:g}, {high:g})" if high is not None else f">= {low:g}"
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be a number {allowed}, not a bool")
    known = _concrete(value)
    if known is None:
        return
    try:
        known = np.asarray(known, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number {allowed}") from None
    inside = (known >= low) & (known < high if high is not None else np.isfinite(known))
    if not np.all(inside):
        raise ValueError(f"{name}={value!r} must lie in {allowed}")


def _check_count(name: str, value, least: int) -> None:
    if not (is_int(value) and value >= least):
        raise ValueError(f"{name}={value!r} must be an integer >= {least}")


def substitute(key: jax.Array, tokens: jax.Array, rate, vocab_size: int) -> jax.Array:
    """``tokens`` with each position, independently with probability ``rate``, replaced by an id
    drawn uniformly from the ``vocab_size - 1`` others (a replacement is always a change, so the
    corrupted fraction is ``rate`` at every vocabulary size).

    The draws depend on ``key`` and ``tokens.shape`` only: at one key, the positions replaced at a
    rate include those of every smaller rate, with the same replacements.

    Raises:
      ValueError: ``rate`` outside ``[0, 1)`` or ``vocab_size`` < 2.
    """
    _check_range("rate", rate, 0.0, 1.0)
    _check_count("vocab_size", vocab_size, 2)
    where, what = jax.random.split(key)
    chosen = jax.random.uniform(where, tokens.shape) < rate
    offset = jax.random.randint(what, tokens.shape, 1, vocab_size, dtype=tokens.dtype)
    return jnp.where(chosen, (tokens + offset) % vocab_size, tokens)


def embedding_noise(key: jax.Array, x0: jax.Array, scale) -> jax.Array:
    """``x0 + scale N(0, I)``: Gaussian noise of an absolute ``scale``, the same for every model
    of this width (not relative to ``||x0||``).

    Raises:
      ValueError: ``scale`` negative.
    """
    _check_range("scale", scale, 0.0)
    return x0 + scale * jax.random.normal(key, x0.shape, x0.dtype)


def attack(loss_of_x0: Callable, x0: jax.Array, budget, steps: int) -> tuple[jax.Array, jax.Array]:
    """Projected gradient ascent (PGD) on each window's loss in an L2 ball around ``x0``.

    Args:
      loss_of_x0: ``x [B, ...] -> loss [B]``, each window's loss depending on its own ``x`` only
        (the gradient of the sum is then each window's own gradient).
      x0: the clean points ``[B, ...]``.
      budget: the RMS of ``δ`` per position (scalar, or ``[B]``, one per window): the ball's
        radius is ``budget sqrt(n)``, ``n = x0.shape[1]``, absolute.
      steps: gradient steps (static), each of length ``2.5 radius / steps`` along the normalised
        gradient, then projected onto the ball: enough length to reach the boundary in under
        half the steps and to move along it after.

    Returns:
      ``(δ, loss(x0 + δ))`` per window for the best iterate, ``δ = 0`` included: never a loss
      below the clean one, and no worse for a step that overshoots.

    Raises:
      ValueError: ``budget`` negative or ``steps`` < 1.
    """
    _check_range("budget", budget, 0.0)
    _check_count("steps", steps, 1)
    radius = jnp.broadcast_to(jnp.asarray(budget, x0.dtype) * math.sqrt(x0.shape[1]), x0.shape[:1])
    length = 2.5 * radius / steps

    def losses_and_gradient(delta):
        def total(d):
            losses = loss_of_x0(x0 + d)
            return losses.sum(), losses
        (_, losses), gradient = jax.value_and_grad(total, has_aux=True)(delta)
        return losses, gradient

    def keep_best(best, delta, losses):
        best_delta, best_loss = best
        better = losses > best_loss
        rows = better.reshape(better.shape + (1,) * (delta.ndim - 1))
        return jnp.where(rows, delta, best_delta), jnp.where(better, losses, best_loss)

    def ascend(carry, _):
        delta, best = carry
        losses, gradient = losses_and_gradient(delta)
        best = keep_best(best, delta, losses)
        delta = delta + _per_example(length / jnp.maximum(_norm(gradient), _TINY), gradient)
        delta = _per_example(jnp.minimum(1, radius / jnp.maximum(_norm(delta), _TINY)), delta)
        return (delta, best), None

    start = jnp.zeros_like(x0)
    best = (start, jnp.full(x0.shape[:1], -jnp.inf, jax.eval_shape(loss_of_x0, x0).dtype))
    (delta, best), _ = jax.lax.scan(ascend, (start, best), None, length=steps)
    return keep_best(best, delta, loss_of_x0(x0 + delta))


def horizon(model: LanguageModel, hyper: dict):
    """The depth map's horizon ``T``: ``layers`` for ``gpt`` and ``rk2_gated`` (unit steps),
    ``hyper["t1"]`` (else the flow's stored ``t1``) for ``ode`` and ``smooth``."""
    if model.family in ("gpt", "rk2_gated"):
        return float(model.layers)
    t1 = hyper.get("t1")
    return model.flow.t1 if t1 is None else t1


def window_body(model: LanguageModel, hyper: dict) -> Callable:
    """The depth map ``x0 [B, n, width] -> x(T)`` solving every window as its own system."""
    return jax.vmap(lambda x: model.body(x[None], **hyper)[0][0])


def window_losses(model: LanguageModel, hyper: dict) -> Callable:
    """``(x0 [B, n, width], targets [B, n]) -> (loss [B], ok [B])``: each window's mean
    cross-entropy (nats) through :meth:`LanguageModel.classify`, solved as its own system, and
    whether its solve succeeded."""
    def one(x, targets):
        logits, stats = model.classify(x[None], **hyper)
        log_p = jax.nn.log_softmax(logits[0], axis=-1)
        return -jnp.take_along_axis(log_p, targets[:, None], axis=-1).mean(), stats["ok"]

    return jax.vmap(one)


def jacobian_norm(model: LanguageModel, forward: LanguageModel, hyper: dict, x0: jax.Array,
                  key: jax.Array, iterations: int) -> dict[str, jax.Array]:
    """``σ_max`` of each window's Jacobian of the depth map at ``x0`` and its Lyapunov exponent.

    Args:
      model: the trained model (its solve's ``vjp``).
      forward: the same model with a forward-differentiable solve (:func:`odeformer.forward_mode`).
      hyper: solver values, as passed to :meth:`LanguageModel.body`.
      x0: initial states ``[B, n, width]``.
      key: draws the power iteration's random start vectors.
      iterations: products with ``JᵀJ`` (static), >= 2.

    Returns:
      ``sigma`` (a lower bound on ``σ_max`` converging to it), ``sigma_change`` (its relative
      change over the last iteration) and ``lyapunov`` (``log(sigma) / T``, :func:`horizon`).

    Raises:
      ValueError: ``iterations`` < 2.
    """
    _check_count("iterations", iterations, 2)
    body, body_forward = window_body(model, hyper), window_body(forward, hyper)
    _, vjp = jax.vjp(body, x0)
    sigma, change = spectral_norm(lambda v: jax.jvp(body_forward, (x0,), (v,))[1],
                                  lambda u: vjp(u)[0],
                                  jax.random.normal(key, x0.shape, x0.dtype), iterations)
    return {"sigma": sigma, "sigma_change": change,
            "lyapunov": lyapunov_exponent(sigma, horizon(model, hyper))}


def step_keys(key: jax.Array) -> dict[str, jax.Array]:
    """The keys :func:`make_robustness_step` draws with, from its ``key`` alone: ``substitution``
    (every rate), ``noise`` and ``start`` (power iteration)."""
    return {name: jax.random.fold_in(key, stream)
            for name, stream in (("substitution", _SUBSTITUTION), ("noise", _NOISE), ("start", _START))}


def _tag(value: float) -> str:
    return f"{float(value):g}"


def make_robustness_step(graphdef: nnx.GraphDef, forward_graphdef: nnx.GraphDef, rates: Sequence[float],
                         noise: float, budgets: Sequence[float], attack_steps: int,
                         iterations: int) -> Callable:
    """``step(params, hyper, tokens, targets, key) -> per-window measurements`` (jitted).

    Args:
      graphdef: the trained model's graph; ``forward_graphdef``: :func:`odeformer.forward_mode` of it.
      rates: substitution rates, each in ``[0, 1)``: ``sub_loss@<rate>``.
      noise: the embedding noise's absolute scale, >= 0: ``noise_loss``.
      budgets: attack budgets (RMS per position), each >= 0: ``attack_loss@<budget>``.
      attack_steps: PGD steps per attack, >= 1.
      iterations: power iterations for ``sigma``, >= 2.

    The step returns arrays ``[B]``: ``clean_loss``, the losses above, ``sigma``,
    ``sigma_change``, ``lyapunov``, ``embed_rms`` (the clean embeddings' RMS norm per position, the
    scale the absolute perturbations meet) and ``ok`` (every solve of the clean, substituted and noisy
    windows succeeded). The clean, substituted and noisy windows go through one forward pass, and
    every budget's attack through one PGD loop (``len(budgets) B`` windows). All arguments are
    structural; ``hyper`` and ``key`` are traced.

    Raises:
      ValueError: an argument outside its range, or two rates or budgets with the same name.
    """
    for i, rate in enumerate(rates):
        _check_range(f"rates[{i}]", rate, 0.0, 1.0)
    _check_range("noise", noise, 0.0)
    for i, budget in enumerate(budgets):
        _check_range(f"budgets[{i}]", budget, 0.0)
    _check_count("attack_steps", attack_steps, 1)
    _check_count("iterations", iterations, 2)
    for name, values in (("rates", rates), ("budgets", budgets)):
        tags = [_tag(v) for v in values]
        if len(set(tags)) != len(tags):
            raise ValueError(f"{name}={list(values)!r} name two columns alike ({', '.join(tags)})")
    rates, budgets = tuple(float(r) for r in rates), tuple(float(b) for b in budgets)

    def step(params, hyper, tokens, targets, key):
        model, forward = nnx.merge(graphdef, params), nnx.merge(forward_graphdef, params)
        keys, batch = step_keys(key), tokens.shape[0]
        losses = window_losses(model, hyper)
        x0 = model.embed(tokens)
        inputs = [x0, *(model.embed(substitute(keys["substitution"], tokens, r, model.vocab_size))
                         for r in rates), embedding_noise(keys["noise"], x0, noise)]
        loss, ok = losses(jnp.concatenate(inputs), jnp.tile(targets, (len(inputs), 1)))
        loss = loss.reshape(len(inputs), batch)
        out = {"clean_loss": loss[0], "noise_loss": loss[-1],
               "embed_rms": _norm(x0) / math.sqrt(x0.shape[1]),
               **{f"sub_loss@{_tag(r)}": loss[1 + i] for i, r in enumerate(rates)},
               "ok": ok.reshape(len(inputs), batch).all(0)}
        if budgets:
            tiled = jnp.tile(targets, (len(budgets), 1))
            _, attacked = attack(lambda x: losses(x, tiled)[0], jnp.tile(x0, (len(budgets), 1, 1)),
                                 jnp.repeat(jnp.asarray(budgets, x0.dtype), batch), attack_steps)
            attacked = attacked.reshape(len(budgets), batch)
            out.update({f"attack_loss@{_tag(b)}": attacked[i] for i, b in enumerate(budgets)})
        out.update(jacobian_norm(model, forward, hyper, x0, keys["start"], iterations))
        return out

    return jax.jit(step)


def summarise_robustness(measured: dict) -> dict[str, float]:
    """Per-window measurements -> the ``robust.*`` columns: the clean loss, each perturbation's
    mean loss change from it (``sub_delta@<rate>``, ``noise_delta``, ``attack_delta@<budget>``),
    the mean ``jacobian_norm``, ``lyapunov`` and ``embed_rms``, the largest ``jacobian_norm_change``
    (the worst converged window), ``windows`` and ``solved_ok``."""
    m = {k: np.asarray(v, np.float64) for k, v in jax.device_get(measured).items()}
    clean = m["clean_loss"]
    row: dict = {"robust.windows": int(clean.shape[0]), "robust.clean_loss": float(clean.mean())}

    def deltas(kind):  # in increasing rate or budget (a jitted step's keys come back sorted)
        tags = sorted((name.partition("@")[2] for name in m if name.startswith(f"{kind}_loss@")), key=float)
        return {f"robust.{kind}_delta@{tag}": float((m[f"{kind}_loss@{tag}"] - clean).mean()) for tag in tags}

    row.update({**deltas("sub"), "robust.noise_delta": float((m["noise_loss"] - clean).mean()),
                **deltas("attack"), "robust.jacobian_norm": float(m["sigma"].mean()),
                "robust.jacobian_norm_change": float(m["sigma_change"].max()),
                "robust.lyapunov": float(m["lyapunov"].mean()),
                "robust.embed_rms": float(m["embed_rms"].mean()),
                "robust.solved_ok": bool(m["ok"].all())})
    return row
