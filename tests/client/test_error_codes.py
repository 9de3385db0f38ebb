"""The one table of error codes (``llamahome.codes``) and everything held to it.

The daemon's classes take their status from the table, the Python and JavaScript clients have a
class per code, the README lists the same codes under the same statuses, and each module's
docstring tree draws the classes as they are.
"""

from __future__ import annotations

import re

import pytest

from llamahome import error as errors
from llamahome._errors import _WIRE_CLASSES
from llamahome.codes import CODES, RETRYABLE_STATUSES, is_retryable
from llamahomed.core import errors as daemon
from tests.conftest import ROOT

CLIENT_SIDE_CODES = {"api_error", "connection_error", "timeout", "circuit_open"}

# The lead's list: what fails the same way every time, and what may pass when repeated.
NOT_RETRYABLE = {"model_too_large", "insufficient_storage", "model_load_failed",
                 "download_not_found", "digest_mismatch", "not_gguf", "quantize_failed"}
RETRYABLE = {"worker_crashed", "server_busy", "shutting_down", "model_reloading", "rate_limit_exceeded",
             "too_many_streams", "internal_error", "download_interrupted", "download_failed"}


def test_every_row_is_well_formed() -> None:
    for code, row in CODES.items():
        assert row.code == code and re.fullmatch(r"[a-z][a-z_]*[a-z]", code)
        assert 400 <= row.status < 600 and row.meaning and "\n" not in row.meaning


def test_retryable_is_what_may_pass_when_repeated() -> None:
    assert {c for c, row in CODES.items() if row.retryable} == RETRYABLE
    assert NOT_RETRYABLE <= {c for c, row in CODES.items() if not row.retryable}
    assert not any(row.retryable for row in CODES.values() if row.status < 500
                   and row.status != 429), "a 4xx other than 429 fails again"
    assert not any(row.retryable for row in CODES.values() if row.status == 507)


def test_an_unknown_code_is_judged_by_its_status() -> None:
    assert RETRYABLE_STATUSES == {429, 500, 502, 503, 504}
    assert is_retryable("some_new_code", 502) and is_retryable(None, 503)
    assert not is_retryable("some_new_code", 507) and not is_retryable(None, 400)
    assert not is_retryable(None, None)
    assert not is_retryable("model_too_large", 500)  # a known code wins over the status


# -- the daemon --------------------------------------------------------------------------------

def test_every_daemon_class_takes_code_and_status_from_the_table() -> None:
    for cls in daemon.ERROR_CLASSES:
        assert (cls.code, cls.status) == (CODES[cls.code].code, CODES[cls.code].status), cls
    codes = [cls.code for cls in daemon.ERROR_CLASSES]
    assert sorted(codes) == sorted(CODES), "one daemon class per code"


def test_a_daemon_class_with_an_unknown_code_or_its_own_status_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="not in llamahome.codes"):
        type("Bogus", (daemon.LlamaHomeError,), {"code": "no_such_code"})
    with pytest.raises(TypeError, match="declare only the code"):
        type("Bogus", (daemon.NotFound,), {"code": "not_found", "status": 410})
    inherited = type("Narrower", (daemon.ServerBusy,), {})
    assert (inherited.code, inherited.status) == ("server_busy", 503)


def _tree(docstring: str, root: str) -> list[tuple[int, str, list[str]]]:
    """A docstring's class tree: (column of the name, class name, the words after it)."""
    lines = docstring.splitlines()
    first = next(i for i, line in enumerate(lines) if line.split()[:1] == [root])
    rows = []
    for line in lines[first:]:
        if rows and "── " not in line:
            break  # the tree ended
        name, *words = line.split("── ")[-1].split()
        rows.append((line.index(name, line.find("── ") + 1), name, words))
    return rows


def _parents(rows: list[tuple[int, str, list[str]]]) -> dict[str, str | None]:
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for indent, name, _ in rows:
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((indent, name))
    return parents


def _public_base(cls: type) -> str:
    return next(base.__name__ for base in cls.__mro__[1:] if not base.__name__.startswith("_"))


def test_the_daemon_docstring_tree_is_the_class_tree() -> None:
    assert daemon.__doc__ is not None
    rows = _tree(daemon.__doc__, "LlamaHomeError")
    classes = {cls.__name__: cls for cls in daemon.ERROR_CLASSES}
    assert [name for _, name, _ in rows] and {name for _, name, _ in rows} == set(classes)
    for name, parent in _parents(rows).items():
        cls = classes[name]
        expected = None if cls is daemon.LlamaHomeError else _public_base(cls)
        assert parent == expected, name
    for _, name, (code, status, *_) in rows:
        assert (classes[name].code, classes[name].status) == (code, int(status)), name


# -- the Python client -------------------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_maps_to_its_own_public_client_class(code: str) -> None:
    status = CODES[code].status
    error = errors.error_from_response(
        status, {"error": {"code": code, "message": "m", "details": {}}}, {})
    assert type(error).default_code == code
    assert type(error).__name__ in errors.__all__
    assert (error.code, error.status) == (code, status)


def test_the_client_has_no_wire_class_without_a_code() -> None:
    assert sorted(cls.default_code for cls in _WIRE_CLASSES) == sorted(CODES)


def test_the_client_docstring_tree_is_the_class_tree() -> None:
    assert errors.__doc__ is not None
    rows = _tree(errors.__doc__, "LlamaHomeError")
    public = {name: getattr(errors, name) for name in errors.__all__
              if isinstance(getattr(errors, name), type)
              and issubclass(getattr(errors, name), errors.LlamaHomeError)}
    assert {name for _, name, _ in rows} == set(public)
    for name, parent in _parents(rows).items():
        cls = public[name]
        assert parent == (None if cls is errors.LlamaHomeError else _public_base(cls)), name
    for _, name, words in rows:
        default = vars(public[name]).get("default_code")
        if default in CODES:
            assert words[0] == default, name
            assert f"({CODES[default].status})" in words, name


# -- the JavaScript client ---------------------------------------------------------------------

JS_ERRORS = ROOT / "client" / "js" / "src" / "errors.js"
JS_TYPES = ROOT / "client" / "js" / "index.d.ts"
JS_CLASS = re.compile(r"export class (\w+) extends \w+ \{\s*static defaultCode = '(\w+)';")


def test_the_js_client_has_one_class_per_code_named_as_in_python() -> None:
    by_code = {code: name for name, code in JS_CLASS.findall(JS_ERRORS.read_text())}
    assert set(by_code) - CLIENT_SIDE_CODES == set(CODES)
    for code in CODES:
        python = type(errors.error_from_response(CODES[code].status,
                                                 {"error": {"code": code}}, {}))
        assert by_code[code] == python.__name__, code


def test_the_js_type_declarations_name_every_error_class() -> None:
    declared = set(re.findall(r"^export class (\w+)", JS_TYPES.read_text(), re.M))
    exported = set(re.findall(r"^export class (\w+)", JS_ERRORS.read_text(), re.M))
    assert exported <= declared


# -- the README --------------------------------------------------------------------------------

def test_the_readme_lists_every_code_under_its_status() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| status | code |"):]
    table = table[:table.index("\n\n")]
    listed: dict[str, int] = {}
    for status, codes in re.findall(r"^\| (\d{3}) \| (.*) \|$", table, re.M):
        for code in re.findall(r"`([a-z_]+)`", codes):
            listed[code] = int(status)
    assert listed == {code: row.status for code, row in CODES.items()}
