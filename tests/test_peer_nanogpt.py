"""benchmarks/peer_nanogpt.py (the PyTorch peer of the character-level gpt): its whole-split
evaluation and a few training iterations of a tiny model. Skipped without torch (``bench`` extra)."""

import dataclasses
import importlib.util
import math
import pathlib
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "peer_nanogpt.py"
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
    # non-embedding parameters: per block 4 w^2 (attention) + 8 w^2 (MLP) + 2 w (LayerNorms), final LayerNorm
    w = TINY.n_embd
    assert result["params"] == TINY.n_layer * (12 * w * w + 2 * w) + w
