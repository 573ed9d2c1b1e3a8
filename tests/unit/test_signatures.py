"""Typed for user code: widened IMAP commands, docs type-checked, public types shown."""

from __future__ import annotations

import ast
import imaplib
import importlib
import importlib.util
import inspect
import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from gmail_xoauth2._imap_signatures import TypedCommands
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing.gmail import FakeGmail

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@example.com"
WIDENED = ["copy", "fetch", "search", "sort", "store", "thread", "uid"]


def load_script(name: str) -> ModuleType:
    """A script of scripts/ imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


typecheck = load_script("typecheck")


# --- the mixin --------------------------------------------------------------


def test_imap4_takes_the_widened_signatures() -> None:
    assert issubclass(IMAP4, TypedCommands)
    for name in WIDENED:
        assert getattr(IMAP4, name) is getattr(TypedCommands, name), name


def test_widens_only_what_it_lists() -> None:
    own = sorted(n for n, v in vars(TypedCommands).items() if inspect.isfunction(v))
    assert own == WIDENED


@pytest.mark.parametrize("name", WIDENED)
def test_parameters_are_imaplibs(name: str) -> None:
    """Same names, kinds and defaults: keyword calls and omissions behave as before."""

    def shape(function: object) -> list[tuple[str, object, object]]:
        params = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
        return [(p.name, p.kind, p.default) for p in params]

    assert shape(getattr(TypedCommands, name)) == shape(getattr(imaplib.IMAP4, name))


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=(ALICE,)) as fake:
        for n in (1, 2):
            fake.deliver(ALICE, f"Subject: note {n}\r\n\r\nbody {n}\r\n".encode())
        yield fake


@pytest.fixture
def imap(gmail: FakeGmail) -> Iterator[IMAP4]:
    tokens = gmail.token_provider(ALICE)
    with IMAP4(
        ALICE, tokens, gmail.host, gmail.imap_port, ssl_context=gmail.ssl_context()
    ) as imap:
        imap.select("INBOX")
        yield imap


def sent(gmail: FakeGmail) -> list[bytes]:
    """The commands the client sent, without their tags."""
    return [
        line.data.split(b" ", 1)[1]
        for line in gmail.transcript("imap")
        if line.direction == "C" and b" " in line.data
    ]


def test_none_and_bytes_arguments_go_out_as_imaplib_sends_them(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    assert imap.uid("SEARCH", None, "ALL") == ("OK", [b"1 2"])
    assert imap.search(None, b"SUBJECT", b'"note 2"') == ("OK", [b"2"])
    typ, data = imap.search(None, "ALL")
    first = data[0].split()[0]  # bytes, as imaplib's users pass them on
    typ, data = imap.fetch(first, b"(FLAGS)")
    assert typ == "OK" and data[0].startswith(b"1 (")
    assert imap.store(first, b"+FLAGS", "\\Flagged")[0] == "OK"
    assert imap.uid("FETCH", b"2", "(UID)")[0] == "OK"
    assert imap.create("Archive")[0] == "OK"
    assert imap.copy(b"2", "Archive")[0] == "OK"
    assert sent(gmail)[-8:] == [
        b"UID SEARCH ALL",
        b'SEARCH SUBJECT "note 2"',
        b"SEARCH ALL",
        b"FETCH 1 (FLAGS)",
        b"STORE 1 +FLAGS (\\Flagged)",
        b"UID FETCH 2 (UID)",
        b"CREATE Archive",
        b"COPY 2 Archive",
    ]
    assert gmail.messages(ALICE, "Archive") == gmail.messages(ALICE)[1:]


def test_sort_and_thread_pass_their_criteria_through(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    # The fake Gmail, like Gmail, has neither extension: the command is
    # refused, but only after imaplib has sent it.
    with pytest.raises(imaplib.IMAP4.error):
        imap.sort("DATE", "UTF-8", b"ALL")
    with pytest.raises(imaplib.IMAP4.error):
        imap.thread("REFERENCES", "UTF-8", "SUBJECT", b"note")
    assert sent(gmail)[-2:] == [
        b"SORT (DATE) UTF-8 ALL",
        b"THREAD REFERENCES UTF-8 SUBJECT note",
    ]


# --- the docs' blocks, as scripts/typecheck.py hands them to mypy -----------


def test_the_type_check_sees_the_blocks_test_docs_runs() -> None:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    try:
        import test_docs
    finally:
        sys.path.remove(str(ROOT / "tests" / "unit"))
    ours = [
        (block.page, block.number, block.code.strip() + "\n")
        for block in typecheck.every_block()
    ]
    assert ours == test_docs.every_python_block()
    assert ours, "no Python block found in docs/"


def test_a_block_keeps_its_page_line_numbers() -> None:
    for block in typecheck.every_block():
        page = (ROOT / "docs" / block.page).read_text().splitlines()
        source = block.source().splitlines()
        assert source[: block.line - 1] == [""] * (block.line - 1)
        for number, line in enumerate(source[block.line - 1 :], start=block.line):
            assert line == page[number - 1][3:], (block.page, number)


def test_the_report_names_the_page() -> None:
    report = "/tmp/x/docs_index_0.py:37: error: boom  [index]\n"
    mapped = typecheck.to_pages(report, {"/tmp/x/docs_index_0.py": "docs/index.rst"})
    assert mapped == "docs/index.rst:37: error: boom  [index]\n"


def test_block_modules_are_unique() -> None:
    modules = [block.module for block in typecheck.every_block()]
    assert len(modules) == len(set(modules))
    assert all(module.isidentifier() for module in modules)


# --- the public names in signatures, exported and documented ----------------


@pytest.mark.parametrize(
    ("name", "module"),
    [("Clock", "_tokens"), ("TokenSource", "_tokens"), ("TokenFile", "_store")],
)
def test_names_in_public_signatures_are_exported(name: str, module: str) -> None:
    import gmail_xoauth2

    defined = importlib.import_module(f"gmail_xoauth2.{module}")
    assert name in gmail_xoauth2.__all__
    assert getattr(gmail_xoauth2, name) is getattr(defined, name)


def api_entries() -> dict[str, tuple[str, str]]:
    """``py:data`` and ``py:type`` entries of the API page: name -> (value, text)."""
    page = (ROOT / "docs" / "api.rst").read_text()
    entries = re.finditer(
        r"^\.\. py:(?:data|type):: gmail_xoauth2\.(\w+)\n"
        r"(?:   :type: .*\n)?   :(?:value|canonical): (.*)\n\n((?:   .*\n|\n)*)",
        page,
        re.M,
    )
    return {match[1]: (match[2], " ".join(match[3].split())) for match in entries}


def attribute_docstring(module: ModuleType, name: str) -> str:
    """The string literal under ``name = ...`` in the module's source."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    for node, following in itertools.pairwise(tree.body):
        if (
            isinstance(node, ast.Assign)
            and [target.id for target in node.targets if isinstance(target, ast.Name)]
            == [name]
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            return str(following.value.value)
    raise AssertionError(f"{module.__name__}.{name} has no docstring")


@pytest.mark.parametrize("name", ["MAIL_SCOPE", "IMAP_ADMIN_SCOPE"])
def test_the_api_page_shows_each_scope_as_the_code_has_it(name: str) -> None:
    from gmail_xoauth2 import sasl

    value, text = api_entries()[name]
    assert ast.literal_eval(value) == getattr(sasl, name)
    assert text == " ".join(attribute_docstring(sasl, name).split())


@pytest.mark.parametrize("name", ["Clock", "TokenSource"])
def test_the_api_page_spells_each_alias_out_as_the_code_has_it(name: str) -> None:
    from collections.abc import Callable
    from datetime import datetime

    import gmail_xoauth2

    value, _ = api_entries()[name]
    names = {"Callable": Callable, "datetime": datetime}
    names["TokenProvider"] = gmail_xoauth2.TokenProvider
    assert eval(value, names) == getattr(gmail_xoauth2, name)
