"""The classifiers' FLOP counter (odeformer.experiment.costs) against the matrix products of the
models themselves, a count by hand and XLA's cost analysis; the toy experiments' cost tables
(odeformer.experiment.cost_tables) and docs/results.md's copies of them."""

import dataclasses
import importlib
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jax_core

from odeformer._block import count_params
from odeformer.experiment.cost_tables import SECTIONS, docs_blocks, render, replace_blocks
from odeformer.experiment.costs import flops_per_evaluation, forward_flops_per_example, nominal_nfe
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.tasks import TaskData, majority_margins

REPO = Path(__file__).resolve().parents[1]


def _data(seq_len: int, num_classes: int = 3, vocab_size: int = 7, examples: int = 2) -> TaskData:
    split = {"tokens": jnp.zeros((examples, seq_len), jnp.int32), "label": jnp.zeros(examples, jnp.int32)}
    return TaskData(split, split, vocab_size, num_classes)


def _sub_jaxprs(value):
    if isinstance(value, jax_core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax_core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def _dot_flops(jaxpr) -> int:
    """2 x the multiply-adds of every dot_general in ``jaxpr``, sub-jaxprs included; a scan's
    body counted ``length`` times, a while loop's body once (its trip count is a run-time value)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contracting)
        repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            total += repeats * sum(_dot_flops(sub) for sub in _sub_jaxprs(value))
    return total


def _field_dots(shape: ModelShape, seq_len: int, examples: int) -> int:
    model = build_model(shape, SolverSpec(name="euler", steps=1), _data(seq_len), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model.block.field)
    x = jnp.zeros((examples, seq_len, shape.width))
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(jnp.float32(0.3), x))(state, x)
    return _dot_flops(jaxpr.jaxpr)


SHAPES = [dict(width=16, heads=4, mlp_ratio=2, seq_len=9), dict(width=24, heads=3, mlp_ratio=3, seq_len=5)]


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: f"w{s['width']}_r{s['mlp_ratio']}")
@pytest.mark.parametrize("model", [dict(family="discrete", layers=3), dict(family="ode", time="tied")],
                         ids=lambda m: m["family"])
def test_one_evaluation_counts_the_products_of_the_field(model, sizes):
    sizes = dict(sizes)
    n = sizes.pop("seq_len")
    shape = ModelShape(**model, **sizes)
    for examples in (1, 3):
        assert _field_dots(shape, n, examples) == examples * n * flops_per_evaluation(shape, n)


def test_smooth_weights_cost_a_combination_per_batch_that_the_count_leaves_out():
    shape = ModelShape(family="ode", time="smooth", basis=4, width=16, heads=4, mlp_ratio=2)
    n, per_example = 9, 9 * flops_per_evaluation(shape, 9)
    one, three = _field_dots(shape, n, 1), _field_dots(shape, n, 3)
    assert three - one == 2 * per_example  # the per-example part is the count
    # What remains, whatever the batch: one multiply-add per stored weight (basis sets of each).
    model = build_model(shape, SolverSpec(name="euler", steps=1), _data(n), rngs=nnx.Rngs(0))
    assert one - per_example == 2 * count_params(model.block.field)


def test_concat_counts_the_time_input_of_every_linear_map():
    shape = ModelShape(family="ode", time="concat", width=16, heads=4, mlp_ratio=3)
    n = 9
    tied = flops_per_evaluation(dataclasses.replace(shape, time="tied"), n)
    # Out features of qkv, attention output, MLP up and down: 48 + 16 + 48 + 16.
    assert flops_per_evaluation(shape, n) - tied == 2 * 128
    # The model forms t W_t once per evaluation (no product per token): its products are the tied ones.
    assert _field_dots(shape, n, 2) == 2 * n * tied


@pytest.mark.parametrize("model", [dict(family="discrete", layers=3), dict(family="ode", time="tied")],
                         ids=lambda m: m["family"])
def test_the_forward_pass_is_evaluations_plus_the_head(model):
    """The whole classifier's products: its solve's loop body (one Euler step: one evaluation)
    counted once, so the jaxpr holds ``forward_flops_per_example(nfe=1)`` per example."""
    shape, data = ModelShape(width=16, heads=4, mlp_ratio=2, readout="mean", **model), _data(9, 5, examples=3)
    built = build_model(shape, SolverSpec(name="euler", steps=4), data, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(built)
    jaxpr = jax.make_jaxpr(lambda s, t: nnx.merge(graphdef, s)(t)[0])(state, data.test["tokens"])
    assert _dot_flops(jaxpr.jaxpr) == 3 * forward_flops_per_example(shape, data, 1)


def test_a_small_shape_counted_by_hand():
    shape, data = ModelShape(width=8, heads=2, mlp_ratio=2), _data(5, num_classes=3)
    # Per token and evaluation: qkv 2*8*24 = 384, output 2*8*8 = 128, scores and values
    # 2*2*5*8 = 160, MLP 2*8*16 + 2*16*8 = 512: 1,184. Five tokens, four evaluations, and the
    # head 2*8*3 = 48.
    assert flops_per_evaluation(shape, 5) == 1184
    assert forward_flops_per_example(shape, data, 4) == 5 * 4 * 1184 + 48 == 23728
    # concat: a time input to each map, 2 * (24 + 8 + 16 + 8) = 112 more per token and evaluation.
    concat = dataclasses.replace(shape, time="concat")
    assert forward_flops_per_example(concat, data, 4) == 5 * 4 * (1184 + 112) + 48 == 25968


def test_xla_counts_the_same_products_and_elementwise_work_besides():
    """XLA's cost analysis counts a dot as 2 FLOPs per multiply-add, as the counter does, and
    counts elementwise operations too (LayerNorm, softmax, GELU, bias), which the counter
    leaves out: what XLA counts beyond the counter grows linearly with the width (no product
    is missed or counted twice), and the counter's share grows towards 1."""
    n, examples, excess, shares = 16, 4, [], []
    for width in (16, 32, 64):
        shape = ModelShape(width=width, heads=4, mlp_ratio=2)
        model = build_model(shape, SolverSpec(name="euler", steps=1), _data(n), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model.block.field)
        x = jnp.zeros((examples, n, width))
        evaluate = jax.jit(lambda s, x, g=graphdef: nnx.merge(g, s)(jnp.float32(0.3), x))
        xla = evaluate.lower(state, x).compile().cost_analysis()["flops"]
        ours = examples * n * flops_per_evaluation(shape, n)
        excess.append(xla - ours)
        shares.append(ours / xla)
    assert excess[2] - excess[1] == 2 * (excess[1] - excess[0]) > 0
    assert shares[0] < shares[1] < shares[2] < 1


@pytest.mark.parametrize(("family", "solver", "steps", "expected"), [
    ("discrete", "euler", 3, 3), ("ode", "euler", 3, 3), ("ode", "rk4", 2, 8), ("ode", "tsit5", 3, 19)])
def test_nominal_nfe_is_the_solves_count(family, solver, steps, expected):
    shape = ModelShape(family=family, width=8, heads=2, layers=steps)
    spec = SolverSpec(name=solver, steps=steps)
    assert nominal_nfe(shape, spec) == expected
    data = _data(4)
    graphdef, state = nnx.split(build_model(shape, spec, data, rngs=nnx.Rngs(0)))
    _, stats = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, data.test["tokens"])
    assert int(stats["nfe"]) == expected


