"""The shape of the house (issue 18): modules and functions stay small, and docs/architecture.md,
the map a new contributor reads first, matches the code (its modules and its import arrows).

Everything here reads the source with `ast`; nothing is imported or run."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fewshotseg"
MAP = REPO / "docs" / "architecture.md"

MAX_MODULE_LINES = 700
MAX_FUNCTION_CODE_LINES = 80

# Exceptions to the limits, each with its reason; keep this short. An entry that is no longer
# needed fails the test, so the list only shrinks. Keys: a module's path relative to the
# repository, or "path:Qualified.function_name".
ALLOWED: dict[str, str] = {}


# ------------------------------------------------------------------------------ measuring
def module_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def function_code_lines(source: str) -> dict[str, int]:
    """``{qualified name: lines of code}`` of every function and method in ``source``: the
    lines of its body without the docstring, blank lines and comment-only lines (a nested
    function counts in its parent too)."""
    lines = source.splitlines()
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                body = child.body[1:] if _is_docstring(child.body[0]) else child.body
                count = 0
                if body:
                    for text in lines[body[0].lineno - 1 : child.end_lineno]:
                        stripped = text.strip()
                        count += bool(stripped) and not stripped.startswith("#")
                out[name] = count
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def oversized() -> dict[str, int]:
    """Every module over MAX_MODULE_LINES and function over MAX_FUNCTION_CODE_LINES."""
    found: dict[str, int] = {}
    for path in module_files():
        rel = path.relative_to(REPO).as_posix()
        source = path.read_text(encoding="utf-8")
        n_lines = len(source.splitlines())
        if n_lines > MAX_MODULE_LINES:
            found[rel] = n_lines
        for name, count in function_code_lines(source).items():
            if count > MAX_FUNCTION_CODE_LINES:
                found[f"{rel}:{name}"] = count
    return found


# --------------------------------------------------------------------------------- limits
def test_no_module_or_function_is_over_the_limits():
    over = {k: n for k, n in oversized().items() if k not in ALLOWED}
    assert not over, (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_CODE_LINES} lines of code "
        f"per function: {over}. Move a concept into a module of its own (and add it to "
        "docs/architecture.md), or split the function."
    )


def test_every_allowed_exception_is_still_needed():
    stale = sorted(set(ALLOWED) - set(oversized()))
    assert not stale, f"no longer over the limits, remove from ALLOWED: {stale}"


def test_the_counter_sees_a_long_function_and_skips_docstrings_blanks_and_comments():
    method = textwrap.dedent('''
        class Box:
            def method(self):
                """A docstring
                of three lines.
                """
                # a comment

                return 1
        ''')
    long = ["def long():", "    '''Doc.'''", *(f"    x{i} = {i}" for i in range(81)),
            "    # a comment", "", "    def inner():", "        pass"]  # fmt: skip
    counts = function_code_lines(method + "\n".join(long) + "\n")
    assert counts["Box.method"] == 1
    assert counts["long"] == 83 and counts["long.inner"] == 1  # 81 + def inner + pass
    assert counts["long"] > MAX_FUNCTION_CODE_LINES  # so the limit test would fail on it


# ------------------------------------------------------------------------- the map's truth
def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md has no '## {title}' section"
    return match.group(1)


def _full(short: str) -> str:
    return short if short == "fewshotseg" else f"fewshotseg.{short}"


def _list_items(section: str) -> list[str]:
    """The section's list items, continuation lines joined."""
    return [" ".join(item.split()) for item in re.split(r"^- ", section, flags=re.M)[1:]]


def documented_modules() -> set[str]:
    items = _list_items(_section(MAP.read_text(encoding="utf-8"), "Modules"))
    return {_full(re.match(r"`([\w.]+)`", item).group(1)) for item in items}


def documented_arrows() -> set[tuple[str, str]]:
    arrows = set()
    for item in _list_items(_section(MAP.read_text(encoding="utf-8"), "Import arrows")):
        source, sep, targets = item.partition(" -> ")
        assert sep, f"not an arrow: {item!r}"
        for target in re.findall(r"`([\w.]+)`", targets):
            arrows.add((_full(source.strip("` ")), _full(target)))
    return arrows


def code_arrows() -> set[tuple[str, str]]:
    """(importer, imported) for every import between the package's modules, at module level
    or inside functions; ``from fewshotseg import io`` points at ``fewshotseg.io``."""
    modules = {module_name(p): p for p in module_files()}

    def owner(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    arrows = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "fewshotseg"]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.split(".")[0] == "fewshotseg":
                    targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                imported = target if target in modules else owner(target)
                if imported != name:
                    arrows.add((name, imported))
    return arrows


def test_the_map_lists_exactly_the_packages_modules():
    in_code = {module_name(p) for p in module_files()}
    listed = documented_modules()
    assert listed == in_code, (
        f"docs/architecture.md lists modules that do not exist: {sorted(listed - in_code)}; "
        f"and misses: {sorted(in_code - listed)}"
    )


def test_every_arrow_of_the_map_is_an_import_in_the_code():
    missing = sorted(documented_arrows() - code_arrows())
    assert not missing, f"docs/architecture.md shows imports the code does not have: {missing}"


def test_the_arrow_reader_sees_imports_of_every_form():
    arrows = code_arrows()
    assert ("fewshotseg.datasets", "fewshotseg.io") in arrows  # from fewshotseg import io as fio
    assert ("fewshotseg.cli", "fewshotseg.cli._parser") in arrows  # from a.b.c import name
    assert ("fewshotseg.volume", "fewshotseg.inference") in arrows  # inside a function
    assert ("fewshotseg.models", "fewshotseg.models.alp") in arrows
    assert not any(a == b for a, b in arrows)


def test_the_map_is_in_the_site_navigation():
    assert "architecture.md" in (REPO / "mkdocs.yml").read_text(encoding="utf-8")


def test_every_import_in_the_code_is_an_arrow_of_the_map():
    unlisted = sorted(code_arrows() - documented_arrows())
    assert not unlisted, f"imports missing from docs/architecture.md's arrows: {unlisted}"
