"""The package's layers, read from its import statements (function-level imports too):

    cvlibs, utils        the ground: import no other subpackage
    datasets, transforms, models (+ losses)   components: the ground and each other
    core                 the engine: components and the ground, never apis
    apis                 the top: builder and start-up, may import anything

A module that imports from a layer above its own fails here, naming the line."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "paddleseg_unet")
GROUND = {"cvlibs", "utils"}
COMPONENTS = {"datasets", "transforms", "models"}
ALLOWED = {
    "cvlibs": {"cvlibs"},
    "utils": {"utils"},
    **{c: GROUND | COMPONENTS for c in COMPONENTS},
    "core": GROUND | COMPONENTS | {"core"},
    "apis": GROUND | COMPONENTS | {"core", "apis"},
}


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                yield path, parts


def _imported(path, parts):
    """(line, absolute module name) of every paddleseg_unet import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_package = path.endswith("__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module


def test_no_module_imports_from_a_layer_above_it():
    problems = []
    layered = 0
    for path, parts in _modules():
        if len(parts) < 2 or os.path.dirname(path) == PACKAGE:
            continue  # paddleseg_unet/__init__.py, __main__.py: entry points above every layer
        layer = parts[1]
        assert layer in ALLOWED, f"{path}: subpackage {layer!r} has no layer in this test"
        for line, module in _imported(path, parts):
            names = module.split(".")
            if names[0] != "paddleseg_unet" or len(names) < 2:
                continue
            layered += 1
            if names[1] not in ALLOWED[layer]:
                problems.append(f"{os.path.relpath(path, PACKAGE)}:{line} ({layer}) imports "
                                f"{module}")
    assert layered > 50  # the walk did see the package's imports
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_check_itself_catches_an_upward_import(tmp_path):
    bad = tmp_path / "paddleseg_unet" / "cvlibs" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from ..core import train\n    import paddleseg_unet.apis\n")
    found = [m for _, m in _imported(str(bad), ["paddleseg_unet", "cvlibs", "bad"])]
    assert found == ["paddleseg_unet.core", "paddleseg_unet.apis"]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_exists(layer):
    assert os.path.isdir(os.path.join(PACKAGE, layer))
