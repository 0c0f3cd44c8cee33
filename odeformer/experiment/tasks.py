"""Tasks: synthetic sequence classification generated deterministically from a seed, real
tabular data, and character-level language modelling on text.

A task is a function ``make(config, key) -> TaskData | TabularData | LanguageData``; ``TASKS``
is the registry and :func:`register_task` adds more. A sequence task's sample is a sequence of int32
token ids in ``[0, vocab_size)``; a tabular task's sample is one int32 id per categorical
feature, one float per numeric feature and, per multi-valued feature, up to ``L`` ids with a
weight each. Every sample has one int32 label. Every id is checked against its range here,
where data enters: an embedding lookup never checks it (JAX clamps a plain gather; the
row-sharded lookup returns zeros).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from odeformer.categorical.features import CategoricalFeature, TabularData, check_ids
from odeformer.language.corpus import CharVocabulary, load_corpus


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Train/test arrays and the shapes a model needs.

    Attributes:
      train, test: dicts with ``tokens`` (int32, [N, seq_len]) and ``label`` (int32, [N]).
      vocab_size: token ids lie in ``[0, vocab_size)``.
      num_classes: labels lie in ``[0, num_classes)``.
    """

    train: dict[str, jax.Array]
    test: dict[str, jax.Array]
    vocab_size: int
    num_classes: int
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)  # as in TabularData

    @property
    def seq_len(self) -> int:
        return int(self.train["tokens"].shape[1])


@dataclasses.dataclass(frozen=True)
class LanguageData:
    """A character stream per split and the context a model sees.

    Attributes:
      train, validation, test: dicts with ``stream`` (int32, [N]): the split's characters as ids.
      vocabulary: ids <-> characters.
      block_size: tokens of context per example; training draws windows of ``block_size + 1``.
    """

    train: dict[str, jax.Array]
    validation: dict[str, jax.Array]
    test: dict[str, jax.Array]
    vocabulary: CharVocabulary
    block_size: int
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)


AnyTask = TaskData | TabularData | LanguageData
TASKS: dict[str, Callable[[ml_collections.ConfigDict, jax.Array], AnyTask]] = {}


TABULAR_TASKS: set[str] = set()  # names of tasks returning TabularData
LANGUAGE_TASKS: set[str] = set()  # names of tasks returning LanguageData

# The ``task`` keys each task reads besides ``name`` and ``seed``: key -> (default, meaning,
# smallest allowed value, or None for none). The run definition
# (odeformer.experiment.config) builds the task section of the schema from these.
TASK_KEYS: dict[str, dict[str, tuple]] = {}

# Tabular tasks whose configs may give multi-valued features: task -> (the key counting them,
# the keys read only when that count is > 0). A task absent here has none; the run definition
# resets ``model.combiner`` and those keys for a run without any (:func:`has_bags`).
BAG_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {}

SEQUENCE_KEYS: dict[str, tuple] = {
    "vocab_size": (8, "Symbols of the sequence.", 1),
    "seq_len": (9, "Tokens per example.", 1),
    "num_train": (4096, "Training examples.", 1),
    "num_test": (512, "Test examples.", 1),
}


def register_task(name: str, *, tabular: bool = False, language: bool = False,
                  keys: dict[str, tuple] | None = None, bags: tuple[str, tuple[str, ...]] | None = None):
    """Decorator adding ``make(config, key) -> TaskData`` (``TabularData`` with
    ``tabular=True``, ``LanguageData`` with ``language=True``) to :data:`TASKS`.

    Args:
      name: the value of ``task.name`` that selects it.
      tabular: the task returns ``TabularData``.
      language: the task returns ``LanguageData``.
      keys: the config keys it reads besides ``name`` and ``seed`` (see :data:`TASK_KEYS`);
        default: those of the synthetic sequence tasks, :data:`SEQUENCE_KEYS`.
      bags: a tabular task with multi-valued features: its entry of :data:`BAG_KEYS`.
    """
    def add(make):
        TASKS[name] = make
        TASK_KEYS[name] = dict(SEQUENCE_KEYS if keys is None else keys)
        if bags is not None:
            BAG_KEYS[name] = bags
        if tabular:
            TABULAR_TASKS.add(name)
        if language:
            LANGUAGE_TASKS.add(name)
        return make
    return add


def has_bags(config: ml_collections.ConfigDict) -> bool:
    """Whether the task section ``config`` gives its task multi-valued features (:data:`BAG_KEYS`)."""
    count = BAG_KEYS.get(config.name)
    return count is not None and config[count[0]] > 0


