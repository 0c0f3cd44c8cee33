"""What a categorical input is: features with a cardinality, tabular data, id checks.

Every id is checked against its range where data enters (:func:`check_ids`): an embedding
lookup never checks it (JAX clamps a plain gather; the row-sharded lookup returns zeros).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
    """One categorical input: ids lie in ``[0, cardinality)`` (reserved rows included)."""

    name: str
    cardinality: int


@dataclasses.dataclass(frozen=True)
class TabularData:
    """Train/test arrays of a tabular task and what a model and the runner need.

    Attributes:
      train, test: dicts with ``categorical`` (int32, [N, F], column f in
        ``[0, categorical[f].cardinality)``), ``numeric`` (float32, [N, G], finite) and
        ``label`` (int32, [N]); with multi-valued features also ``bag_ids`` (int32,
        [N, M, L], feature m's ids in ``[0, bags[m].cardinality)``, padding ``PAD_ID``) and
        ``bag_weights`` (float32, [N, M, L], 0 marks padding; see ``odeformer.categorical.bags``).
      categorical: the F categorical features, in column order.
      numeric: names of the G numeric columns, in order (may be empty: shape [N, 0]).
      num_classes: labels lie in ``[0, num_classes)``.
      bags: the M multi-valued features, in the order of ``bag_ids``' axis 1 (may be empty:
        then the splits have no ``bag_ids``/``bag_weights``).
      artifacts: file name -> text written into every run's directory (the fitted
        vocabularies, so a run's ids can be decoded and new data encoded the same way).
      clusters: feature name -> int array [cardinality], the hidden cluster of each id
        (-1 where there is none, e.g. reserved rows); synthetic tasks only.
      train_counts: feature name -> int array [cardinality], occurrences of each id in
        the train split.
    """

    train: dict[str, jax.Array]
    test: dict[str, jax.Array]
    categorical: tuple[CategoricalFeature, ...]
    numeric: tuple[str, ...]
    num_classes: int
    bags: tuple[CategoricalFeature, ...] = ()
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    clusters: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    train_counts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def check_ids(where: str, ids, cardinality: int) -> None:
    """Raises ValueError unless ``ids`` are integers in ``[0, cardinality)``.

    ``where`` names the feature in the message, e.g. ``"task 'flights': train tailnum"``.
    """
    values = np.asarray(ids)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{where}: ids must be integers, got {values.dtype}")
    if values.size and (values.min() < 0 or values.max() >= cardinality):
        bad = values[(values < 0) | (values >= cardinality)][0]
        raise ValueError(f"{where}: id {bad} is outside [0, {cardinality})")
