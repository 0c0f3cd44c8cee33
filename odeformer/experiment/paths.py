"""Dotted paths (``solver.steps``) into nested configs: a ConfigDict or a plain dict."""

from __future__ import annotations

from typing import Any

import ml_collections


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values."""
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def get_path(config, path: str):
    """The value at a dotted path of a ConfigDict or nested dict.

    Raises:
      KeyError: naming the path.
    """
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError):
            raise KeyError(path) from None
    return node


def set_path(config, path: str, value) -> None:
    """Sets the value at a dotted path (its parent sections must exist)."""
    *parents, leaf = path.split(".")
    node = get_path(config, ".".join(parents)) if parents else config
    node[leaf] = value