def test_nominal_nfe_of_an_adaptive_solve_is_unknown_and_other_families_are_refused():
    assert nominal_nfe(ModelShape(), SolverSpec(name="dopri5", steps=None)) is None
    with pytest.raises(ValueError, match="model.family='gpt' is not a sequence classifier's"):
        flops_per_evaluation(ModelShape(family="gpt"), 8)


def test_majority_margins():
    tokens = np.array([[0, 0, 1, 2], [3, 3, 3, 1], [1, 2, 1, 2], [0, 0, 0, 0]])
    np.testing.assert_array_equal(majority_margins(tokens, 4), [1, 2, 0, 4])
    np.testing.assert_array_equal(majority_margins(np.zeros((1, 3), int), 1), [3])


def test_replace_blocks_rewrites_between_the_markers_only():
    text = "a\n<!-- costs:x:begin -->\nold\n<!-- costs:x:end -->\nb"
    replaced = replace_blocks(text, {"x": "new"})
    assert replaced == "a\n<!-- costs:x:begin -->\nnew\n<!-- costs:x:end -->\nb"
    assert docs_blocks(replaced) == {"x": "new"}
    with pytest.raises(ValueError, match="no costs block for 'y'"):
        replace_blocks(text, {"y": "new"})
    with pytest.raises(ValueError, match="'x' has no end marker"):
        docs_blocks("<!-- costs:x:begin -->\nold\n")
    # Each kind of block is read and written apart: a results block is not a cost block.
    kept = "<!-- results:x:begin -->\nkept\n<!-- results:x:end -->"
    assert replace_blocks(text + "\n" + kept, {"x": "new"}).endswith(kept)


@pytest.fixture(scope="module")
def docs():
    return docs_blocks((REPO / "docs" / "results.md").read_text())


def test_docs_hold_one_block_per_toy_experiment(docs):
    assert sorted(docs) == sorted(SECTIONS)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_the_docs_cost_tables_are_the_counters(docs, name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert docs[name] == render(config, SECTIONS[name]), (
        f"docs/results.md's costs:{name} block disagrees with the counter: run "
        "python -m experiments.costs --write_docs")


def _rows(block: str) -> list[dict[str, str]]:
    """The rows of a cost block's table, as column name -> cell."""
    lines = [line for line in block.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


def _span(values) -> str:
    return f"{min(values):.2f}–{max(values):.2f}x"


def test_the_ratios_the_prose_quotes_are_the_cost_tables(docs):
    """The FLOP ratios docs/results.md quotes in its text are those of its generated tables."""
    text = (REPO / "docs" / "results.md").read_text()
    ratio = "FLOPs ÷ baseline"
    depth = _rows(docs["depth_vs_width"])
    odes = [float(r[ratio]) for r in depth if r["arm"].startswith("ODE") and r["NFE"] != "1"]
    flops = {(r["budget"], r["arm"]): float(r["FLOPs/example"].replace(",", "")) for r in depth}
    one_layer = [flops[b, "discrete, 1 layer"] / f for (b, arm), f in flops.items()
                 if arm.startswith("discrete") and arm != "discrete, 1 layer"]
    efficiency = _rows(docs["param_efficiency"])

    def of(prefix):
        return [float(r[ratio]) for r in efficiency if r["arm"].startswith(prefix)]

    stability = {r["arm"]: r[ratio] for r in _rows(docs["stability"])}
    quoted = [_span(odes), _span(one_layer), _span(of("ODE tied")), _span(of("ODE concat")),
              _span(of("discrete, 1 layer")), f"{float(stability['ODE tied, euler 4 steps']):.2f}x"]
    for span in quoted:
        assert span in text, f"docs/results.md no longer quotes {span}"
