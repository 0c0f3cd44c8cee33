"""odeformer: continuous-depth attention in JAX, integrated with Diffrax."""

from odeformer import datasets  # noqa: F401  (registers the tabular tasks)
from odeformer.block import ODEBlock, vector_field
from odeformer.compile_options import compiler_options
from odeformer.embeddings import EMBEDDINGS, EmbeddingSpec, FeatureEmbedding, FeatureTokenizer
from odeformer.fields import (
    MLP,
    SIGMAS,
    AttentionField,
    MultiHeadAttention,
    SeedAttentionField,
    TransformerBlockField,
)
from odeformer.host_memory import reuse_host_memory
from odeformer.microbatch import accumulate
from odeformer.params import count_params
from odeformer.sharding import make_mesh
from odeformer.solve import ADJOINTS, Solution, solve
from odeformer.solvers import ADAPTIVE_SOLVERS, SOLVERS, solver_order
from odeformer.studies import clustering, convergence  # noqa: F401  (registers the studies)
from odeformer.time import TIME_MODES, TimeLayerNorm, TimeLinear, TimeParam, TimeSpec
from odeformer.vocab import Vocabulary

__all__ = [
    "ADAPTIVE_SOLVERS", "ADJOINTS", "EMBEDDINGS", "MLP", "SIGMAS", "SOLVERS", "TIME_MODES",
    "AttentionField", "EmbeddingSpec", "FeatureEmbedding", "FeatureTokenizer", "MultiHeadAttention",
    "ODEBlock", "SeedAttentionField", "Solution", "TimeLayerNorm", "TimeLinear", "TimeParam", "TimeSpec",
    "TransformerBlockField", "Vocabulary", "accumulate", "compiler_options", "count_params", "make_mesh",
    "reuse_host_memory", "solve", "solver_order", "vector_field",
]
