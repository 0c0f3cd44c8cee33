"""Shared fixtures. Numerical tests run in float64 via the `x64` fixture.

The host platform is split into 8 simulated CPU devices (before JAX is imported) for the
sharding tests; everything else runs on the first device.
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()

import chex  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_trace_counts():
    """chex.assert_max_traces counts the traces of a function by its source and definition
    site, for the whole process: start each test (and each parametrization) from zero."""
    chex.clear_trace_counter()


@pytest.fixture
def x64():
    """Enable float64 for one test (numerical-analysis tests), then restore."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache_of_this_session(tmp_path_factory):
    """Command-line runs in subprocesses keep their compiled steps in a folder of this test
    session (one per xdist worker), never in the user's ~/.cache. This process is unaffected:
    JAX read the variable when it was imported."""
    previous = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    if previous is None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR")
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = previous
