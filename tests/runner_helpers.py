"""A tiny version of configs/quick.py for runner tests (seconds per run)."""

import ml_collections

from configs import quick


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """configs/quick.py shrunk; ``overrides`` maps dotted keys to values."""
    c = ml_collections.ConfigDict(quick.get_config().to_dict())
    c.task.num_train, c.task.num_test = 64, 16
    c.model.width, c.model.heads, c.model.mlp_ratio = 8, 2, 1
    c.train.num_steps, c.train.batch_size, c.train.warmup_steps = 4, 8, 1
    c.train.log_every, c.train.eval_batch_size = 2, 16
    c.sweep = ml_collections.ConfigDict({"solver": {"steps": (1, 2)}})
    return with_overrides(c, overrides)


def with_overrides(c: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """Sets dotted keys of ``c`` and locks it."""
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    c.lock()
    return c
