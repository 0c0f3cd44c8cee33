"""Guo & Berkhahn's MLP (model.family='mlp'): each arm against a hand-written NumPy network in
float64, FLOPs and parameters counted by hand, the config's rules for the family, and the
:tiny config of configs/entity_embeddings.py through the runner."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from odeformer import count_params
from odeformer.categorical.embeddings import EmbeddingSpec
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.experiment import config as run_config
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.sweeps import expand
from odeformer.experiment.tabular_mlp import TabularMLP, forward_flops

REPO = Path(__file__).resolve().parents[1]
CARDINALITIES = (7, 13, 5)


def _data(rows: int = 9, numeric: int = 2, seed: int = 0) -> TabularData:
    rng = np.random.default_rng(seed)
    categorical = np.stack([rng.integers(0, v, rows) for v in CARDINALITIES], axis=1).astype(np.int32)
    split = {"categorical": jnp.asarray(categorical),
             "numeric": jnp.asarray(rng.standard_normal((rows, numeric))),
             "label": jnp.asarray(rng.integers(0, 2, rows).astype(np.int32))}
    return TabularData(train=split, test=split, categorical=tuple(
        CategoricalFeature(f"f{i}", v) for i, v in enumerate(CARDINALITIES)),
        numeric=tuple(f"x{j}" for j in range(numeric)), num_classes=2)


def _logits(model, data):
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, c, x: nnx.merge(graphdef, s)(c, x))
    logits, stats = run(state, data.train["categorical"], data.train["numeric"])
    return np.asarray(logits), stats


def _dense_tail(model, h: np.ndarray) -> np.ndarray:
    """ReLU of the first layer's pre-activation ``h``, the hidden layers, the head (NumPy)."""
    h = np.maximum(h, 0.0)
    for layer in model.hidden:
        h = np.maximum(h @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...]), 0.0)
    return h @ np.asarray(model.head.kernel[...]) + np.asarray(model.head.bias[...])


def _first_bias(model) -> np.ndarray:
    t = model.tokenizer
    return np.asarray(t.categorical_bias[...]).sum(0) + np.asarray(t.numeric_bias[...]).sum(0)


def test_the_onehot_arm_is_a_dense_network_on_concatenated_one_hots(x64):
    data = _data()
    model = TabularMLP(16, 3, EmbeddingSpec(kind="onehot", dim=16), data=data, rngs=nnx.Rngs(0))
    for bias in (model.tokenizer.categorical_bias, model.tokenizer.numeric_bias):  # zero at init: test them
        bias[...] = jax.random.normal(jax.random.key(1), bias.shape)
    assert all(p is None for p in model.tokenizer.projections)  # W_f stored whole, no P_f
    cat, num = np.asarray(data.train["categorical"]), np.asarray(data.train["numeric"])
    inputs = np.concatenate([np.eye(v)[cat[:, f]] for f, v in enumerate(CARDINALITIES)] + [num], axis=1)
    kernel = np.concatenate([np.asarray(e.rows[...]) for e in model.tokenizer.embeddings]
                            + [np.asarray(model.tokenizer.numeric_weight[...])], axis=0)
    assert inputs.shape == (9, 7 + 13 + 5 + 2) and kernel.shape == (27, 16)
    expected = _dense_tail(model, inputs @ kernel + _first_bias(model))
    logits, stats = _logits(model, data)
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits, expected, rtol=1e-12, atol=1e-12)
    assert int(stats["nfe"]) == 0 and int(stats["num_steps"]) == 0 and bool(stats["ok"])


def test_the_table_arm_is_embeddings_then_their_projection_then_the_network(x64):
    data = _data()
    model = TabularMLP(16, 2, EmbeddingSpec(kind="table", dim=3), data=data, rngs=nnx.Rngs(0))
    cat, num = np.asarray(data.train["categorical"]), np.asarray(data.train["numeric"])
    t = model.tokenizer
    pre = num @ np.asarray(t.numeric_weight[...]) + _first_bias(model)
    for f, (embed, proj) in enumerate(zip(t.embeddings, t.projections, strict=True)):
        table = np.asarray(embed.rows[...])
        assert table.shape == (CARDINALITIES[f], 3)
        pre = pre + table[cat[:, f]] @ np.asarray(proj.kernel[...])  # E_f[id] P_f
    np.testing.assert_allclose(_logits(model, data)[0], _dense_tail(model, pre), rtol=1e-12, atol=1e-12)


