"""Sphinx configuration for the gmail-xoauth2 documentation (furo theme, -W clean)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

_HERE = Path(__file__).resolve().parent
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
    # Markdown pages: performance and testing against Dovecot.
    "myst_parser",
]
myst_heading_anchors = 3

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

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
