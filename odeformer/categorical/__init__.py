"""Categorical inputs as tokens: vocabularies, embedding layers, multi-valued features,
row-sharded lookups and row-sparse table updates.

Builds on ``odeformer.parallel`` (the mesh's ``model`` axis splits tables by rows).
"""

from odeformer.categorical.bags import COMBINERS, pool
from odeformer.categorical.embeddings import EMBEDDINGS, EmbeddingSpec, FeatureEmbedding, FeatureTokenizer
from odeformer.categorical.features import CategoricalFeature, TabularData, check_ids
from odeformer.categorical.sharded_lookup import lookup, onehot_lookup, padded_rows
from odeformer.categorical.sparse import EMBEDDING_OPTIMIZERS, RowGradient, SparseOptimizer, row_gradient
from odeformer.categorical.vocabulary import (
    PAD_ID,
    UNK_ID,
    Vocabulary,
    vocabularies_from_json,
    vocabularies_to_json,
)

__all__ = [
    "COMBINERS", "EMBEDDINGS", "EMBEDDING_OPTIMIZERS", "PAD_ID", "UNK_ID", "CategoricalFeature",
    "EmbeddingSpec", "FeatureEmbedding", "FeatureTokenizer", "RowGradient", "SparseOptimizer",
    "TabularData", "Vocabulary", "check_ids", "lookup", "onehot_lookup", "padded_rows", "pool",
    "row_gradient", "vocabularies_from_json", "vocabularies_to_json",
]
