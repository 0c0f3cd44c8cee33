"""Shared fixtures. Numerical tests run in float64 via the `x64` fixture."""

import jax
import pytest


@pytest.fixture
def x64():
    """Enable float64 for one test (numerical-analysis tests), then restore."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
