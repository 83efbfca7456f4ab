"""Every ```bash block of README.md and docs/*.md, run as written, so the docs stay true.

A block is either run, command by command, in one scratch folder shared by all blocks (files
in order: README.md, then docs/*.md by name; a later block may use what an earlier one
wrote, as a reader following the docs would), or marked on the line before it with

    <!-- docs-test: skip (why: real data, a GPU, the internet, a server...) -->

and then each of its commands is still checked: a ``tools/X.py`` command's arguments go
through that tool's own argparse parser (paths need not exist), and its ``--config`` (which
must exist, or be the placeholder ``C``) is loaded with its ``--opts``. A renamed flag, a
wrong path or a config key that no longer exists fails either way.

What the scratch folder holds: ``configs`` and ``tests`` (links to the repository's), a home
folder (``$HOME``, so ``~/.paddleseg_unet/...`` is the generated demo set), and ``data/DRIVE``,
``photos/``, ``my_fundus_photos/`` pointing at that synthetic demo set (the same layout as a
converted DRIVE). A code block marked ``<!-- docs-test: output -->`` must match what the
previous command printed, numbers aside.

The only changes made to a command, so that it runs in seconds on a CPU (SUBSTITUTIONS):
"""
import argparse
import ast
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import List, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(f"docs/{n}" for n in os.listdir(os.path.join(REPO, "docs"))
                              if n.endswith(".md"))
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
OUTPUT = re.compile(r"<!--\s*docs-test:\s*output\s*-->")
ZOO_2_CLASSES = ("unet_drive_128x128_40k", "unet_stare_128x128_40k", "unet_chasedb1_128x128_40k",
                 "unet_hrf_256x256_40k")
TINY_OPTS = ["model.base_channels=4"]
SUBSTITUTIONS = {
    "pip install -e \".[extras]\"": "not run: each extra must exist in setup.py",
    "python -m pytest ... tests": "python -m pytest --collect-only ... tests (no recursion)",
    "tools/train.py": "+ --iters 2 --save_interval 2 --batch_size 2 --log_iters 1",
    "paddleseg-unet CMD": "the function of the matching tools/*.py (same flags), in-process",
    "tools/{train,val,predict,export}.py --config": f"+ --opts {' '.join(TINY_OPTS)}",
    "--model_path <2-class zoo name>": "--model_path <random width-4 UNet weights>",
}
__doc__ += "".join(f"\n    {k:48} -> {v}" for k, v in SUBSTITUTIONS.items())
PLACEHOLDERS = {"...", "C"}


def bash_blocks() -> List[Tuple[str, int, str, str, str]]:
    """(file, line, skip reason or '', command text, text of a following output block)."""
    blocks = []
    for doc in DOCS:
        lines = open(os.path.join(REPO, doc), encoding="utf-8").read().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() != "```bash":
                i += 1
                continue
            start = i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.search(before)
            output = ""
            after = next((j for j in range(end + 1, len(lines)) if lines[j].strip()), None)
            if after is not None and OUTPUT.search(lines[after]):
                o_start = after + 1
                o_end = next(j for j in range(o_start + 1, len(lines)) if lines[j].strip() == "```")
                output = "\n".join(lines[o_start + 1:o_end])
            blocks.append((doc, start + 1, skip.group("why") if skip else "",
                           "\n".join(lines[start + 1:end]), output))
            i = end + 1
    return blocks


