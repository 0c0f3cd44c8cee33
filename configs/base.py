"""The base config: every key a run has, at its default.

    python -m experiments.run --config configs/base.py --dry_run
    python -m experiments.run --config configs/base.py:convergence --dry_run

The keys, their defaults, meanings and kinds (structural, traced, ...) are defined once in
``odeformer/experiment/config.py`` and listed in docs/config_reference.md. Every config in
this folder starts from ``get_config()`` here and sets what differs; its small variants are
config arguments (``--config configs/quick.py:tiny``) applied by :func:`with_variant`.
"""

from collections.abc import Callable

import ml_collections

from odeformer.experiment import config as run_config


def get_config(experiment: str = "train") -> ml_collections.ConfigDict:
    """Every key at its default for ``experiment`` ('train', the default, or a study's
    name), unlocked."""
    config = run_config.defaults(experiment or "train")
    if config.experiment != "train":
        config.name = f"base_{config.experiment}"  # its own workdir, runs/base_<study>
    return config


def with_variant(c: ml_collections.ConfigDict, variant: str,
                 variants: dict[str, Callable[[ml_collections.ConfigDict], None]],
                 ) -> ml_collections.ConfigDict:
    """Applies the variant named by the config argument (``configs/x.py:tiny``), if any: it
    edits ``c`` in place and the sweep's name gains ``_<variant>`` (its own workdir). Locks ``c``.

    Raises:
      ValueError: naming the variant and the allowed ones.
    """
    if variant:
        if variant not in variants:
            allowed = ", ".join(variants) or "none"
            raise ValueError(f"configs/{c.name}.py has no variant {variant!r}; variants: {allowed}")
        variants[variant](c)
        c.name = f"{c.name}_{variant}"
    c.lock()
    return c


def zipped_sweep(paths: tuple[str, ...], arms: list[tuple],
                 seeds: tuple[int, ...]) -> ml_collections.ConfigDict:
    """A sweep whose ``arms`` (one value per dotted path of ``paths`` each) are zipped, crossed with
    ``seeds``; the config sets ``sweep_zip = (paths,)``."""
    sweep: dict = {}
    for path, values in zip(paths, zip(*arms, strict=True), strict=True):
        section, key = path.split(".")
        sweep.setdefault(section, {})[key] = tuple(values)
    return ml_collections.ConfigDict({**sweep, "seed": seeds})
