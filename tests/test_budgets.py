"""Parameter budgets resolve to shapes whose real parameter count is within 5%."""

import pytest
from flax import nnx

from odeformer import count_params
from odeformer.budgets import model_params, resolve_budget
from odeformer.models import ModelShape, SequenceClassifier, SolverSpec

SIZES = dict(vocab_size=16, seq_len=9, num_classes=8)


@pytest.mark.parametrize("shape", [ModelShape(), ModelShape(family="discrete", layers=6),
                                   ModelShape(time="piecewise", pieces=3)])
def test_abstract_count_equals_a_built_model(shape):
    model = SequenceClassifier(shape, SolverSpec(), rngs=nnx.Rngs(0), **SIZES)
    assert model_params(shape, **SIZES) == count_params(model)


@pytest.mark.parametrize("budget", [20_000, 100_000])
@pytest.mark.parametrize("shape", [ModelShape(heads=4), ModelShape(family="discrete", layers=8)])
def test_budget_is_met(shape, budget):
    resolved, params = resolve_budget(shape, budget, **SIZES)
    assert abs(params - budget) <= 0.05 * budget
    assert params == model_params(resolved, **SIZES)
    assert resolved.width % resolved.heads == 0
    assert resolved.layers == shape.layers and resolved.family == shape.family


def test_width_divisible_by_heads_is_preferred():
    resolved, _ = resolve_budget(ModelShape(heads=4), 100_000, **SIZES)
    assert resolved.heads == 4 and resolved.width % 4 == 0


def test_unreachable_budget_is_an_error():
    with pytest.raises(ValueError, match="model.param_budget=50 cannot be met within 5%"):
        resolve_budget(ModelShape(), 50, **SIZES)
