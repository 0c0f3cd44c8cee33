"""`odeformer.parallel.reuse_host_memory`: arguments, and that it removes the page faults of XLA:CPU's
large per-call buffers, called before or after JAX has started. The malloc settings are
process-wide, so every check that applies them runs in a fresh subprocess."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from odeformer.parallel import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}


def run_python(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout


# A training step whose ~100 MB temporary buffer (activations stored by the direct adjoint) is
# allocated and freed at every call.
FAULTS_PER_CALL = """
    import resource, sys
    import jax, jax.numpy as jnp
    from flax import nnx
    import odeformer
    import odeformer.parallel
    if sys.argv[1:] == ["early"]:
        assert odeformer.parallel.reuse_host_memory()
    f, state = odeformer.vector_field(odeformer.TransformerBlockField(64, 4, rngs=nnx.Rngs(0)))
    y0 = jnp.ones((8, 64, 64), jnp.float32)
    def loss(s, y):
        return jnp.mean(odeformer.solve(f, y, args=s, solver="euler", steps=8, adjoint="direct").y1 ** 2)
    step = jax.jit(jax.grad(loss)).lower(state, y0).compile()
    assert step.memory_analysis().temp_size_in_bytes > 64 * 2**20
    for _ in range(3):
        jax.block_until_ready(step(state, y0))
    if sys.argv[1:] == ["late"]:  # JAX has run this step three times already
        assert odeformer.parallel.reuse_host_memory()
        jax.block_until_ready(step(state, y0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        jax.block_until_ready(step(state, y0))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="reuse_host_memory changes glibc malloc only")
def test_reuse_removes_the_page_faults_of_large_buffers_called_early_or_late(tmp_path):
    script = tmp_path / "faults.py"
    script.write_text(textwrap.dedent(FAULTS_PER_CALL))
    system = float(run_python(str(script)))
    if system < 4096:  # 64 MiB is 16384 pages: this malloc already reuses the buffer
        pytest.skip(f"system malloc took only {system:.0f} faults per call; nothing to remove")
    for when in ("early", "late"):
        assert float(run_python(str(script), when)) < 200, f"called {when}: the buffer was not reused"


@pytest.mark.skipif(not GLIBC, reason="reuse_host_memory changes glibc malloc only")
def test_reuse_is_idempotent_and_refuses_a_new_threshold():
    out = run_python("-c", textwrap.dedent("""
        import odeformer
        import odeformer.parallel
        print(odeformer.parallel.reuse_host_memory(), odeformer.parallel.reuse_host_memory())
        try:
            odeformer.parallel.reuse_host_memory(2**20)
        except ValueError as error:
            print(error)
    """))
    assert out.splitlines()[0] == "True True"
    assert "already called with trim_threshold=1073741824; got 1048576" in out


@pytest.mark.parametrize("bad", [0, -1, 2**31, 1.5e9, True, "1G"])
def test_bad_trim_threshold_is_refused_before_anything_changes(bad):
    with pytest.raises(ValueError, match=r"trim_threshold=.* must be an int in \[1, 2\*\*31 - 1\]"):
        host_memory.reuse_host_memory(bad)
    assert host_memory._applied is None


def test_nothing_to_do_without_glibc(monkeypatch):
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda *a: pytest.fail("touched the C library"))
    assert host_memory.reuse_host_memory() is False
    assert host_memory._applied is None
