"""Guo & Berkhahn's design: one MLP fed one-hot inputs or entity embeddings, at equal width,
equal parameters and equal FLOPs, with each arm's learning rate chosen on validation data.

    python -m experiments.run --config configs/entity_embeddings.py:validation
    python -m experiments.run --config configs/entity_embeddings.py
    python -m experiments.entity_embeddings

The first sweep trains every arm at learning rates 3e-5 to 1e-2 (half-decades; seed 100) on
validation data: flights trained on January-July and scored on August-September (``task.holdout``), the
synthetic task on an independent draw (``task.seed = 1``). :data:`LEARNING_RATES` holds, per
task and arm, the rate with the lowest validation log loss (a test checks it against the
committed table). The second sweep trains every arm at its rate with seeds 0-4 on the test
split; the third command writes ``results/entity_embeddings.csv`` and prints the section of
docs/results.md. 132 runs, about 50 minutes on the 2-core machine shared with other jobs.

The network (``model.family = "mlp"``, :mod:`odeformer.experiment.tabular_mlp`): the feature
tokens summed, ReLU, one more dense ReLU layer of the same width, linear head; 2,000 Adam steps
of 256 rows (no weight decay, warmup 100, cosine decay). Arms (:func:`arms`):

- ``onehot``: G&B's one-hot network, width 128 (``embedding="onehot"``, ``embed_dim = width``:
  the first layer's ``W_f`` whole, LeCun std ``1/sqrt(V_f)``).
- ``ee``: G&B's entity-embedding network, width 128 (``embedding="table"``, ``d_f`` by the rule
  ``min(width, max(4, ceil(6 V_f^0.25)))``, then ``P_f``; table std ``1/sqrt(d_f)``).
- ``ee_onehot_init``: ``ee`` with its tables at the one-hot scale (``model.embed_init="onehot"``).
- ``full_table``: the one-hot network's parameters as a table at the table scale (``embed_dim =
  width``, std ``1/sqrt(width)``): equal parameters and FLOPs to ``onehot``, another initial scale.
- ``onehot_eq_params``: the one-hot network at the width whose parameters are nearest ``ee``'s.
- ``ee_eq_flops``: ``ee`` at the width whose lookup-count FLOPs are nearest ``onehot``'s.

Tasks: flights with ``min_count = 5`` (ids seen fewer times train the unknown row) and
without ``month`` (every held-out month is unseen, so its unknown row could never train);
synthetic categorical at raw cardinality 1e4 (two features, 100,000 train and 25,000 test rows,
``min_count = 2``). ``:tiny``: the synthetic task at cardinality 300, width 8, 6 steps, two seeds.
"""

import ml_collections

from configs import base
from odeformer.experiment import config as run_config

TASKS = ("flights", "synthetic_categorical")
TASK_KEYS = {  # what differs per task (zipped with the arms)
    "flights": dict(min_count=5, num_train=0, num_test=0, cardinality=1000, seed=0, holdout="test"),
    "synthetic_categorical": dict(min_count=2, num_train=100_000, num_test=25_000, cardinality=10_000, seed=0,
                                  holdout="test"),
}
VALIDATION = {"flights": dict(holdout="validation"), "synthetic_categorical": dict(seed=1)}
WIDTH = 128
# The matched arms' widths, from odeformer.analysis.entity_embeddings.matched_width on each task's
# test-split data (a test recomputes them).
MATCHED_WIDTHS = {"flights": {"onehot_eq_params": 50, "ee_eq_flops": 69},
                  "synthetic_categorical": {"onehot_eq_params": 54, "ee_eq_flops": 86}}
GRID = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
VALIDATION_SEED = 100
SEEDS = (0, 1, 2, 3, 4)
# Chosen by the validation sweep (lowest validation log loss; results/entity_embeddings.csv).
LEARNING_RATES: dict[str, dict[str, float]] = {
    "flights": {"ee": 1e-4, "ee_eq_flops": 3e-4, "ee_onehot_init": 1e-4, "full_table": 1e-4, "onehot": 1e-4,
                "onehot_eq_params": 3e-4},
    "synthetic_categorical": {"ee": 1e-3, "ee_eq_flops": 1e-3, "ee_onehot_init": 1e-4, "full_table": 3e-4,
                              "onehot": 1e-4, "onehot_eq_params": 3e-4},
}


