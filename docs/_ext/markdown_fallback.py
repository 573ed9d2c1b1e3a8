"""Show Markdown pages as preformatted text when MyST is not installed."""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.parsers import Parser


class MarkdownAsText(Parser):  # type: ignore[misc]
    """Parse a Markdown file into a title and one literal block.

    The first ``# Heading`` becomes the section title (so the page can sit in a
    toctree); the rest is shown as written.
    """

    supported = ("markdown", "md")

    def parse(self, inputstring: str, document: nodes.document) -> None:
        lines = inputstring.splitlines()
        title = "Untitled"
        for index, line in enumerate(lines):
            if line.startswith("# "):
                title = line[2:].strip()
                del lines[index]
                break
        section = nodes.section(ids=[nodes.make_id(title)], names=[title])
        section += nodes.title(title, title)
        body = "\n".join(lines).strip("\n")
        if body:
            section += nodes.literal_block(body, body)
        document += section


def setup(app: Any) -> dict[str, Any]:
    app.add_source_parser(MarkdownAsText)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
