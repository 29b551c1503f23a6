"""The private APIs ppdet_dac relies on (ppdet_dac/private_apis.py): listed once, each with the
version it was written against; that version is the pinned one and the installed one, and every
listed attribute still exists. A private import that is not in the list fails too."""

import ast
import importlib
import importlib.metadata
import inspect
import os
import re

import pytest

from _common import REPO

from ppdet_dac.private_apis import DIST_NAMES, PRIVATE_USES

REQUIREMENTS = ("requirements-base.txt", "requirements.txt", "requirements-gpu.txt")
SOURCE_ROOTS = ("ppdet_dac", "deploy", "tools")
# documented public names that start with an underscore
DOCUMENTED = {("os", "_exit")}


def _pins():
    """{distribution name (lower case): [(version, file)]} of every ``name==version`` line."""
    pins = {}
    for name in REQUIREMENTS:
        with open(os.path.join(REPO, name), encoding="utf-8") as handle:
            for line in handle:
                m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+)", line)
                if m:
                    pins.setdefault(m.group(1).lower(), []).append((m.group(2), name))
    return pins


def _installed(dist):
    """(installed distribution name, version) of ``dist`` or its other names, or None."""
    for name in DIST_NAMES.get(dist, (dist,)):
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _ids(uses):
    return [use.label for use in uses]


@pytest.mark.parametrize("use", PRIVATE_USES, ids=_ids(PRIVATE_USES))
def test_recorded_version_is_the_pin(use):
    pins = _pins()
    names = DIST_NAMES.get(use.dist, (use.dist,))
    found = [(version, where) for name in names for version, where in pins.get(name, [])]
    assert found, (
        f"ppdet_dac/private_apis.py: {use.label} is recorded against {use.dist} "
        f"{use.version}, but no requirements file pins {use.dist}"
    )
    wrong = [f"{where} pins {version}" for version, where in found if version != use.version]
    assert not wrong, (
        f"ppdet_dac/private_apis.py: {use.label} (used in {use.used_in}) was "
        f"written against {use.dist} {use.version}, but "
        + "; ".join(wrong)
        + ": re-check that use against the new version, then update the entry"
    )


@pytest.mark.parametrize("use", PRIVATE_USES, ids=_ids(PRIVATE_USES))
def test_installed_version_is_the_recorded_one(use):
    installed = _installed(use.dist)
    assert installed is not None, f"{use.dist} is not installed (needed for {use.label})"
    name, version = installed
    assert version == use.version, (
        f"ppdet_dac/private_apis.py: {use.label} (used in {use.used_in}: {use.why}) was written "
        f"against {use.dist} {use.version}, installed is {name} {version}: re-check that use "
        "against the installed version, then update the entry and the pin"
    )


def _has_attribute(cls, attr):
    """``attr`` is a class attribute / method of ``cls``, or ``self.<attr> =`` is written in the
    source of ``cls`` or one of its bases."""
    if hasattr(cls, attr):
        return True
    assigned = re.compile(r"self\." + re.escape(attr) + r"\s*(:[^=]+)?=[^=]")
    for base in inspect.getmro(cls):
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):  # builtins and compiled classes have no Python source
            continue
        if assigned.search(source):
            return True
    return False


@pytest.mark.parametrize("use", PRIVATE_USES, ids=_ids(PRIVATE_USES))
def test_listed_attributes_exist(use):
    module = importlib.import_module(use.module)
    assert hasattr(module, use.name), (
        f"ppdet_dac/private_apis.py: {use.label} is gone from {use.dist} (used in {use.used_in})"
    )
    target = getattr(module, use.name)
    missing = [attr for attr in use.attrs if not _has_attribute(target, attr)]
    assert not missing, (
        f"ppdet_dac/private_apis.py: {use.label} no longer has "
        f"{', '.join(missing)} (used in {use.used_in})"
    )


def _own(path, module):
    """``module`` is ppdet_dac or a script's sibling (tools/_threads.py for tools/train.py)."""
    top = module.split(".")[0]
    folder = os.path.dirname(path)
    return (
        top == "ppdet_dac"
        or os.path.exists(os.path.join(folder, top + ".py"))
        or os.path.isdir(os.path.join(folder, top))
    )


def _private_imports(path):
    """(module, name) of every absolute import in ``path`` that reaches a private name of
    another package: ``from a._b import c``, ``from a import _b``, ``import a._b``, and
    ``a._b`` attribute access on an imported module ``a``."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if _own(path, node.module):
                continue
            for alias in node.names:
                if any(
                    part.startswith("_") for part in node.module.split(".")
                ) or alias.name.startswith("_"):
                    found.append((node.module, alias.name))
                else:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _own(path, alias.name):
                    continue
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(tuple(alias.name.rpartition(".")[::2]))
                modules[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.value.id in modules
        ):
            found.append((modules[node.value.id], node.attr))
    return found


def _source_files():
    for root in SOURCE_ROOTS:
        for folder, dirs, files in os.walk(os.path.join(REPO, root)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
            yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


def test_every_private_import_is_listed():
    """A private module or name imported from another package (stdlib included: nothing pins
    it) must be an entry of the table: its module and name, or the module itself."""
    listed = {(use.module, use.name) for use in PRIVATE_USES}
    listed_modules = {use.module for use in PRIVATE_USES}
    unlisted = []
    for path in _source_files():
        for module, name in _private_imports(path):
            if (
                module,
                name,
            ) not in listed | DOCUMENTED and f"{module}.{name}" not in listed_modules:
                unlisted.append(f"{os.path.relpath(path, REPO)}: {module}.{name}")
    assert not unlisted, (
        "private APIs used but not listed in ppdet_dac/private_apis.py (add an "
        "entry with the pinned version, or use a public API): " + "; ".join(unlisted)
    )
