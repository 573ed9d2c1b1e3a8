"""Read the configuration blocks of docs/recipes/*.rst, so tests run what the docs say.

A test takes a recipe's own ``.. code-block::`` and substitutes only what must
differ on loopback (user, host, port, CA file, token file); a substitution
whose text is no longer in the block fails the test, so docs and tests cannot
drift apart silently.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"

_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<language>\S+) *$")


@dataclass(frozen=True)
class CodeBlock:
    """One ``.. code-block::`` of a recipe page."""

    language: str
    text: str
    line: int  # 1-based line of the directive, for messages

    def substitute(self, replacements: dict[str, str]) -> str:
        """The block with each key replaced by its value, in order.

        Raises:
            AssertionError: a key is not in the block (the recipe changed).
        """
        text = self.text
        for old, new in replacements.items():
            assert old in text, f"{old!r} is no longer in the block at line {self.line}"
            text = text.replace(old, new)
        return text


def code_blocks(page: str, language: str | None = None) -> list[CodeBlock]:
    """The code blocks of ``docs/recipes/<page>.rst``, of ``language`` if given."""
    lines = (RECIPES / f"{page}.rst").read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        index += 1
        if match is None:
            continue
        start = index - 1
        indent = len(match["indent"])
        # Options (":caption: ...") then the body: every line blank or indented
        # deeper than the directive.
        while index < len(lines) and lines[index].strip().startswith(":"):
            index += 1
        body = []
        while index < len(lines) and (
            not lines[index].strip()
            or len(lines[index]) - len(lines[index].lstrip()) > indent
        ):
            body.append(lines[index])
            index += 1
        text = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        if language is None or match["language"] == language:
            blocks.append(CodeBlock(match["language"], text, start + 1))
    return blocks


def code_block(page: str, language: str, containing: str) -> CodeBlock:
    """The one block of ``page`` in ``language`` whose text holds ``containing``."""
    found = [b for b in code_blocks(page, language) if containing in b.text]
    assert len(found) == 1, (
        f"{len(found)} {language} blocks of {page}.rst hold {containing!r}"
    )
    return found[0]
