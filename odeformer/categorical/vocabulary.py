"""Vocabularies: raw categorical values (strings or ints) to int32 embedding-table rows.

Row layout of a vocabulary of ``size`` rows::

    0                      PAD_ID: missing value (None, NaN, pd.NA) and padding
    1                      UNK_ID: unknown value (reserved even when hashing)
    2 .. 2+oov_buckets     hash buckets for unknown values (only when oov_buckets > 0)
    2+oov_buckets ..       known values, most frequent in the fitted data first;
                           ties ordered by the value's canonical string

A value's canonical form is a string: strings are themselves, integers (and integral floats,
which is what pandas makes of an int column with missing values) are ``str(int(value))``. So
``7``, ``7.0`` and ``"7"`` are the same value; ``"07"`` is another one. Unknown values hash by
CRC-32 of the canonical form's UTF-8 bytes, which is the same in every process, run and
platform (Python's ``hash`` of a string is salted per process).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from odeformer.categorical.features import check_ids

PAD_ID = 0
UNK_ID = 1


class Vocabulary:
    """The fitted vocabulary of one categorical feature. Build it with :meth:`fit`.

    Attributes:
      name: the feature's name (used in error messages and as the key in saved files).
      values: the known values' canonical strings, in row order (row ``first_value_row + i``).
      counts: int64 [size], how many of the fitted values landed in each row (missing values
        in row 0; values below ``min_count`` or beyond ``max_size`` in row 1 or their bucket).
      min_count, max_size, oov_buckets: the arguments the vocabulary was fitted with.
    """

    def __init__(self, name: str, values: Sequence[str], counts, *, min_count: int, max_size: int,
                 oov_buckets: int):
        _check_arguments(name, min_count, max_size, oov_buckets)
        self.name, self.min_count, self.max_size, self.oov_buckets = name, min_count, max_size, oov_buckets
        self.values = tuple(values)
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.shape != (self.size,):
            raise ValueError(f"vocabulary {name!r}: counts has shape {self.counts.shape}, expected "
                             f"({self.size},) = 2 reserved + {oov_buckets} buckets + {len(values)} values")
        self._index = pd.Index(np.asarray(self.values, dtype=object))
        if not self._index.is_unique:
            raise ValueError(f"vocabulary {name!r}: values are not unique")

    @classmethod
    def fit(cls, values, *, name: str, min_count: int = 1, max_size: int = 0,
            oov_buckets: int = 0) -> Vocabulary:
        """Builds the vocabulary of ``values`` (a 1-D array-like of strings or ints).

        Args:
          values: the training values; None/NaN/pd.NA are missing and count in row 0.
          name: the feature's name.
          min_count: values seen fewer times are left out (they encode as unknown); >= 1.
          max_size: if > 0, keep only the ``max_size`` most frequent values; >= 0.
          oov_buckets: if > 0, unknown values hash into this many rows instead of UNK_ID; >= 0.
        """
        _check_arguments(name, min_count, max_size, oov_buckets)
        keys, _ = _canonical(values, name)
        frequency = pd.Series(keys, dtype=object).value_counts()
        table = pd.DataFrame({"value": frequency.index.to_numpy(dtype=object),
                              "count": frequency.to_numpy()})
        table = table[table["count"] >= min_count].sort_values(
            ["count", "value"], ascending=[False, True], kind="stable")
        if max_size:
            table = table.iloc[:max_size]
        vocab = cls(name, table["value"].tolist(), np.zeros(2 + oov_buckets + len(table), np.int64),
                    min_count=min_count, max_size=max_size, oov_buckets=oov_buckets)
        vocab.counts = np.bincount(vocab.encode(values), minlength=vocab.size).astype(np.int64)
        return vocab

    @property
    def first_value_row(self) -> int:
        """Row of the most frequent known value: 2 reserved rows, then the hash buckets."""
        return 2 + self.oov_buckets

    @property
    def size(self) -> int:
        """Number of rows, i.e. the cardinality of the feature's ids."""
        return self.first_value_row + len(self.values)

    def encode(self, values) -> np.ndarray:
        """Maps values to int32 rows: missing -> PAD_ID, known -> its row, unknown -> UNK_ID/bucket."""
        keys, missing = _canonical(values, self.name)
        rows = self._index.get_indexer(keys)
        unknown = rows < 0
        rows = (rows + self.first_value_row).astype(np.int32)
        if self.oov_buckets and unknown.any():
            codes, distinct = pd.factorize(keys[unknown])
            buckets = np.fromiter((zlib.crc32(key.encode("utf-8")) % self.oov_buckets for key in distinct),
                                  np.int32, len(distinct))
            rows[unknown] = 2 + buckets[codes]
        else:
            rows[unknown] = UNK_ID
        ids = np.full(missing.shape, PAD_ID, np.int32)
        ids[~missing] = rows
        return ids

    def decode(self, ids) -> np.ndarray:
        """Maps rows back to canonical strings (object array); None for reserved and hash rows."""
        ids = np.asarray(ids)
        check_ids(f"vocabulary {self.name!r}: decode", ids, self.size)
        table = np.array([None] * self.first_value_row + list(self.values), dtype=object)
        return table[ids]

    def to_dict(self) -> dict:
        return {"name": self.name, "min_count": self.min_count, "max_size": self.max_size,
                "oov_buckets": self.oov_buckets, "values": list(self.values),
                "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        return cls(data["name"], data["values"], data["counts"], min_count=data["min_count"],
                   max_size=data["max_size"], oov_buckets=data["oov_buckets"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self.to_dict() == other.to_dict())

    __hash__ = None

    def __repr__(self) -> str:
        return (f"Vocabulary({self.name!r}, size={self.size}, values={len(self.values)}, "
                f"oov_buckets={self.oov_buckets})")


def vocabularies_to_json(vocabularies: Sequence[Vocabulary]) -> str:
    """One JSON text holding several features' vocabularies, in order."""
    return json.dumps({"vocabularies": [v.to_dict() for v in vocabularies]})


def vocabularies_from_json(text: str) -> dict[str, Vocabulary]:
    """Inverse of :func:`vocabularies_to_json`: feature name -> vocabulary, in saved order."""
    return {d["name"]: Vocabulary.from_dict(d) for d in json.loads(text)["vocabularies"]}


def _check_arguments(name, min_count, max_size, oov_buckets) -> None:
    for argument, value, low in (("min_count", min_count, 1), ("max_size", max_size, 0),
                                 ("oov_buckets", oov_buckets, 0)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"vocabulary {name!r}: {argument}={value!r} must be an integer >= {low}")


def _canonical(values, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (canonical strings of the present values as an object array, missing mask)."""
    try:
        series = values if isinstance(values, pd.Series) else pd.Series(values)
    except ValueError as error:
        raise ValueError(f"vocabulary {name!r}: values must be 1-D ({error})") from None
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    missing = series.isna().to_numpy()
    present = series[~missing]
    kind = infer_dtype(present, skipna=False)
    if kind in ("string", "empty"):
        keys = present.to_numpy(dtype=object)
    elif kind == "integer":
        keys = present.astype(str).to_numpy(dtype=object)
    elif kind == "floating":
        keys = _integral_floats(present.to_numpy(dtype=np.float64), name)
    elif kind in ("mixed-integer", "mixed-integer-float"):
        keys = np.array([_canonical_scalar(v, name) for v in present], dtype=object)
    else:
        types = ", ".join(sorted({type(v).__name__ for v in present}))
        raise ValueError(f"vocabulary {name!r}: values must be strings or integers (missing: None, "
                         f"NaN, pd.NA), got {kind} values of types {types}")
    return keys, missing


def _integral_floats(values: np.ndarray, name: str) -> np.ndarray:
    fractional = ~np.isfinite(values) | (values != np.round(values))
    if fractional.any():
        bad = float(values[fractional][0])
        raise ValueError(f"vocabulary {name!r}: float value {bad!r} is not an integer; "
                         f"values must be strings or integers")
    return values.astype(np.int64).astype(str).astype(object)


def _canonical_scalar(value, name: str) -> str:
    """Slow path for mixed columns (e.g. strings and ints), one value at a time."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    raise ValueError(f"vocabulary {name!r}: value {value!r} of type {type(value).__name__} is not a "
                     f"string or an integer")
