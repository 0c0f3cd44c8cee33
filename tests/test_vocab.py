"""Vocabulary: row order, thresholds, reserved rows, stable hashing, counts, save/load."""

import collections
import os
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pytest

from odeformer.categorical.vocabulary import (
    PAD_ID,
    UNK_ID,
    Vocabulary,
    vocabularies_from_json,
    vocabularies_to_json,
)

TRAIN = ["b", "a", "c", "b", "a", "d", "b", None]  # b:3 a:2 c:1 d:1, one missing


def test_rows_follow_descending_count_then_string_order():
    vocab = Vocabulary.fit(TRAIN, name="x")
    assert vocab.values == ("b", "a", "c", "d")  # c and d tie at 1: string order
    assert vocab.size == 6 and vocab.first_value_row == 2
    np.testing.assert_array_equal(vocab.encode(["b", "a", "c", "d"]), [2, 3, 4, 5])
    # Ties compare canonical strings, so 10 sorts before 9.
    assert Vocabulary.fit([9, 10, 3, 3], name="n").values == ("3", "10", "9")


def test_order_matches_a_counter_reference_on_random_data():
    raw = np.random.default_rng(0).zipf(1.5, 20_000) % 3_000
    vocab = Vocabulary.fit(raw, name="z", min_count=3, max_size=500)
    counter = collections.Counter(str(v) for v in raw)
    expected = sorted((k for k, c in counter.items() if c >= 3), key=lambda k: (-counter[k], k))[:500]
    assert vocab.values == tuple(expected)
    ids = vocab.encode(raw)
    reference = {k: 2 + i for i, k in enumerate(expected)}
    np.testing.assert_array_equal(ids, [reference.get(str(v), UNK_ID) for v in raw])


def test_min_count_and_max_size_send_the_rest_to_unknown():
    vocab = Vocabulary.fit(TRAIN, name="x", min_count=2)
    assert vocab.values == ("b", "a")
    np.testing.assert_array_equal(vocab.encode(["a", "c", "d", "zzz"]), [3, UNK_ID, UNK_ID, UNK_ID])
    np.testing.assert_array_equal(vocab.counts, [1, 2, 3, 2])  # c and d counted as unknown
    assert Vocabulary.fit(TRAIN, name="x", max_size=1).values == ("b",)
    assert Vocabulary.fit(TRAIN, name="x", max_size=3).values == ("b", "a", "c")  # tie cut by string
    assert Vocabulary.fit(TRAIN, name="x", min_count=4).values == ()


def test_missing_values_go_to_row_zero_and_are_counted_there():
    vocab = Vocabulary.fit(TRAIN + [np.nan, pd.NA], name="x")
    np.testing.assert_array_equal(vocab.encode([None, np.nan, pd.NA, "b", "new"]), [PAD_ID] * 3 + [2, UNK_ID])
    np.testing.assert_array_equal(vocab.counts, [3, 0, 3, 2, 1, 1])
    assert vocab.counts.sum() == len(TRAIN) + 2
    # An int column with missing values arrives as floats.
    ints = Vocabulary.fit(pd.Series([5, None, 5, 8]), name="i")
    assert ints.values == ("5", "8")
    np.testing.assert_array_equal(ints.counts, [1, 0, 2, 1])


def test_counts_are_the_histogram_of_the_fitted_rows():
    raw = np.random.default_rng(1).integers(0, 400, 5_000).astype(object)
    raw[::7] = None
    vocab = Vocabulary.fit(raw, name="r", min_count=15, oov_buckets=5)
    assert vocab.counts.sum() == 5_000 and vocab.counts[PAD_ID] == len(raw[::7])
    np.testing.assert_array_equal(vocab.counts, np.bincount(vocab.encode(raw), minlength=vocab.size))
    assert vocab.counts[UNK_ID] == 0  # hashing on: row 1 stays reserved and empty


def test_ints_and_their_strings_are_one_value():
    vocab = Vocabulary.fit([7, 7, 3], name="i")
    ids = vocab.encode(["7", 7.0, np.int64(7), 3, "3", "07", 4])
    np.testing.assert_array_equal(ids, [2, 2, 2, 3, 3, UNK_ID, UNK_ID])
    np.testing.assert_array_equal(vocab.encode(["7", 3]), vocab.encode(np.array([7, 3])))


