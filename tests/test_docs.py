"""The documentation builds, its code runs, and it states current facts only.

- ``mkdocs build --strict`` builds the site (guides and the API reference generated from the
  docstrings) into a temporary folder: a broken link, anchor, nav entry or ``:::`` reference
  fails the suite.
- Every ```` ```python ```` block of README.md and docs/*.md runs. The blocks of one file run
  in order in one namespace, in a temporary working directory with the repository root on
  ``sys.path`` (as from the root: ``from configs import quick`` works), with float32 defaults.
- Every ``python -m experiments.run`` command of a ```` ```bash ```` block in those files runs
  from the repository root with ``--dry_run`` appended (unless it is there): the grid is
  planned and validated, nothing trains and nothing is written. Other lines of such a block
  (``cd notebooks && jupyter execute ...``) do not run.
- ```` ```text ```` blocks are displays (equations, printed output) and never run; one that
  directly follows such a bash block shows what its commands print, and every line of it
  must be printed, in order.
- Exempt without a marker: the two quick-start blocks of README.md (``<!-- main-line -->``,
  ``<!-- test-line -->``); they install packages, and CI (``.ci/run``) runs the test line
  itself. Any other block that does not run carries ``<!-- not-executed: reason -->`` on the
  line before it; a bash block with no ``experiments.run`` command needs that marker too, and a
  block with any other language tag (or none) without it fails the suite.
  ``<!-- exit-code: N -->`` before a bash block says its commands are expected to exit with
  ``N`` (an example of a refused config).
- README.md is a front door of at most 200 lines; README.md, docs/, benchmarks/README.md and
  notebooks/README.md hold no commit hashes and no dates (current figures only, each with its
  command and machine).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTED = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HYGIENE = [*EXECUTED, *sorted((REPO / "docs" / "api").glob("*.md")), REPO / "benchmarks" / "README.md",
           REPO / "notebooks" / "README.md"]
QUICK_START = ("<!-- main-line -->", "<!-- test-line -->")
NOT_EXECUTED = re.compile(r"<!--\s*not-executed:\s*\S.*-->")
EXIT_CODE = re.compile(r"<!--\s*exit-code:\s*(\d+)\s*-->")
# Files whose python blocks take more than ~15 s on the 2-core development machine (they train,
# or compile many programs).
SLOW_FILES = {"README.md", "solver_api.md", "sweeps.md", "training.md"}
README_MAX_LINES = 200


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str  # the non-blank line before the fence, stripped

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def exempt(self) -> bool:
        return self.marker in QUICK_START or bool(NOT_EXECUTED.fullmatch(self.marker))


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file (fences may be indented, as in lists)."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+)\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, language = fence.groups()
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != ticks:
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        found.append(Block(path, start + 1, language, textwrap.dedent("\n".join(body)) + "\n", previous))
        i += 1
    return found


def experiment_commands(block: Block) -> list[tuple[list[str], dict[str, str]]]:
    """The ``python -m experiments.run`` commands of a bash block: ``(argv, environment
    assignments)`` with ``--dry_run`` in ``argv``; ``time`` before ``python`` is dropped."""
    text = block.code.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        for part in re.split(r"&&|;|\|\|", line):
            words, env = shlex.split(part, comments=True), {}
            while words and (re.match(r"^\w+=", words[0]) or words[0] in ("time", "/usr/bin/time")):
                name, equals, value = words.pop(0).partition("=")
                if equals:
                    env[name] = value
            if words[:3] == ["python", "-m", "experiments.run"]:
                argv = [sys.executable, *words[1:]]
                commands.append((argv if "--dry_run" in argv else [*argv, "--dry_run"], env))
    return commands


def _all_blocks() -> list[Block]:
    return [block for path in EXECUTED for block in blocks(path)]


def test_every_block_runs_or_says_why_not():
    problems = []
    for block in _all_blocks():
        if block.exempt:
            continue
        if block.language not in ("python", "bash", "text"):
            problems.append(f"{block.where}: language {block.language or '(none)'!r} is not python, bash "
                            "or text; add <!-- not-executed: reason --> before it if it must not run")
        elif block.language == "bash" and not experiment_commands(block):
            problems.append(f"{block.where}: a bash block without a `python -m experiments.run` command; "
                            "add <!-- not-executed: reason --> before it")
    assert not problems, "\n".join(problems)


def test_the_quick_start_blocks_are_the_first_blocks_of_the_readme():
    first = blocks(REPO / "README.md")[:2]
    assert [b.marker for b in first] == list(QUICK_START)
    assert all(b.code.count("\n") == 1 for b in first), "each quick-start block is one line (.ci/run)"


def _python_files():
    for path in EXECUTED:
        if any(b.language == "python" and not b.exempt for b in blocks(path)):
            marks = [pytest.mark.slow] if path.name in SLOW_FILES else []
            yield pytest.param(path, id=path.name, marks=marks)


@pytest.mark.parametrize("path", list(_python_files()))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    namespace = {"__name__": "__main__"}
    try:
        for block in blocks(path):
            if block.language != "python" or block.exempt:
                continue
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"the python block at {block.where} failed: {error!r}") from error
    finally:
        jax.config.update("jax_enable_x64", previous)


def _commands():
    seen = {}
    for block in _all_blocks():
        if block.language != "bash" or block.exempt:
            continue
        exit_code = EXIT_CODE.fullmatch(block.marker)
        for argv, env in experiment_commands(block):
            key = (tuple(argv), tuple(sorted(env.items())))
            seen.setdefault(key, (block, int(exit_code.group(1)) if exit_code else 0))
    for (argv, env), (block, code) in seen.items():
        shown = " ".join([*(f"{k}={v}" for k, v in env), *argv[3:]])
        yield pytest.param(list(argv), dict(env), code, id=f"{block.where} {shown}")


@functools.cache
def _dry_run_flag_exists() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "experiments.run", "--helpfull"], cwd=REPO,
                               capture_output=True, text=True, timeout=120).stdout
    return "--[no]dry_run" in help_text


@pytest.mark.slow
@pytest.mark.parametrize("argv, env, exit_code", list(_commands()))
def test_experiment_commands_dry_run(argv, env, exit_code):
    assert _dry_run_flag_exists(), "python -m experiments.run has no --dry_run flag"
    # As a reader runs it: without the simulated devices tests/conftest.py sets for this process.
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**environ, **env})
    assert result.returncode == exit_code, (
        f"{' '.join(argv[1:])} exited {result.returncode}, expected {exit_code}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if exit_code:
        assert result.stderr.strip().startswith("error:"), result.stderr[-3000:]


def _shown_outputs():
    """Each bash block of ``experiments.run`` commands followed directly by a text block: the
    text is what those commands print."""
    found = _all_blocks()
    for block, shown in zip(found, found[1:], strict=False):
        if (block.language == "bash" and not block.exempt and shown.language == "text"
                and shown.path == block.path and shown.marker.startswith("```")):
            exit_code = EXIT_CODE.fullmatch(block.marker)
            yield pytest.param(block, shown, int(exit_code.group(1)) if exit_code else 0, id=shown.where)


@pytest.mark.slow
@pytest.mark.parametrize("block, shown, exit_code", list(_shown_outputs()))
def test_shown_output_is_what_the_commands_print(block, shown, exit_code):
    """Every line of the text block appears, in order, in the commands' output (stdout, then
    stderr, command after command), so the printed grids and messages cannot drift."""
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    printed = []
    for argv, env in experiment_commands(block):
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                                env={**environ, **env})
        assert result.returncode == exit_code, result.stderr[-3000:]
        printed += [line.rstrip() for line in (result.stdout + result.stderr).splitlines()]
    position = 0
    for line in (line.rstrip() for line in shown.code.splitlines() if line.strip()):
        assert line in printed[position:], (
            f"{shown.where}: {line!r} is not printed (after line {position}) by the commands at "
            f"{block.where}; they print:\n" + "\n".join(printed))
        position = printed.index(line, position) + 1


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "core" / "index.html").exists()


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_extras_the_install_docs_name_exist_and_pin_the_same_jax():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    named = {extra for path in (REPO / "docs" / "install.md", REPO / "README.md")
             for group in re.findall(r"\.\[([\w,-]+)\]", path.read_text()) for extra in group.split(",")}
    assert {"cuda12", "cuda13", "tpu", "dev", "text"} <= named
    assert named <= set(extras), f"extras named in the docs, not in pyproject.toml: {named - set(extras)}"
    (jax,) = [d for d in project["dependencies"] if re.match(r"jax\b", d)]  # not jaxlib
    for accelerator in ("cuda12", "cuda13", "tpu"):  # JAX's extra at the core's jax range
        assert extras[accelerator] == [jax.replace("jax", f"jax[{accelerator}]", 1)]


# Outside URLs, inline code and code blocks: 7-40 hex digits with at least one digit and one letter.
HASH = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
URL = re.compile(r"\]\([^)]*\)|<[^>]*>|https?://\S+")


def _prose(text: str) -> str:
    """``text`` without fenced blocks, inline code and URLs."""
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return URL.sub("", text)


@pytest.mark.parametrize("path", HYGIENE, ids=lambda p: str(p.relative_to(REPO)))
def test_no_commit_hashes_or_dates(path):
    text = path.read_text()
    hashes = HASH.findall(_prose(text))
    dates = [m.group(0) for m in DATE.finditer(URL.sub("", text))]
    assert not hashes, f"{path.name}: commit-hash-like tokens {hashes}; state current figures only"
    assert not dates, f"{path.name}: dates {dates}; state current figures only"


def test_hygiene_patterns_catch_what_they_should():
    assert HASH.findall(_prose("measured at e055275 and 3e08b34")) == ["e055275", "3e08b34"]
    assert not HASH.findall(_prose("`e055275` in code, [link](https://x/e055275), 1024, deadbee, facade"))
    assert DATE.search("on 2026-11-22 at") and not DATE.search("1.5e-10, 0.12-0.82")
