"""The package's rooms import one way: engine never imports deploy/analysis; modeling imports
none of engine/deploy/analysis/tools; ops imports nothing else of the package."""

import ast
import os

import pytest

from _common import REPO

PACKAGE = os.path.join(REPO, "ppdet_dac")
FORBIDDEN = {
    "ops": ("modeling", "engine", "deploy", "analysis", "data", "interop"),
    "modeling": ("engine", "deploy", "analysis"),
    "data": ("engine", "deploy", "analysis", "modeling"),
    "interop": ("engine", "deploy", "analysis"),
    "engine": ("deploy", "analysis"),
    "deploy": ("analysis",),
}


def _imported_rooms(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: inside its own room unless it climbs out
                if node.level > 1:
                    yield module.split(".")[0]
            elif module.startswith("ppdet_dac."):
                yield module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ppdet_dac."):
                    yield alias.name.split(".")[1]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_go_one_way(room):
    wrong = []
    for folder, _, files in os.walk(os.path.join(PACKAGE, room)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                wrong += [
                    f"{os.path.relpath(path, REPO)} imports ppdet_dac.{other}"
                    for other in _imported_rooms(path)
                    if other in FORBIDDEN[room]
                ]
    assert wrong == []
