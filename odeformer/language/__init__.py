"""Text corpora for character-level language modelling."""

from odeformer.language.corpus import (
    PLAYS,
    SPLITS,
    CharVocabulary,
    Corpus,
    load_corpus,
    play_text,
    shakespeare,
)

__all__ = ["PLAYS", "SPLITS", "CharVocabulary", "Corpus", "load_corpus", "play_text", "shakespeare"]
