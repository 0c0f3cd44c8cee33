"""The tiny variant of configs/embeddings.py that the test suite runs (seconds per run).

    python -m experiments.run --config configs/embeddings_tiny.py

Synthetic categorical data only (cardinality 300, 2,000 training rows), width 8, 6 steps,
the four embedding kinds.
"""

import ml_collections

from configs import embeddings


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(embeddings.get_config().to_dict())
    c.name = "embeddings_tiny"
    c.task.update(name="synthetic_categorical", cardinality=300, num_train=2000, num_test=500)
    c.model.update(width=8, heads=2, mlp_ratio=1)
    c.train.update(num_steps=6, batch_size=32, warmup_steps=1, log_every=3, eval_batch_size=256)
    c.sweep = ml_collections.ConfigDict(dict(model=dict(embedding=("table", "onehot", "hashed", "qr"))))
    c.sweep_zip = ()
    c.lock()
    return c
