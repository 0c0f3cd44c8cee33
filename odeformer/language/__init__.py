"""Character-level language modelling: text corpora, causal language models whose body is a
transformer stack or a flow over depth, their FLOP counts, and sampling."""

from odeformer.language.corpus import (
    PLAYS,
    SPLITS,
    CharVocabulary,
    Corpus,
    load_corpus,
    play_text,
    shakespeare,
)
from odeformer.language.flops import attention_flops, forward_flops_per_token, mlp_flops, nominal_nfe
from odeformer.language.models import FAMILIES, FORMS, Block, LanguageModel, non_embedding_params
from odeformer.language.sampling import generate

__all__ = ["FAMILIES", "FORMS", "PLAYS", "SPLITS", "Block", "CharVocabulary", "Corpus", "LanguageModel",
           "attention_flops", "forward_flops_per_token", "generate", "load_corpus", "mlp_flops",
           "nominal_nfe", "non_embedding_params", "play_text", "shakespeare"]
