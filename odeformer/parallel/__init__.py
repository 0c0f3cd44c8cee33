"""Devices and processes: meshes, placement of train states, multi-process runs, host memory."""

from odeformer._compile_options import compiler_options
from odeformer.parallel.host_memory import reuse_host_memory
from odeformer.parallel.mesh import (
    DATA,
    MODEL,
    EmbeddingRows,
    batch_sharding,
    init_sharded,
    join_processes,
    make_mesh,
    place,
    replicated,
    state_shardings,
    to_host,
)

__all__ = [
    "DATA", "MODEL", "EmbeddingRows", "batch_sharding", "compiler_options", "init_sharded", "join_processes",
    "make_mesh", "place", "replicated", "reuse_host_memory", "state_shardings",
    "to_host",
]
