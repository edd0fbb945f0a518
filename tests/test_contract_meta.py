"""Meta-tests that keep the contract's promises honest.

* every hookspec is documented in the spec (when it is called, what to return, how results
  combine) and has a section in docs/hooks.md titled with its exact signature;
* every hookspec has a test named ``test_hook_<name>`` somewhere in the repository;
* every workspace plugin loads through its entry point and ``check_pending()`` passes.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from adconnect import hookspecs
from adconnect.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(
    n
    for n, f in vars(hookspecs).items()
    if n.startswith("adconnect_") and callable(f) and hasattr(f, "adconnect_spec")
)


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in ROOT.rglob("test_*.py"):
        if any(part in {".venv", ".tools", "node_modules"} for part in path.parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    return names


def test_there_are_hooks_in_every_phase():
    assert len(HOOKS) >= 15
    source = inspect.getsource(hookspecs)
    for phase in ("registration", "OAuth", "scope validation", "discovery", "sync", "health", "events"):
        assert f"# --- {phase}" in source, phase


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_in_its_spec(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    for section in ("When:", "Return:", "Combine:"):
        assert section in doc, f"{hook} docstring lacks '{section}'"
    signature = inspect.signature(getattr(hookspecs, hook))
    assert signature.return_annotation is not inspect.Signature.empty, f"{hook} has no return type"
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{hook}({parameter.name}) untyped"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_in_docs_hooks_md(hook):
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    page = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert f"### `{hook}({args})`" in page, f"docs/hooks.md has no section for {hook}({args})"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in _test_names(), f"write a test named test_hook_{hook}"


def test_every_installed_plugin_loads_cleanly():
    host = load_plugins()
    host.pm.check_pending()
    assert host.problems == [], [f"{p.name}: {p.kind}: {p.message}" for p in host.problems]
