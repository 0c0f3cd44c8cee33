"""Synthetic tasks: labels checked by brute force, determinism, validation."""

import ml_collections
import numpy as np
import pytest

from odeformer.experiment.tasks import TASKS, make_task


def _config(**kw):
    base = dict(name="associative_recall", seed=0, vocab_size=6, seq_len=9, num_train=50, num_test=20)
    return ml_collections.ConfigDict({**base, **kw})


def test_associative_recall_labels_by_brute_force():
    data = make_task(_config())
    tokens, labels = np.asarray(data.train["tokens"]), np.asarray(data.train["label"])
    assert tokens.shape == (50, 9) and data.vocab_size == 12 and data.num_classes == 6
    for seq, label in zip(tokens, labels, strict=True):
        keys, values, query = seq[0:8:2], seq[1:8:2], seq[8]
        assert len(set(keys)) == 4 and keys.max() < 6 and values.min() >= 6
        assert values[list(keys).index(query)] - 6 == label


def test_majority_labels_by_brute_force():
    data = make_task(_config(name="majority", vocab_size=3, seq_len=7))
    for seq, label in zip(np.asarray(data.test["tokens"]), np.asarray(data.test["label"]), strict=True):
        counts = np.bincount(seq, minlength=3)
        assert label == int(np.argmax(counts))  # first maximum: smallest id wins ties


@pytest.mark.parametrize("name", ["associative_recall", "majority"])
def test_tasks_are_deterministic_in_the_seed(name):
    a, b = make_task(_config(name=name)), make_task(_config(name=name))
    c = make_task(_config(name=name, seed=1))
    np.testing.assert_array_equal(a.train["tokens"], b.train["tokens"])
    assert not np.array_equal(a.train["tokens"], c.train["tokens"])
    assert a.test["tokens"].shape[0] == 20 and a.train["tokens"].shape[0] == 50


def test_task_errors():
    names = "associative_recall, flights, majority, synthetic_categorical"
    with pytest.raises(ValueError, match=f"task.name='nope' is not one of {names}"):
        make_task(_config(name="nope"))
    with pytest.raises(ValueError, match="task.seq_len=8 must be odd"):
        make_task(_config(seq_len=8))


def test_a_registered_task_with_out_of_range_ids_is_refused():
    import jax.numpy as jnp

    from odeformer.experiment.tasks import TaskData, register_task

    @register_task("broken_for_test")
    def broken(config, key):
        split = {"tokens": jnp.array([[0, 5]], jnp.int32), "label": jnp.array([0], jnp.int32)}
        return TaskData(split, split, vocab_size=5, num_classes=2)

    message = r"task 'broken_for_test': train tokens: id 5 is outside \[0, 5\)"
    try:
        with pytest.raises(ValueError, match=message):
            make_task(_config(name="broken_for_test"))
    finally:
        TASKS.pop("broken_for_test")


def _bag_split(**arrays):
    split = {"categorical": np.zeros((2, 0), np.int32), "numeric": np.zeros((2, 0), np.float32),
             "label": np.zeros(2, np.int32), "bag_ids": np.array([[[2, 6, 0]], [[1, 0, 0]]], np.int32),
             "bag_weights": np.array([[[1.0, 0.5, 0.0]], [[2.0, 0.0, 0.0]]], np.float32)}
    return {k: v for k, v in {**split, **arrays}.items() if v is not None}


@pytest.mark.parametrize("arrays, bags, message", [
    ({}, 1, None),  # valid: padding, weights 0.5 and 2
    ({"bag_ids": np.array([[[2, 7, 0]], [[1, 0, 0]]], np.int32)}, 1,
     r"train genres: id 7 is outside \[0, 7\)"),
    ({"bag_ids": np.array([[[2, 6, -1]], [[1, 0, 0]]], np.int32)}, 1,
     r"train genres: id -1 is outside \[0, 7\)"),
    ({"bag_weights": np.array([[[1.0, -0.5, 0.0]], [[2.0, 0.0, 0.0]]], np.float32)}, 1,
     r"train genres: weight -0.5 is not a finite number >= 0 \(0 marks padding\)"),
    ({"bag_weights": np.array([[[1.0, np.nan, 0.0]], [[2.0, 0.0, 0.0]]], np.float32)}, 1,
     "train genres: weight nan is not a finite number >= 0"),
    ({"bag_weights": np.ones((2, 1, 2), np.float32)}, 1,
     r"train: bag_ids \(2, 1, 3\) and bag_weights \(2, 1, 2\) must both be \[2 labels, 1 multi-valued "
     r"features, L values\]"),
    ({}, 2, r"train: bag_ids \(2, 1, 3\) and bag_weights \(2, 1, 3\) must both be \[2 labels, 2 multi"),
    ({"bag_ids": np.zeros((2, 3), np.int32)}, 1, r"train: bag_ids \(2, 3\) and bag_weights \(2, 1, 3\)"),
    ({"bag_weights": np.ones((2, 1, 3), np.int32)}, 1, "train: bag_weights must be floats, got int32"),
    ({"bag_weights": None}, 1, "train: bag_weights missing for the multi-valued features genres"),
    ({}, 0, "train: bag_ids and bag_weights given but the task declares no multi-valued features"),
])
def test_multi_valued_features_are_checked_where_data_enters(arrays, bags, message):
    from odeformer.categorical.features import CategoricalFeature, TabularData
    from odeformer.experiment.tasks import TASK_KEYS, register_task

    @register_task("bags_for_test", keys={})
    def with_bags(config, key):
        features = (CategoricalFeature("genres", 7), CategoricalFeature("tags", 3))[:bags]
        return TabularData(_bag_split(**arrays), _bag_split(), (), (), num_classes=2, bags=features)

    try:
        if message is None:
            assert make_task(_config(name="bags_for_test")).bags[0].name == "genres"
        else:
            with pytest.raises(ValueError, match=f"task 'bags_for_test': {message}"):
                make_task(_config(name="bags_for_test"))
    finally:
        TASKS.pop("bags_for_test")
        TASK_KEYS.pop("bags_for_test")
