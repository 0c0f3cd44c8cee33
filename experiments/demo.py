"""Solver accuracy and cost on a transformer-block field.

    python -m experiments.demo

Integrates one random pre-LN transformer-block field (tokens 16, width 32, 4 heads)
over [0, 1] with several solvers and step counts, and prints the error against a
tight Dopri8 reference next to the exact number of field evaluations.
"""

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

import odeformer

SOLVERS = ("euler", "midpoint", "rk4", "dopri5")
STEPS = (4, 16, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    jax.config.update("jax_enable_x64", True)
    field_key, data_key = jax.random.split(jax.random.key(seed))
    field = odeformer.TransformerBlockField(32, 4, rngs=nnx.Rngs(field_key))
    f, state = odeformer.vector_field(jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), field))
    x0 = jax.random.normal(data_key, (16, 32), jnp.float64)
    ref = odeformer.solve(f, x0, args=state, solver="dopri8", rtol=1e-12, atol=1e-12)

    print(f"{odeformer.count_params(field)} parameters; reference: dopri8 rtol=1e-12, "
          f"nfe={int(ref.stats['nfe'])}")
    print(f"{'solver':>9} {'order':>5} {'steps':>5} {'nfe':>5} {'max error':>10}")
    for name in SOLVERS:
        for steps in STEPS:
            sol = odeformer.solve(f, x0, args=state, solver=name, steps=steps)
            error = float(jnp.max(jnp.abs(sol.y1 - ref.y1)))
            print(f"{name:>9} {odeformer.solver_order(name):>5} {steps:>5} "
                  f"{int(sol.stats['nfe']):>5} {error:>10.2e}")
    sol = odeformer.solve(f, x0, args=state, solver="tsit5", rtol=1e-6, atol=1e-6)
    print(f"tsit5 adaptive rtol=atol=1e-6: steps={int(sol.stats['num_steps'])} "
          f"(rejected {int(sol.stats['num_rejected_steps'])}), nfe={int(sol.stats['nfe'])}, "
          f"error={float(jnp.max(jnp.abs(sol.y1 - ref.y1))):.2e}")


if __name__ == "__main__":
    main()