def make_task(config: ml_collections.ConfigDict) -> AnyTask:
    """Builds the task named ``config.name`` from ``config.seed``."""
    if config.name not in TASKS:
        raise ValueError(f"task.name={config.name!r} is not one of {', '.join(sorted(TASKS))}")
    data = TASKS[config.name](config, jax.random.key(config.seed))
    if isinstance(data, LanguageData):
        _check_language(config.name, data)
    elif isinstance(data, TabularData):
        _check_tabular(config.name, data)
    else:
        _check_ranges(config.name, data)
    return data


def _check_tabular(name: str, data: TabularData) -> None:
    for split_name, split in (("train", data.train), ("test", data.test)):
        where = f"task {name!r}: {split_name}"
        cat, num, label = (np.asarray(split[k]) for k in ("categorical", "numeric", "label"))
        n = label.shape[0]
        if cat.shape != (n, len(data.categorical)) or num.shape != (n, len(data.numeric)):
            raise ValueError(f"{where}: categorical {cat.shape} / numeric {num.shape} do not match "
                             f"{n} labels x {len(data.categorical)} categorical / "
                             f"{len(data.numeric)} numeric features")
        for column, feature in enumerate(data.categorical):
            check_ids(f"{where} {feature.name}", cat[:, column], feature.cardinality)
        if not np.issubdtype(num.dtype, np.floating) or not np.isfinite(num).all():
            raise ValueError(f"{where}: numeric features must be finite floats")
        _check_bags(where, split, data.bags, n)
        check_ids(f"{where} label", label, data.num_classes)


def _check_bags(where: str, split: dict, bags: tuple[CategoricalFeature, ...], n: int) -> None:
    """Multi-valued features: ids in range and weights finite and >= 0, both [n, M, L]."""
    if not bags:
        extra = sorted({"bag_ids", "bag_weights"} & set(split))
        if extra:  # the model would be handed arrays it has no feature for
            raise ValueError(f"{where}: {' and '.join(extra)} given but the task declares no "
                             "multi-valued features (TabularData.bags is empty)")
        return
    missing = sorted({"bag_ids", "bag_weights"} - set(split))
    if missing:
        raise ValueError(f"{where}: {' and '.join(missing)} missing for the multi-valued features "
                         f"{', '.join(f.name for f in bags)}")
    ids, weights = np.asarray(split["bag_ids"]), np.asarray(split["bag_weights"])
    if ids.ndim != 3 or ids.shape[:2] != (n, len(bags)) or weights.shape != ids.shape:
        raise ValueError(f"{where}: bag_ids {ids.shape} and bag_weights {weights.shape} must both be "
                         f"[{n} labels, {len(bags)} multi-valued features, L values]")
    if not np.issubdtype(weights.dtype, np.floating):
        raise ValueError(f"{where}: bag_weights must be floats, got {weights.dtype}")
    for m, feature in enumerate(bags):
        check_ids(f"{where} {feature.name}", ids[:, m], feature.cardinality)
        w = weights[:, m]
        if not (np.isfinite(w) & (w >= 0)).all():
            bad = w[~(np.isfinite(w) & (w >= 0))][0]
            raise ValueError(f"{where} {feature.name}: weight {bad} is not a finite number >= 0 "
                             "(0 marks padding)")


def _check_language(name: str, data: LanguageData) -> None:
    for split_name in ("train", "validation", "test"):
        stream = getattr(data, split_name)["stream"]
        check_ids(f"task {name!r}: {split_name} stream", stream, data.vocab_size)
        least = data.block_size + 1 if split_name == "train" else 2
        if stream.shape[0] < least:
            raise ValueError(f"task {name!r}: the {split_name} split has {stream.shape[0]} characters; "
                             f"it needs at least {least} (task.block_size={data.block_size})")


def _check_ranges(name: str, data: TaskData) -> None:
    """JAX clamps out-of-range ids in embedding lookups silently; refuse them here."""
    if data.train["tokens"].shape[1:] != data.test["tokens"].shape[1:]:
        raise ValueError(f"task {name!r}: train and test sequences differ in length "
                         f"({data.train['tokens'].shape[1]} vs {data.test['tokens'].shape[1]})")
    for split_name, split in (("train", data.train), ("test", data.test)):
        for key, limit in (("tokens", data.vocab_size), ("label", data.num_classes)):
            check_ids(f"task {name!r}: {split_name} {key}", split[key], limit)


