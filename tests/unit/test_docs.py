"""The documentation stays true: its code runs, and it covers the whole command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gmail_xoauth2 import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page: str) -> list[str]:
    """The ``.. code-block:: python`` blocks of a page, dedented."""
    blocks = []
    lines = (DOCS / page).read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        body = []
        for following in lines[index + 2 :]:
            if following and not following.startswith("   "):
                break
            body.append(following[3:])
        blocks.append("\n".join(body).strip() + "\n")
    return blocks


def test_testing_page_examples_pass_under_pytest(tmp_path: Path) -> None:
    blocks = python_blocks("testing.rst")
    assert len(blocks) == 2
    for number, block in enumerate(blocks):
        (tmp_path / f"test_snippet_{number}.py").write_text(block)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def subcommands() -> dict[str, list[str]]:
    """Each subcommand of the parser and its long options."""
    parser = cli._build_parser()
    [action] = [a for a in parser._actions if a.dest == "command"]
    return {
        name: [
            option
            for sub_action in sub._actions
            for option in sub_action.option_strings
            if option.startswith("--") and option != "--help"
        ]
        for name, sub in action.choices.items()  # type: ignore[union-attr]
    }


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_cli_page_documents_every_option(command: str) -> None:
    page = (DOCS / "cli.rst").read_text()
    match = re.search(
        rf"^{re.escape(command)}\n-+\n(.*?)(?=^\S+\n-+\n|\Z)", page, re.M | re.S
    )
    assert match, f"docs/cli.rst has no section for {command}"
    for option in subcommands()[command]:
        assert option in match.group(1), f"{command} {option} is not documented"


def test_every_recipe_is_in_the_recipes_index() -> None:
    index = (DOCS / "recipes" / "index.rst").read_text()
    for page in (DOCS / "recipes").glob("*.rst"):
        if page.name != "index.rst":
            assert f"\n   {page.stem}\n" in index


def every_python_block() -> list[tuple[str, int, str]]:
    """Each ``.. code-block:: python`` of every page: (page, number, code)."""
    return [
        (str(page.relative_to(DOCS)), number, block)
        for page in sorted(DOCS.rglob("*.rst"))
        if "_build" not in page.parts
        for number, block in enumerate(python_blocks(str(page.relative_to(DOCS))))
    ]


@pytest.mark.parametrize(
    ("page", "number", "code"),
    every_python_block(),
    ids=[f"{page}#{number}" for page, number, _ in every_python_block()],
)
def test_python_blocks_call_the_real_api(page: str, number: int, code: str) -> None:
    """Blocks that need a real account cannot run here; their calls must still bind.

    Every name imported from gmail_xoauth2 must exist, and every call of one of
    them (or of a method on it, such as a classmethod) must match its signature.
    """
    import ast
    import importlib
    import inspect

    tree = ast.parse(code, filename=f"{page} block {number}")
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "gmail_xoauth2"
        ):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}: no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in names:
            target, label = names[func.id], func.id
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in names
        ):
            owner = names[func.value.id]
            assert hasattr(owner, func.attr), f"{page}: no {func.value.id}.{func.attr}"
            target, label = getattr(owner, func.attr), f"{func.value.id}.{func.attr}"
        else:
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            continue
        signature = inspect.signature(target)  # type: ignore[arg-type]
        try:
            signature.bind(*node.args, **{k.arg: k.value for k in node.keywords})  # type: ignore[misc]
        except TypeError as exc:
            raise AssertionError(f"{page}: {label}(...) does not bind: {exc}") from exc