def test_a_table_at_the_one_hot_scale_and_width_is_the_one_hot_network(x64):
    """Same draws, same function: the lookup is not what separates the arms."""
    data = _data()
    onehot = TabularMLP(8, 2, EmbeddingSpec(kind="onehot", dim=8), data=data, rngs=nnx.Rngs(3))
    table = TabularMLP(8, 2, EmbeddingSpec(kind="table", dim=8, init="onehot"), data=data, rngs=nnx.Rngs(3))
    for a, b in zip(jax.tree.leaves(nnx.state(onehot)), jax.tree.leaves(nnx.state(table)), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(_logits(onehot, data)[0], _logits(table, data)[0], rtol=1e-13, atol=1e-13)
    std = np.asarray(table.tokenizer.embeddings[1].rows[...]).std()
    assert 0.5 / np.sqrt(13) < std < 1.5 / np.sqrt(13)  # the one-hot kernel's 1/sqrt(V)


def test_flops_and_parameters_by_hand():
    data = _data(numeric=2)  # V = 7, 13, 5; G = 2; two classes
    width = 6
    onehot = TabularMLP(width, 3, EmbeddingSpec(kind="onehot", dim=width), data=data, rngs=nnx.Rngs(0))
    table = TabularMLP(width, 3, EmbeddingSpec(kind="table", dim=4), data=data, rngs=nnx.Rngs(0))
    hidden = 2 * (2 * width * width) + 2 * width * 2  # two width x width layers, the head
    assert forward_flops(onehot, "matmul") == 2 * 25 * width + 2 * 2 * width + hidden
    assert forward_flops(onehot, "lookup") == 2 * 2 * width + hidden
    assert forward_flops(table, "matmul") == forward_flops(table, "lookup") == (
        3 * 2 * 4 * width + 2 * 2 * width + hidden)
    # W_f (or E_f and P_f), a bias row per feature, numeric weights and biases, [CLS], the dense layers.
    dense = 2 * (width * width + width) + width * 2 + 2
    shared = 3 * width + 2 * width + 2 * width + width + dense
    assert count_params(onehot) == 25 * width + shared
    assert count_params(table) == 25 * 4 + 3 * 4 * width + shared
    with pytest.raises(ValueError, match="onehot='gather' is not one of matmul, lookup"):
        forward_flops(onehot, "gather")


def test_build_model_makes_the_mlp_for_tabular_data_only():
    data = _data()
    shape = ModelShape(family="mlp", width=12, layers=2, embedding="table", embed_dim=0, embed_init="onehot")
    model = build_model(shape, SolverSpec(), data, rngs=nnx.Rngs(0))
    assert isinstance(model, TabularMLP) and len(model.hidden) == 1
    assert model.tokenizer.embeddings[0].dim == 10  # the rule: ceil(6 * 7 ** 0.25) = 10 < width
    with pytest.raises(ValueError, match="model.layers=0 must be >= 1"):
        TabularMLP(4, 0, EmbeddingSpec(), data=data, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="apply to the ode family only"):
        model.classify(model.embed(data.train["categorical"], data.train["numeric"]), penalties=("kinetic",))


def test_a_train_step_learns_with_the_training_code():
    from odeformer.experiment.training import init_state, make_optimizer, make_train_step

    data = _data(rows=64)
    config = run_config.defaults()
    config.train.update(num_steps=40, warmup_steps=1, learning_rate=3e-2, batch_size=64, weight_decay=0.0)
    tx = make_optimizer(config.train)
    graphdef, params = nnx.split(TabularMLP(16, 2, EmbeddingSpec(kind="onehot", dim=16), data=data,
                                            rngs=nnx.Rngs(0)))
    state = init_state(params, tx, config.solver)
    step = make_train_step(graphdef, tx, 64)
    losses = []
    for _ in range(40):
        state, metrics = step(state, data.train, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0] and int(state["failed_at"]) == -1


# --- the config's rules ----------------------------------------------------------------------------

def _tabular_config(**model) -> ml_collections.ConfigDict:
    c = run_config.defaults()
    c.task = run_config.task_section("synthetic_categorical", cardinality=50, num_train=200, num_test=50)
    c.model.update(family="mlp", **model)
    return c


def test_the_mlp_family_is_refused_on_a_sequence_task():
    c = run_config.defaults()
    c.model.family = "mlp"
    with pytest.raises(ValueError, match=r"model.family='mlp' does not apply to "
                                         r"task.name='associative_recall' \(a classification task\); "
                                         r"use one of ode, discrete "
                                         r"\(mlp: tabular tasks only\)"):
        expand(c)


def test_solver_and_attention_keys_of_the_mlp_are_reset_and_its_width_need_not_divide_heads():
    c = _tabular_config(width=50)
    c.sweep = ml_collections.ConfigDict(dict(solver=dict(name=("rk4", "euler"), steps=(2, 4)),
                                             model=dict(heads=(4, 3), mlp_ratio=(2, 3))))
    runs = expand(c)
    assert len(runs) == 1  # 16 configs that cannot differ are one run
    (run,) = runs
    assert {"solver.name", "solver.steps", "model.heads", "model.mlp_ratio", "model.time"} <= run.unread
    assert "model.layers" not in run.unread and run.config.model.width == 50


def test_flow_evaluations_are_refused_for_the_mlp():
    c = _tabular_config()
    c.evaluate.stability = True
    with pytest.raises(ValueError, match="model.family='mlp' has none"):
        expand(c)


# --- the experiment's tiny variant -----------------------------------------------------------------

def _entity_config(variant: str):
    spec = importlib.util.spec_from_file_location("configs.entity_embeddings",
                                                  REPO / "configs" / "entity_embeddings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.get_config(variant)


@pytest.mark.slow
def test_the_tiny_config_runs_through_the_runner(tmp_path):
    from odeformer.experiment.runner import run_sweep

    module, config = _entity_config("tiny")
    summary = run_sweep(config, tmp_path, quiet=True)
    table = summary.table
    assert summary.ran == 12 and not summary.failed
    assert (table["nfe_forward"] == 0).all() and table["test_auc"].between(0, 1).all()
    arms = {module.arm_of("synthetic_categorical", {k: r[f"model.{k}"] for k in
                                                    ("embedding", "width", "embed_dim", "embed_init")})
            for _, r in table.iterrows()}
    assert arms == set(module.arms("synthetic_categorical", 8, module._TINY_MATCHED))
