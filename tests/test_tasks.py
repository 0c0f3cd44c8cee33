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
