"""Guo & Berkhahn's networks for tabular tasks: a ReLU MLP fed one-hot inputs or entity embeddings.

Guo & Berkhahn 2016 ("Entity Embeddings of Categorical Variables") compare one network fed two
ways. Their one-hot network's first dense layer reads the concatenated one-hot vectors,
``h1 = relu(sum_f onehot_f W_f + x W_num + b)`` with ``W_f`` of ``V_f x width``; their entity
embedding network first maps feature ``f`` to ``E_f[id]`` of ``d_f`` dimensions, then the same
dense layer, ``h1 = relu(sum_f E_f[id] P_f + x W_num + b)``. Both are the
:class:`~odeformer.categorical.embeddings.FeatureTokenizer`'s feature tokens summed: one-hot is
``embedding="onehot"`` with ``embed_dim = width`` (``W_f`` stored whole, no projection), entity
embeddings are ``embedding="table"`` with ``d_f`` by the rule or ``embed_dim`` (``P_f`` the
projection). So :class:`TabularMLP` is tokenizer -> sum of the feature tokens -> ReLU ->
``layers - 1`` more dense + ReLU layers of ``width`` -> linear head.

``one_hot(id) @ W_f`` is a lookup of ``W_f``'s row: what differs between the two networks is
the factorisation ``W_f = E_f P_f`` (rank ``d_f``) and the initialisation, not the lookup.

The token sum has one bias per feature (``categorical_bias``) where G&B's layer has one in all;
the sum of them is that bias. The tokenizer's ``[CLS]`` vector is a parameter the MLP never
reads (``width`` entries, counted by :func:`odeformer.count_params`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from odeformer.categorical.embeddings import EmbeddingSpec, FeatureTokenizer
from odeformer.categorical.features import TabularData

ONEHOT_COUNTS = ("matmul", "lookup")  # how forward_flops counts a one-hot layer


class TabularMLP(nnx.Module):
    """Feature tokens summed -> ReLU -> ``layers - 1`` x (dense ``width`` + ReLU) -> linear head.

    Args:
      width: the hidden width (of the first layer too).
      layers: dense layers before the head, the first being the tokens' sum (>= 1).
      spec: how categorical ids become vectors.
      data: the task (its features and classes).
      shards: the mesh's ``model`` size: embedding rows are padded to a multiple of it.
    """

    def __init__(self, width: int, layers: int, spec: EmbeddingSpec, *, data: TabularData, shards: int = 1,
                 rngs: nnx.Rngs):
        if layers < 1:
            raise ValueError(f"model.layers={layers} must be >= 1 for model.family='mlp' (the first "
                             "layer is the sum of the feature tokens)")
        self.family = "mlp"
        self.tokenizer = FeatureTokenizer(data.categorical, len(data.numeric), width, spec,
                                          bags=data.bags, shards=shards, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(layers - 1)])
        self.head = nnx.Linear(width, data.num_classes, rngs=rngs)

    def embed(self, categorical: jax.Array, numeric: jax.Array, bag_ids: jax.Array | None = None,
              bag_weights: jax.Array | None = None) -> jax.Array:
        """The tokenizer's tokens ``[B, 1 + F + M + G, width]`` (``[CLS]`` first, unread)."""
        return self.tokenizer(categorical, numeric, bag_ids, bag_weights)

    def classify(self, x: jax.Array, *, rtol=None, atol=None, t1=None, steps=None, penalties=(),
                 key=None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Tokens (after :meth:`embed`) -> ``(logits, stats)``; the solver values are the
        training code's interface and unused (``stats``: ``nfe = num_steps = 0``, ``ok``)."""
        del rtol, atol, t1, steps, key
        if penalties:
            raise ValueError(f"penalties {tuple(penalties)} apply to the ode family only, not to 'mlp'")
        h = jax.nn.relu(x[..., 1:, :].sum(-2))  # the first dense layer: every feature token summed
        for layer in self.hidden:
            h = jax.nn.relu(layer(h))
        zero = jnp.zeros((), jnp.int32)
        return self.head(h), {"nfe": zero, "num_steps": zero, "ok": jnp.ones((), bool)}

    def __call__(self, categorical: jax.Array, numeric: jax.Array, bag_ids: jax.Array | None = None,
                 bag_weights: jax.Array | None = None, *, rtol=None, atol=None, t1=None, steps=None):
        """Inputs as in :meth:`embed` -> ``(logits, stats)`` (the solver values are unused)."""
        return self.classify(self.embed(categorical, numeric, bag_ids, bag_weights))


def forward_flops(model: TabularMLP, onehot: str = "matmul") -> int:
    """Forward FLOPs per example of ``model``: 2 per multiply-add of its matrix products.

    A ``onehot`` feature's layer counts ``2 V_f width`` with ``onehot="matmul"`` (the dense
    product G&B's one-hot network computes) and 0 with ``onehot="lookup"`` (the gather of one
    row that computes the same numbers). Projections ``P_f``: ``2 d_f width``; numeric tokens:
    ``2 G width``; hidden layers ``2 width^2`` each; head ``2 width C``. Gathers, sums of
    tokens, biases, ReLUs, pooling and QR's elementwise product are left out (vector
    arithmetic, as in ``odeformer.language.flops``). Works on an ``nnx.eval_shape`` model.
    """
    if onehot not in ONEHOT_COUNTS:
        raise ValueError(f"onehot={onehot!r} is not one of {', '.join(ONEHOT_COUNTS)}")
    tokenizer = model.tokenizer
    width = tokenizer.categorical_bias.shape[-1]
    total = 0
    for embed, proj in zip(tokenizer.embeddings, tokenizer.projections, strict=True):
        if embed.kind == "onehot" and onehot == "matmul":
            total += 2 * embed.cardinality * embed.dim
        if proj is not None:
            total += 2 * embed.dim * width
    total += 2 * tokenizer.num_numeric * width
    total += sum(2 * layer.in_features * layer.out_features for layer in (*model.hidden, model.head))
    return total