def arms(task: str, width: int = WIDTH, matched: dict[str, int] | None = None) -> dict[str, dict]:
    """Arm name -> its ``model`` keys (embedding, width, embed_dim, embed_init) on ``task``."""
    m = MATCHED_WIDTHS[task] if matched is None else matched
    narrow, flops = m["onehot_eq_params"], m["ee_eq_flops"]
    return {"onehot": dict(embedding="onehot", width=width, embed_dim=width, embed_init="kind"),
            "ee": dict(embedding="table", width=width, embed_dim=0, embed_init="kind"),
            "ee_onehot_init": dict(embedding="table", width=width, embed_dim=0, embed_init="onehot"),
            "full_table": dict(embedding="table", width=width, embed_dim=width, embed_init="kind"),
            "onehot_eq_params": dict(embedding="onehot", width=narrow, embed_dim=narrow, embed_init="kind"),
            "ee_eq_flops": dict(embedding="table", width=flops, embed_dim=0, embed_init="kind")}


def arm_of(task: str, model: dict) -> str:
    """The arm whose model keys are ``model`` (on ``task``; the tiny variant's too)."""
    for table in (arms(task), arms(task, 8, _TINY_MATCHED)):
        for name, keys in table.items():
            if all(keys[k] == model[k] for k in keys):
                return name
    raise ValueError(f"no arm of {task} has the model keys {model}")


_TINY_MATCHED = {"onehot_eq_params": 4, "ee_eq_flops": 6}


def _sweep(c: ml_collections.ConfigDict, points: list[tuple[str, str, float, dict, dict]], seeds) -> None:
    """Zips (task, task keys, arm's model keys, learning rate) over ``points``, times ``seeds``."""
    task_keys = ("min_count", "num_train", "num_test", "cardinality", "seed", "holdout")
    model_keys = ("embedding", "width", "embed_dim", "embed_init")
    c.sweep = ml_collections.ConfigDict(dict(
        seed=tuple(seeds),
        task=dict(name=tuple(p[0] for p in points), **{k: tuple(p[3][k] for p in points) for k in task_keys}),
        model={k: tuple(p[4][k] for p in points) for k in model_keys},
        train=dict(learning_rate=tuple(p[2] for p in points))))
    c.sweep_zip = (("task.name", *(f"task.{k}" for k in task_keys), *(f"model.{k}" for k in model_keys),
                    "train.learning_rate"),)


def _validation(c: ml_collections.ConfigDict) -> None:
    _sweep(c, [(t, arm, lr, {**TASK_KEYS[t], **VALIDATION[t]}, keys)
               for t in TASKS for arm, keys in arms(t).items() for lr in GRID], (VALIDATION_SEED,))


def _test(c: ml_collections.ConfigDict) -> None:
    missing = [(t, a) for t in TASKS for a in arms(t) if a not in LEARNING_RATES.get(t, {})]
    if missing:
        raise ValueError(f"configs/entity_embeddings.py: no chosen learning rate for {missing}; run the "
                         ":validation sweep and fill LEARNING_RATES from choose_learning_rates")
    _sweep(c, [(t, arm, LEARNING_RATES[t][arm], TASK_KEYS[t], keys)
               for t in TASKS for arm, keys in arms(t).items()], SEEDS)


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.train.update(num_steps=6, batch_size=32, warmup_steps=1, log_every=3, eval_batch_size=256)
    keys = dict(min_count=2, num_train=2000, num_test=500, cardinality=300, seed=0, holdout="test")
    _sweep(c, [("synthetic_categorical", arm, 3e-3, keys, model)
               for arm, model in arms("synthetic_categorical", 8, _TINY_MATCHED).items()], (0, 1))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "entity_embeddings"
    c.task = run_config.task_section(*TASKS, exclude=("month",))
    c.model.update(family="mlp", layers=2)
    c.train.update(num_steps=2000, batch_size=256, learning_rate=3e-3, weight_decay=0.0, warmup_steps=100,
                   log_every=500, eval_batch_size=4096)
    if variant == "":
        _test(c)
    return base.with_variant(c, variant, {"tiny": _tiny, "validation": _validation})
