"""Parameter budgets resolve to shapes whose real parameter count is within 5%."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from odeformer import count_params
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.experiment import budgets
from odeformer.experiment.budgets import model_params, resolve_budget
from odeformer.experiment.models import (
    ModelShape,
    SequenceClassifier,
    SolverSpec,
    TabularClassifier,
    build_model,
)
from odeformer.experiment.tasks import TaskData

SIZES = dict(vocab_size=16, seq_len=9, num_classes=8)
_SPLIT = {"tokens": np.zeros((1, 9), np.int32), "label": np.zeros((1,), np.int32)}
DATA = TaskData(_SPLIT, _SPLIT, vocab_size=16, num_classes=8)
_TABLE = {"categorical": np.zeros((1, 2), np.int32), "numeric": np.zeros((1, 1), np.float32),
          "label": np.zeros((1,), np.int32)}
TABULAR = TabularData(_TABLE, _TABLE, (CategoricalFeature("a", 1000), CategoricalFeature("b", 7)),
                      ("x",), num_classes=2)


@pytest.mark.parametrize("shape", [ModelShape(), ModelShape(family="discrete", layers=6),
                                   ModelShape(time="piecewise", pieces=3)])
def test_abstract_count_equals_a_built_model(shape):
    model = SequenceClassifier(shape, SolverSpec(), rngs=nnx.Rngs(0), **SIZES)
    assert model_params(shape, DATA) == count_params(model)


@pytest.mark.parametrize("embedding", ["table", "onehot", "hashed", "qr"])
@pytest.mark.parametrize("shards", [1, 8])
def test_abstract_count_equals_a_built_tabular_model(embedding, shards):
    shape = ModelShape(width=16, heads=2, embedding=embedding)
    model = TabularClassifier(shape, SolverSpec(), data=TABULAR, shards=shards, rngs=nnx.Rngs(0))
    assert model_params(shape, TABULAR, shards) == count_params(model)


def test_tabular_budget_is_met():
    resolved, params = resolve_budget(ModelShape(heads=4), 60_000, TABULAR)
    assert abs(params - 60_000) <= 0.05 * 60_000


@pytest.mark.parametrize("budget", [20_000, 100_000])
@pytest.mark.parametrize("shape", [ModelShape(heads=4), ModelShape(family="discrete", layers=8)])
def test_budget_is_met(shape, budget):
    resolved, params = resolve_budget(shape, budget, DATA)
    assert abs(params - budget) <= 0.05 * budget
    assert params == model_params(resolved, DATA)
    assert resolved.width % resolved.heads == 0
    assert resolved.layers == shape.layers and resolved.family == shape.family


def test_width_divisible_by_heads_is_preferred():
    resolved, _ = resolve_budget(ModelShape(heads=4), 100_000, DATA)
    assert resolved.heads == 4 and resolved.width % 4 == 0


def test_unreachable_budget_is_an_error():
    with pytest.raises(ValueError, match="model.param_budget=50 cannot be met within 5%"):
        resolve_budget(ModelShape(), 50, DATA)


def test_each_distinct_count_is_made_once_and_keyed_by_what_it_depends_on(monkeypatch):
    """Counting traces the model's construction; a sweep's runs and budget searches share
    widths, so a count is made once per (shape, task sizes, shards), and never reused for
    a task of other sizes."""
    built = []

    def counting_build(shape, *args, **kwargs):
        built.append(shape)
        return build_model(shape, *args, **kwargs)

    monkeypatch.setattr(budgets, "_COUNTS", {})
    monkeypatch.setattr(budgets, "build_model", counting_build)
    shape = ModelShape(family="discrete", layers=3)
    first = resolve_budget(shape, 30_000, DATA)
    searched = len(built)
    assert searched == len(set(built))  # no width of one search is counted twice
    assert resolve_budget(shape, 30_000, DATA) == first and len(built) == searched
    resolve_budget(shape, 40_000, DATA)  # shares the search's first widths
    assert searched < len(built) < 2 * searched
    counted = dataclasses.replace(first[0], heads=1)  # as the search counted it: cached
    params, width = model_params(counted, DATA), counted.width
    assert params == first[1]
    wider_vocab = TaskData(_SPLIT, _SPLIT, vocab_size=1016, num_classes=8)
    assert model_params(counted, wider_vocab) == params + 1000 * width  # embedding rows
    longer = {"tokens": np.zeros((1, 10), np.int32), "label": np.zeros((1,), np.int32)}
    assert model_params(counted, TaskData(longer, longer, vocab_size=16, num_classes=8)) \
        == params + width  # one more position
    assert model_params(counted, TaskData(_SPLIT, _SPLIT, vocab_size=16, num_classes=9)) \
        == params + width + 1  # one more class in the head
    more_rows = TabularData(_TABLE, _TABLE, (CategoricalFeature("a", 2000), CategoricalFeature("b", 7)),
                            ("x",), num_classes=2)
    tabular = ModelShape(width=16, heads=2)
    assert model_params(tabular, more_rows) == model_params(tabular, TABULAR) + 1000 * 16
    assert model_params(tabular, TABULAR, shards=8) > model_params(tabular, TABULAR)
    no_numeric = TabularData(_TABLE, _TABLE, TABULAR.categorical, (), num_classes=2)
    assert model_params(tabular, no_numeric) < model_params(tabular, TABULAR)