def test_unknowns_hash_by_crc32_into_the_buckets():
    vocab = Vocabulary.fit(["a", "a", "b"], name="h", oov_buckets=16)
    assert vocab.size == 2 + 16 + 2 and vocab.values == ("a", "b")
    unknown = [f"user{i}" for i in range(4_000)]
    ids = vocab.encode(unknown)
    np.testing.assert_array_equal(ids, [2 + zlib.crc32(k.encode()) % 16 for k in unknown])
    per_bucket = np.bincount(ids, minlength=vocab.size)[2:18]
    assert per_bucket.min() > 180 and per_bucket.max() < 320  # 250 expected; about 16 per bucket
    np.testing.assert_array_equal(vocab.encode(["a", "b", None]), [18, 19, PAD_ID])


def test_hash_buckets_survive_refitting_json_and_a_new_process():
    vocab = Vocabulary.fit(["a", "b"], name="h", oov_buckets=1000)
    probe = ["x", "y", "zebra", "12345", 12345]
    ids = vocab.encode(probe)
    assert ids[3] == ids[4]
    np.testing.assert_array_equal(Vocabulary.fit(["b", "a"], name="h", oov_buckets=1000).encode(probe), ids)
    np.testing.assert_array_equal(Vocabulary.from_json(vocab.to_json()).encode(probe), ids)
    code = ("import sys; from odeformer.categorical.vocabulary import Vocabulary; "
            "v = Vocabulary.from_json(sys.stdin.read()); "
            "print(*v.encode(['x', 'y', 'zebra', '12345', 12345]))")
    for seed in ("1", "2"):  # Python's own str hash differs between these processes
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.getcwd()}
        out = subprocess.run([sys.executable, "-c", code], input=vocab.to_json(), env=env,
                             capture_output=True, text=True, check=True).stdout
        assert [int(i) for i in out.split()] == ids.tolist()


def test_json_round_trip_is_equal_and_several_vocabularies_keep_order():
    vocab = Vocabulary.fit(TRAIN, name="x", min_count=2, max_size=5, oov_buckets=3)
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab and again.counts.dtype == np.int64
    assert vocab != Vocabulary.fit(TRAIN, name="x", min_count=2, max_size=5, oov_buckets=4)
    other = Vocabulary.fit([1, 2, 2], name="y")
    loaded = vocabularies_from_json(vocabularies_to_json([other, vocab]))
    assert list(loaded) == ["y", "x"] and loaded["x"] == vocab and loaded["y"] == other


def test_decode_inverts_encode_on_known_rows():
    vocab = Vocabulary.fit(TRAIN, name="x", oov_buckets=2)
    ids = vocab.encode(["d", "b", None, "new"])
    assert vocab.decode(ids).tolist() == ["d", "b", None, None]
    with pytest.raises(ValueError, match=r"vocabulary 'x': decode: id 8 is outside \[0, 8\)"):
        vocab.decode([8])


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_count=0), "vocabulary 'x': min_count=0 must be an integer >= 1"),
    (dict(max_size=-1), "vocabulary 'x': max_size=-1 must be an integer >= 0"),
    (dict(oov_buckets=-2), "vocabulary 'x': oov_buckets=-2 must be an integer >= 0"),
    (dict(min_count=1.5), "vocabulary 'x': min_count=1.5 must be an integer >= 1"),
])
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary.fit(TRAIN, name="x", **kwargs)


@pytest.mark.parametrize("values, message", [
    ([1.5, 2.0], "float value 1.5 is not an integer"),
    ([True, False], "got boolean values"),
    (["a", 2.5], "got mixed values of types float, str"),
    (np.zeros((2, 2)), "values must be 1-D"),
])
def test_values_must_be_strings_or_integers(values, message):
    with pytest.raises(ValueError, match=f"vocabulary 'x': .*{message}"):
        Vocabulary.fit(values, name="x")
