"""A griffe extension for the API reference: our docstrings as mkdocstrings reads them.

Two things in the package's docstrings do not read well on the site, so the site rewrites them
(the source keeps what ``help()`` and IDEs show well):

* Sphinx roles (``:func:`evaluate_pair```, ``:class:`fewshotseg.io.Volume```) become markdown
  cross-references (``[`evaluate_pair`][fewshotseg.evaluation.evaluate_pair]``) when the name
  resolves, from the docstring's own scope, to a public object on the API page; any other
  (``skimage.segmentation.slic``, private methods) becomes plain code.
* A Google ``Example:`` section becomes ``Examples:``, the spelling griffe parses as doctest
  code blocks (``Example:`` alone renders as prose, where ``[0, 0, 0]`` looks like a link).

Loaded by ``mkdocs.yml`` (``extensions: [docs/griffe_docstrings.py]``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|attr|mod|exc|obj|const):`~?([^`]+)`")
EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
#: Modules rendered on the API page (``::: module`` lines): only their members have anchors.
DOCUMENTED = tuple(
    line.split(":::", 1)[1].strip()
    for line in (Path(__file__).parent / "api.md").read_text().splitlines()
    if line.startswith(":::")
)


def _lookup(obj: griffe.Object, path: str) -> griffe.Object | griffe.Alias | None:
    try:
        return obj.modules_collection[path]
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
        return None


def _target(obj: griffe.Object, name: str) -> str | None:
    """The canonical path of ``name`` seen from ``obj``, if it is on the API page."""
    head, _, rest = name.partition(".")
    found = None
    if _lookup(obj, name) is not None:  # already fully qualified
        found = _lookup(obj, name)
    else:
        scope: Any = obj
        while scope is not None and found is None:
            try:
                path = scope.resolve(head)
            except Exception:  # griffe.NameResolutionError and friends
                path = None
            if path is not None:
                found = _lookup(obj, f"{path}.{rest}" if rest else path)
            scope = scope.parent
    if found is None:
        return None
    try:
        if found.is_attribute and found.docstring is None:
            return None  # attributes without a docstring are not rendered
    except Exception:
        return None
    try:
        canonical = found.canonical_path if not isinstance(found, griffe.Alias) else (
            found.final_target.canonical_path
        )  # fmt: skip
    except Exception:  # an alias to something outside the package
        return None
    parts = canonical.split(".")
    if any(p.startswith("_") for p in parts):
        return None  # not rendered (the API page filters private names)
    if not any(canonical == m or canonical.startswith(m + ".") for m in DOCUMENTED):
        return None
    return canonical


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with roles as cross-references or code, and ``Example:`` as ``Examples:``."""

    def role(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        target = _target(obj, name)
        return f"[`{name}`][{target}]" if target else f"`{name}`"

    return EXAMPLE.sub(r"\1Examples:", ROLE.sub(role, text))


class SiteDocstrings(griffe.Extension):
    """Rewrite every docstring once the object tree is complete (names can be resolved)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
