"""Importing the package is side-effect free: every module (and every tool) imports in a fresh
interpreter without printing anything and without configuring logging; the commands set up
logging themselves.

Paddle is not that quiet, so the subprocess imports Paddle alone first and takes what that
does as the baseline: on this machine it warns "No ccache found"
(paddle/utils/cpp_extension/extension_utils.py), prints "WARNING: OMP_NUM_THREADS set to
..." when that variable is not 1 (paddle/base/__init__.py), and attaches a StreamHandler
with level INFO to the root logger (paddle/distributed/utils/log_utils.py, get_logger
called at import by paddle/distributed/auto_parallel/random.py). Everything after the
baseline must print nothing and leave the root logger as Paddle left it."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Printed on both streams once Paddle alone is imported; only what follows is checked.
BASELINE_END = "--- paddle imported ---"
PADDLE_BASELINE = f"""
import logging, sys
import paddle
ROOT_BEFORE = (list(logging.getLogger().handlers), logging.getLogger().level)
print({BASELINE_END!r}, flush=True)
print({BASELINE_END!r}, file=sys.stderr, flush=True)
"""


def all_modules():
    """Dotted names of every module of the package."""
    names = []
    package = os.path.join(REPO, "paddleseg_unet")
    for root, _, files in os.walk(package):
        for name in sorted(files):
            if name.endswith(".py") and name != "__main__.py":  # runs the command line
                rel = os.path.relpath(os.path.join(root, name), REPO)[:-3].split(os.sep)
                names.append(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    return sorted(names)


def import_all_script(prelude: str = "") -> str:
    """Python source that runs ``prelude``, then imports every package module and loads
    every ``tools/*.py`` (their ``main`` does not run on import)."""
    tools = sorted(f for f in os.listdir(os.path.join(REPO, "tools")) if f.endswith(".py"))
    return "\n".join([
        "import importlib, importlib.util, os, sys",
        prelude,
        f"for name in {all_modules()!r}:",
        "    importlib.import_module(name)",
        f"for name in {tools!r}:",
        f"    path = os.path.join({REPO!r}, 'tools', name)",
        "    spec = importlib.util.spec_from_file_location('tool_' + name[:-3], path)",
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))",
    ])


def run_python(source: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", source], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def after_baseline(text: str) -> str:
    assert BASELINE_END in text, text[-2000:]
    return text.split(BASELINE_END + "\n", 1)[1]


CHECK_LOGGING = """
import logging
def describe(lg):
    return [type(h).__name__ for h in lg.handlers], lg.level
package = logging.getLogger("paddleseg_unet")
assert all(isinstance(h, logging.NullHandler) for h in package.handlers), describe(package)
assert package.level == logging.NOTSET and package.propagate, describe(package)
for name, lg in logging.Logger.manager.loggerDict.items():
    if name.startswith("paddleseg_unet.") and isinstance(lg, logging.Logger):
        assert not lg.handlers and lg.level == logging.NOTSET, (name, describe(lg))
root = logging.getLogger()
assert (root.handlers, root.level) == ROOT_BEFORE, (describe(root), ROOT_BEFORE)
"""


def test_importing_everything_prints_nothing_and_configures_no_logging():
    proc = run_python(import_all_script(PADDLE_BASELINE) + CHECK_LOGGING)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert after_baseline(proc.stdout) == ""
    assert after_baseline(proc.stderr) == ""


def test_the_check_sees_a_handler_added_at_import():
    proc = run_python(PADDLE_BASELINE + "import paddleseg_unet\n"
                      "logging.getLogger('paddleseg_unet').addHandler(logging.StreamHandler())"
                      + CHECK_LOGGING)
    assert proc.returncode != 0 and "StreamHandler" in proc.stderr


def test_setup_logger_still_prints_for_the_commands():
    proc = run_python("from paddleseg_unet.utils.logger import setup_logger, logger\n"
                      "setup_logger()\nlogger.info('hello')\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[INFO] hello")
