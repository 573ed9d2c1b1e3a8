"""Sphinx configuration for the gmail-xoauth2 documentation (furo theme, -W clean)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE / "_ext"))
sys.path.insert(0, str(_HERE.parent / "src"))

import gmail_xoauth2  # noqa: E402  (after the path set-up above)

project = "gmail-xoauth2"
author = "The gmail-xoauth2 contributors"
copyright = f"{datetime.now(UTC):%Y}, {author}"
release = gmail_xoauth2.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
# Markdown pages (performance, testing against Dovecot) are rendered by MyST when it
# is installed; otherwise a small fallback shows them as preformatted text.
if importlib.util.find_spec("myst_parser") is not None:
    extensions.append("myst_parser")
    myst_heading_anchors = 3
else:
    extensions.append("markdown_fallback")

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Google-style docstrings, types come from the annotations.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}

html_theme = "furo"
html_title = f"gmail-xoauth2 {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
pygments_dark_style = "monokai"
