"""odeformer: continuous-depth attention in JAX, integrated with Diffrax.

The core (this namespace): the functional solver API (:func:`solve`), the solver table,
attention vector fields, time dependence of weights, and :class:`ODEBlock`. Subpackages
build on it and are imported explicitly:

- ``odeformer.categorical``: vocabularies, embedding layers, row-sharded lookups.
- ``odeformer.language``: text corpora, causal language models, FLOP counts, sampling.
- ``odeformer.parallel``: device meshes, placement, multi-process runs, host memory.
- ``odeformer.experiment``: tasks, models, training, sweeps and the runner.
- ``odeformer.analysis``: reading results tables (seeds, error bars, budgets).

Importing ``odeformer`` registers nothing and needs neither pandas nor ml_collections.
"""

from odeformer._block import ODEBlock, count_params, forward_mode, vector_field
from odeformer._compile_options import (
    compiler_options,
    configure_compilation_cache,
    default_cache_dir,
    use_compilation_cache,
)
from odeformer._fields import (
    ATTENTION_IMPLEMENTATIONS,
    MLP,
    SIGMAS,
    AttentionField,
    MultiHeadAttention,
    SeedAttentionField,
    TransformerBlockField,
    attend,
)
from odeformer._integrate import ADJOINTS, Solution, solve
from odeformer._solvers import ADAPTIVE_SOLVERS, SOLVERS, solver_order
from odeformer._time_dependence import TIME_MODES, TimeLayerNorm, TimeLinear, TimeParam, TimeSpec

__all__ = [
    "ADAPTIVE_SOLVERS", "ADJOINTS", "ATTENTION_IMPLEMENTATIONS", "MLP", "SIGMAS", "SOLVERS", "TIME_MODES",
    "AttentionField",
    "MultiHeadAttention", "ODEBlock", "SeedAttentionField", "Solution", "TimeLayerNorm", "TimeLinear",
    "TimeParam", "TimeSpec", "TransformerBlockField", "attend", "compiler_options",
    "configure_compilation_cache", "count_params", "default_cache_dir", "forward_mode", "solve",
    "solver_order", "use_compilation_cache", "vector_field",
]