def commands(text: str) -> List[List[str]]:
    """The commands of a block: continuation lines joined, comments dropped, ``&&`` split."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1:]
    return out


def load_tool(name: str):
    if not os.path.isfile(os.path.join(REPO, "tools", f"{name}.py")):  # paddleseg-unet only
        return importlib.import_module(f"paddleseg_unet.apis.commands.{name}")
    spec = importlib.util.spec_from_file_location(f"docs_tool_{name}",
                                                  os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_argv(words: List[str]) -> Tuple[str, List[str]]:
    """('train', argv) for any command that runs tools/train.py (also under a launcher, and
    as the installed ``paddleseg-unet train``)."""
    if words[0] == "paddleseg-unet" and len(words) > 1:
        from paddleseg_unet.apis.commands import COMMANDS
        script = COMMANDS.get(words[1], (None, None))[1]
        return (script[len("tools/"):-len(".py")] if script else words[1]), words[2:]
    for i, word in enumerate(words):
        match = re.fullmatch(r"tools/(\w+)\.py", word)
        if match:
            return match.group(1), words[i + 1:]
    return "", []


def setup_extras() -> set:
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return {k.value for k in node.value.keys}
    raise AssertionError("setup.py has no extras_require")


def check_pip(words: List[str]) -> None:
    assert words[:3] == ["pip", "install", "-e"] and len(words) == 4, \
        f"{' '.join(words)}: expected pip install -e \".[extras]\""
    target = words[3]
    match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
    assert match, f"pip install -e {target}: expected .[extras]"
    unknown = set((match.group(1) or "").split(",")) - setup_extras() - {""}
    assert not unknown, f"setup.py has no extra(s) {sorted(unknown)}"


def opts_of(argv: List[str]) -> List[str]:
    if "--opts" not in argv:
        return []
    rest = argv[argv.index("--opts") + 1:]
    return rest[:next((i for i, w in enumerate(rest) if w.startswith("--")), len(rest))]


def check_flags(tool: str, argv: List[str], where: str) -> None:
    """Parse ``argv`` with the tool's parser; load its config with its --opts."""
    argv = [w for w in argv if w not in ("...",)]
    module = load_tool(tool)
    try:
        parsers = []
        real_parse = argparse.ArgumentParser.parse_args

        def recording(self, *a, **k):
            parsers.append(self)
            return real_parse(self, *a, **k)
        argparse.ArgumentParser.parse_args = recording
        try:
            module.parse_args(argv)
        finally:
            argparse.ArgumentParser.parse_args = real_parse
        # argparse accepts unambiguous prefixes (--flip_h); the docs must spell flags out.
        known = parsers[0]._option_string_actions
        inexact = [w for w in argv if w.startswith("--") and w.split("=")[0] not in known]
        assert not inexact, f"{where}: not the full name of a flag: {inexact}"
    except SystemExit as exc:
        raise AssertionError(f"{where}: tools/{tool}.py refuses {argv}: exit {exc.code}")
    if "--config" in argv:
        config = argv[argv.index("--config") + 1]
        if config in PLACEHOLDERS:
            return
        from paddleseg_unet.cvlibs.config import load_config, resolve_config
        path = os.path.join(REPO, config)
        if not os.path.isfile(path):  # a packaged config's name
            path = resolve_config(config)
        load_config(path, opts=opts_of(argv), purpose=None)


def small(tool: str, argv: List[str], weights: str) -> List[str]:
    """Apply SUBSTITUTIONS to a tool's argv."""
    argv = [weights if (prev == "--model_path" and w in ZOO_2_CLASSES) else w
            for prev, w in zip([""] + argv, argv)]
    if tool == "train":
        argv += ["--iters", "2", "--save_interval", "2", "--batch_size", "2", "--log_iters", "1"]
    if "--config" in argv and tool in ("train", "val", "predict", "export"):
        if "--opts" in argv:
            at = argv.index("--opts") + 1
            argv[at:at] = TINY_OPTS
        else:
            argv += ["--opts"] + TINY_OPTS
    return argv


