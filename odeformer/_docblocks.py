"""Generated blocks of a Markdown page: the text between ``<!-- <kind>:<name>:begin -->`` and
``<!-- <kind>:<name>:end -->``, written by code and compared with its source by tests.

A kind names who writes the blocks (``costs`` and ``results`` in docs/results.md); a name is an
experiment's, lower case, digits and underscores.
"""

from __future__ import annotations

import re


def _pattern(kind: str) -> re.Pattern:
    kind = re.escape(kind)
    return re.compile(rf"<!-- {kind}:(?P<name>[a-z0-9_]+):begin -->\n(?:(?P<body>.*?)\n)?"
                      rf"<!-- {kind}:(?P=name):end -->", re.DOTALL)


def blocks(text: str, kind: str) -> dict[str, str]:
    """``name -> body`` of every block of ``kind`` in ``text`` (an empty block's body is "").

    Raises:
      ValueError: a block appears twice, or a begin marker has no end marker after it.
    """
    found: dict[str, str] = {}
    for match in _pattern(kind).finditer(text):
        if match["name"] in found:
            raise ValueError(f"the {kind} block of {match['name']!r} appears twice")
        found[match["name"]] = match["body"] or ""
    for name in re.findall(rf"<!-- {re.escape(kind)}:([a-z0-9_]+):begin -->", text):
        if name not in found:
            raise ValueError(f"the {kind} block {name!r} has no end marker <!-- {kind}:{name}:end --> "
                             "on a line of its own after its begin marker")
    return found


def replace_block(text: str, kind: str, name: str, body: str) -> str:
    """``text`` with the body of ``name``'s block of ``kind`` replaced by ``body``.

    Raises:
      ValueError: ``text`` has no such block (add its two marker lines first).
    """
    match = next((m for m in _pattern(kind).finditer(text) if m["name"] == name), None)
    if match is None:
        raise ValueError(f"the page has no {kind} block for {name!r}: add the lines "
                         f"<!-- {kind}:{name}:begin --> and <!-- {kind}:{name}:end --> where it belongs")
    block = f"<!-- {kind}:{name}:begin -->\n{body}\n<!-- {kind}:{name}:end -->"
    return text[:match.start()] + block + text[match.end():]
