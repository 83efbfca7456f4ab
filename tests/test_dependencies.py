"""Every third-party module the code imports is a declared dependency in setup.py.

The imports are read with ``ast`` (those inside functions too) from ``paddleseg_unet/`` and
``tools/`` (checked against ``install_requires`` and the extras) and from ``tests/``
(which may also use the ``test`` extra). An import inside a ``try`` that catches
``ImportError`` is optional: its distribution must be in an extra, so ``pip install .[x]``
brings it.

A module name is not always its distribution's name; ``DISTRIBUTIONS`` maps the ones that
differ (a module missing there is taken to be its own distribution). Paddle is required but
declared through the ``cpu`` / ``gpu`` extras (the user picks the wheel), hence
``CHOSEN_BY_EXTRA``."""
import ast
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDLIB = getattr(sys, "stdlib_module_names", None)  # Python >= 3.10
pytestmark = pytest.mark.skipif(STDLIB is None, reason="needs sys.stdlib_module_names (3.10+)")

# import name -> the distribution(s) that provide it
DISTRIBUTIONS = {
    "paddle": {"paddlepaddle", "paddlepaddle-gpu"},
    "cv2": {"opencv-python-headless", "opencv-python"},
    "yaml": {"pyyaml"},
    "PIL": {"pillow"},
    "sklearn": {"scikit-learn"},
}
# required, but each install chooses one of these extras to get it
CHOSEN_BY_EXTRA = {"paddle": ("cpu", "gpu")}
# modules the tests write into tmp_path and import (the tests' and tools' own files, imported
# by file name, are found on disk)
WRITTEN_BY_TESTS = {"tests_lazy_registry", "metrics_dist_data"}


def _setup_requirements():
    """(install_requires names, {extra: names}) read from setup.py's ``setup(...)`` call."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("install_requires", "extras_require")}

    def names(reqs):
        return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in reqs}

    return names(kw.get("install_requires", [])), {
        extra: names(reqs) for extra, reqs in kw.get("extras_require", {}).items()}


def _catches_import_error(handler):
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(k, "id", None) in ("ImportError", "ModuleNotFoundError") for k in kinds)


def third_party_imports(path):
    """{(top-level module, optional?)} -> first line, for one file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for stmt in node.body:
                guarded.update(id(n) for n in ast.walk(stmt))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in STDLIB or top in ("paddleseg_unet", "__future__"):
                continue
            found.setdefault((top, id(node) in guarded), node.lineno)
    return found


def _python_files(folder):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def _problems(folders, allowed_extras):
    required, extras = _setup_requirements()
    offered = required.union(*(extras.get(e, set()) for e in allowed_extras))
    optional_ok = required.union(*extras.values())
    local = WRITTEN_BY_TESTS | {os.path.basename(p)[:-3] for folder in ("tests", "tools")
                                for p in _python_files(folder)}
    problems = []
    for folder in folders:
        for path in _python_files(folder):
            for (module, optional), line in third_party_imports(path).items():
                if module in local:
                    continue
                where = f"{os.path.relpath(path, REPO)}:{line} imports {module}"
                dists = DISTRIBUTIONS.get(module, {module.lower()})
                if module in CHOSEN_BY_EXTRA:
                    missing = [e for e in CHOSEN_BY_EXTRA[module]
                               if not dists & extras.get(e, set())]
                    if missing:
                        problems.append(f"{where}: not in the extras {missing}")
                elif optional:
                    if not dists & optional_ok:
                        problems.append(f"{where} (optional): no extra declares {sorted(dists)}")
                elif not dists & offered:
                    problems.append(f"{where}: {sorted(dists)} is not a declared dependency")
    return problems


def test_package_and_tools_import_only_declared_dependencies():
    problems = _problems(["paddleseg_unet", "tools"], allowed_extras=())
    assert not problems, "undeclared imports (add them to setup.py):\n" + "\n".join(problems)


def test_tests_import_only_declared_dependencies():
    problems = _problems(["tests"], allowed_extras=("test",))
    assert not problems, "undeclared imports (add them to setup.py):\n" + "\n".join(problems)


def test_the_check_sees_function_level_and_optional_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\nimport numpy as np\n"
                   "def f():\n    import matplotlib.pyplot as plt\n"
                   "    try:\n        import onnxruntime\n    except ImportError:\n        pass\n"
                   "from paddleseg_unet.utils import io\n")
    assert set(third_party_imports(str(src))) == {
        ("numpy", False), ("matplotlib", False), ("onnxruntime", True)}


@pytest.mark.parametrize("module", ["matplotlib", "PIL", "cv2", "yaml", "tqdm", "visualdl"])
def test_known_runtime_modules_are_in_install_requires(module):
    required, _ = _setup_requirements()
    assert DISTRIBUTIONS.get(module, {module.lower()}) & required