def masked(text: str) -> List[str]:
    """Lines with every number replaced by N and runs of spaces collapsed."""
    text = re.sub(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?", "N", text)
    return [re.sub(r"\s+", " ", line).replace(" ]", "]").strip()
            for line in text.splitlines() if line.strip()]


def write_own_data(folder) -> None:
    """A user's folder (docs/custom_data.md): JPEG images, NAME_mask.png 0/255 masks."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(5)
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    yy, xx = np.mgrid[:96, :96]
    for i in range(10):
        cy, cx, r = rng.uniform(30, 66), rng.uniform(30, 66), rng.uniform(12, 24)
        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).astype(np.uint8)
        image = rng.integers(0, 90, (96, 96, 3)) + 120 * mask[..., None]
        cv2.imwrite(str(folder / "images" / f"cell{i:02d}.jpg"), image.astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"cell{i:02d}_mask.png"), mask * 255)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    home = root / "home"
    home.mkdir()
    for name in ("configs", "tests"):
        os.symlink(os.path.join(REPO, name), root / name)
    saved = {k: os.environ.get(k) for k in ("HOME", "PADDLESEG_UNET_HOME")}
    os.environ["HOME"] = str(home)
    os.environ.pop("PADDLESEG_UNET_HOME", None)
    import paddle

    from paddleseg_unet.datasets import SyntheticVessels
    from paddleseg_unet.models import UNet
    from paddleseg_unet.utils.weights import save_pdparams

    demo = SyntheticVessels(mode="val").dataset_root  # the quick start's demo set
    (root / "data").mkdir()
    os.symlink(demo, root / "data" / "DRIVE")
    for name in ("photos", "my_fundus_photos"):
        os.symlink(os.path.join(demo, "images", "val"), root / name)
    write_own_data(root / "my_data")
    paddle.seed(0)
    weights = str(root / "tiny_unet.pdparams")
    save_pdparams(UNet(num_classes=2, base_channels=4).state_dict(), weights)
    yield {"root": str(root), "home": str(home), "weights": weights}
    from paddleseg_unet.utils.logger import setup_logger
    setup_logger()  # the tools bound the logger to a captured stdout
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


BLOCKS = bash_blocks()


def test_blocks_found():
    assert len(BLOCKS) > 10 and any(not b[2] for b in BLOCKS)


@pytest.mark.parametrize("doc,line,skip,text,output", BLOCKS,
                         ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_doc_block(scratch, monkeypatch, capsys, doc, line, skip, text, output):
    from paddleseg_unet.apis.cli import run_cli

    monkeypatch.chdir(scratch["root"])
    for words in commands(text):
        where = f"{doc}:{line}: {' '.join(words)}"
        tool, argv = tool_argv(words)
        argv = [os.path.expanduser(w) if w.startswith("~/") else w for w in argv]
        if words[0] == "pip":
            check_pip(words)
        elif tool:
            check_flags(tool, argv, where)
            if skip:
                continue
            assert words[:2] == ["python", f"tools/{tool}.py"] or words[0] == "paddleseg-unet", \
                f"{where}: run only as 'python tools/X.py' or 'paddleseg-unet CMD' (or mark " \
                f"the block skipped)"
            code = run_cli(load_tool(tool).main, small(tool, argv, scratch["weights"]))
            captured = capsys.readouterr()
            assert code == 0, f"{where}: exit {code}\n{captured.out[-3000:]}\n{captured.err[-3000:]}"
            printed = captured.out + captured.err
        elif words[:3] == ["python", "-m", "pytest"]:
            if skip:
                continue
            proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                   *words[3:]], cwd=REPO, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, f"{where}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            printed = proc.stdout
        elif skip:
            assert shutil.which(words[0]), f"{where}: {words[0]} is not installed"
            continue
        else:
            raise AssertionError(f"{where}: no way to run this here; mark the block "
                                 f"<!-- docs-test: skip (why) -->")
    if output and not skip:
        shown, real = masked(output), masked(printed)
        missing = [s for s in shown if s not in real]
        assert not missing, f"{doc}:{line}: output block lines not printed: {missing}"
        eval_lines = [r for r in real if "[EVAL]" in r]
        assert all(r in shown for r in eval_lines), f"{doc}:{line}: {eval_lines} vs {shown}"


ENV_READ = re.compile(r"""environ(?:\.get|\.setdefault)?[\[(]\s*["']([A-Za-z_]+)["']"""
                      r"""|getenv\(\s*["']([A-Za-z_]+)["']|_ENV = ["']([A-Za-z_]+)["']""")


def test_environment_variables_are_documented():
    documented = open(os.path.join(REPO, "docs", "installation.md"), encoding="utf-8").read()
    read = set()
    for folder in ("paddleseg_unet", "tools", "tests", "benchmarks"):
        for base, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith(".py") and name != "test_docs_commands.py":
                    text = open(os.path.join(base, name), encoding="utf-8").read()
                    read |= {next(g for g in m.groups() if g) for m in ENV_READ.finditer(text)}
    assert {"PADDLESEG_UNET_HOME", "PADDLESEG_UNET_SHARED_DATA", "FLAGS_selected_gpus"} <= read
    missing = sorted(v for v in read - {"PYTHONPATH", "PATH"} if f"`{v}`" not in documented)
    assert not missing, f"docs/installation.md does not list {missing}"


RECIPES = sorted(os.path.join("configs", "unet_small", n)
                 for n in os.listdir(os.path.join(REPO, "configs", "unet_small"))
                 if n.endswith(".yml"))


def header_commands(path: str) -> List[List[str]]:
    """The commands of a recipe's header comment: every comment line from the first that
    starts with ``python``, backslash continuations joined."""
    lines = []
    for line in open(os.path.join(REPO, path), encoding="utf-8"):
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if lines or text.startswith("python"):
            lines.append(text)
    return commands("\n".join(lines))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_header_command(recipe):
    """Each CPU recipe names its exact command(s); one of them trains this very config."""
    trains = []
    for words in header_commands(recipe):
        tool, argv = tool_argv(words)
        assert tool, f"{recipe}: {' '.join(words)} runs no tools/*.py"
        check_flags(tool, argv, recipe)
        if tool == "train":
            trains.append(argv[argv.index("--config") + 1])
    assert trains == [recipe.replace(os.sep, "/")], \
        f"{recipe}: the header should train this config once, found {trains}"