def _split(tokens, labels, num_train):
    return ({"tokens": tokens[:num_train], "label": labels[:num_train]},
            {"tokens": tokens[num_train:], "label": labels[num_train:]})


@register_task("majority")
def majority(config, key) -> TaskData:
    """Label = the most frequent symbol of the sequence (ties: smallest id).

    Needs only a global count: a bag-of-tokens model can solve it.
    """
    total = config.num_train + config.num_test
    tokens = jax.random.randint(key, (total, config.seq_len), 0, config.vocab_size, jnp.int32)
    counts = jax.nn.one_hot(tokens, config.vocab_size, dtype=jnp.int32).sum(1)
    labels = jnp.argmax(counts, axis=-1).astype(jnp.int32)
    train, test = _split(tokens, labels, config.num_train)
    return TaskData(train, test, config.vocab_size, config.vocab_size)


def majority_margins(tokens, vocab_size: int) -> np.ndarray:
    """Per sequence of ``tokens`` (int, ``[N, seq_len]``), how many more times its most
    frequent symbol occurs than the runner-up: 0 is a tie (the ``majority`` label takes the
    smallest id), 1 a label that one changed token can flip."""
    tokens = np.asarray(tokens)
    counts = [(tokens == v).sum(-1) for v in range(vocab_size)]
    counts = np.stack([*counts, np.zeros_like(counts[0])], -1)  # with one symbol the runner-up is 0
    top = np.sort(counts, -1)
    return top[..., -1] - top[..., -2]


@register_task("associative_recall")
def associative_recall(config, key) -> TaskData:
    """``k1 v1 k2 v2 ... kP vP q`` -> the value paired with key ``q``.

    Keys are distinct ids in ``[0, vocab_size)``, values ids in
    ``[vocab_size, 2 vocab_size)``; the label is the value's index in
    ``[0, vocab_size)``. ``seq_len = 2 * pairs + 1``. Answering needs the query to
    attend to its key's position.
    """
    total = config.num_train + config.num_test
    pairs = (config.seq_len - 1) // 2
    if 2 * pairs + 1 != config.seq_len or pairs > config.vocab_size:
        raise ValueError(
            f"task.seq_len={config.seq_len} must be odd (2 * pairs + 1) with pairs <= "
            f"task.vocab_size={config.vocab_size}")
    k_keys, k_vals, k_query = jax.random.split(key, 3)
    keys = jax.vmap(lambda k: jax.random.permutation(k, config.vocab_size)[:pairs])(
        jax.random.split(k_keys, total)).astype(jnp.int32)
    values = jax.random.randint(k_vals, (total, pairs), 0, config.vocab_size, jnp.int32)
    which = jax.random.randint(k_query, (total,), 0, pairs)
    query = jnp.take_along_axis(keys, which[:, None], axis=1)
    labels = jnp.take_along_axis(values, which[:, None], axis=1)[:, 0]
    body = jnp.stack([keys, values + config.vocab_size], axis=-1).reshape(total, 2 * pairs)
    tokens = jnp.concatenate([body, query], axis=1)
    train, test = _split(tokens, labels, config.num_train)
    return TaskData(train, test, 2 * config.vocab_size, config.vocab_size)


TEXT_KEYS: dict[str, tuple] = {
    "path": ("", "UTF-8 text file to model, split 90/5/5 in order; '' = Shakespeare's plays split "
             "by play (odeformer.language.load_corpus).", None),
    "block_size": (64, "Characters of context per example (training windows, evaluation windows).", 1),
    "max_chars": (0, "Keep the first this many characters of each split (a slice for tests and quick "
                  "runs); 0 = all.", 0),
}


@register_task("text", language=True, keys=TEXT_KEYS)
def text(config, key) -> LanguageData:
    """Character-level next-token prediction on a text corpus (``task.seed`` and ``key`` are
    unused: the data is the text). The vocabulary is the whole corpus's characters."""
    del key
    corpus = load_corpus(config.path or None)
    limit = config.max_chars or None
    splits = {name: {"stream": jnp.asarray(getattr(corpus, name)[:limit])}
              for name in ("train", "validation", "test")}
    return LanguageData(**splits, vocabulary=corpus.vocabulary, block_size=config.block_size,
                        artifacts={"vocabulary.json": corpus.vocabulary.to_json()})
