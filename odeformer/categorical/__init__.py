"""Categorical inputs as tokens: vocabularies, embedding layers, row-sharded lookups.

Builds on ``odeformer.parallel`` (the mesh's ``model`` axis splits tables by rows).
"""

from odeformer.categorical.embeddings import EMBEDDINGS, EmbeddingSpec, FeatureEmbedding, FeatureTokenizer
from odeformer.categorical.features import CategoricalFeature, TabularData, check_ids
from odeformer.categorical.sharded_lookup import lookup, onehot_lookup, padded_rows
from odeformer.categorical.vocabulary import (
    PAD_ID,
    UNK_ID,
    Vocabulary,
    vocabularies_from_json,
    vocabularies_to_json,
)

__all__ = [
    "EMBEDDINGS", "PAD_ID", "UNK_ID", "CategoricalFeature", "EmbeddingSpec", "FeatureEmbedding",
    "FeatureTokenizer", "TabularData", "Vocabulary", "check_ids", "lookup", "onehot_lookup",
    "padded_rows", "vocabularies_from_json", "vocabularies_to_json",
]
