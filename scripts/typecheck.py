#!/usr/bin/env python3
"""mypy --strict on the package and, as a user's code, on examples/ and the docs.

    python scripts/typecheck.py [mypy options]

One mypy run checks the ``files`` of ``[tool.mypy]`` in pyproject.toml (src/,
tests/typing/, examples/, scripts/) together with every ``.. code-block:: python``
of docs/ (the blocks tests/unit/test_docs.py extracts), so the package's types
are analysed once for all of them: under a second with a warm cache, 11 s cold.

A page's blocks are written to a temporary directory, one module per block,
each placed at the line it has in the page, so the report names the page and
line (``docs/index.rst:33: error: ...``). The blocks are held to --strict with
one waiver: a snippet may leave its own functions unannotated (a pytest fixture
as most people write one), so ``no-untyped-def`` is off for them. The bodies of
those functions are still checked (--strict includes --check-untyped-defs).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DIRECTIVE = ".. code-block:: python"


@dataclass(frozen=True)
class Block:
    """One Python block of a docs page."""

    page: str  # relative to docs/, e.g. "recipes/offlineimap.rst"
    number: int  # its position among the page's Python blocks
    line: int  # the page's line number of the block's first line
    code: str  # dedented, leading and trailing blank lines kept

    @property
    def module(self) -> str:
        """A module name unique to the block: ``docs_recipes_offlineimap_0``."""
        stem = re.sub(r"\W", "_", self.page.removesuffix(".rst"))
        return f"docs_{stem}_{self.number}"

    def source(self) -> str:
        """The block as a module whose line numbers are the page's."""
        padding = ["" for _ in range(self.line - 1)]
        return "\n".join([*padding, self.code])


def python_blocks(page: Path) -> list[Block]:
    """The page's ``.. code-block:: python`` blocks, read as test_docs.py reads them."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        if line.strip() != DIRECTIVE:
            continue
        body = []
        for following in lines[index + 2 :]:
            if following and not following.startswith("   "):
                break
            body.append(following[3:])
        name = page.relative_to(DOCS).as_posix()
        blocks.append(Block(name, len(blocks), index + 3, "\n".join(body) + "\n"))
    return blocks


def every_block() -> list[Block]:
    """Every Python block of docs/, page by page."""
    return [
        block
        for page in sorted(DOCS.rglob("*.rst"))
        if "_build" not in page.relative_to(DOCS).parts
        for block in python_blocks(page)
    ]


def configured_files() -> list[str]:
    """What a plain ``mypy`` checks: ``[tool.mypy] files`` in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    files: list[str] = config["tool"]["mypy"]["files"]
    return files


def to_pages(report: str, written: dict[str, str]) -> str:
    """mypy's report with each block's temporary path replaced by its page's."""
    for path, page in written.items():
        report = report.replace(path, page)
    return report


def main(argv: list[str]) -> int:
    from mypy import api  # imported here so the helpers above work without mypy

    os.chdir(ROOT)  # the paths in pyproject.toml, and mypy's cache, are relative
    with tempfile.TemporaryDirectory(prefix="docs-blocks-") as directory:
        written = {}
        for block in every_block():
            path = Path(directory) / f"{block.module}.py"
            path.write_text(block.source())
            written[str(path)] = f"docs/{block.page}"
        stdout, stderr, status = api.run(
            [
                "--config-file",
                "pyproject.toml",
                *argv,
                *configured_files(),
                *written,
            ]
        )
    sys.stdout.write(to_pages(stdout, written))
    sys.stderr.write(to_pages(stderr, written))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
