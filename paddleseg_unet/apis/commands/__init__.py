"""The commands, as ``paddleseg-unet COMMAND ...`` (the console entry point) and as the
PaddleSeg-style scripts ``tools/*.py`` that wrap the same functions: each command module has
``parse_args(argv)`` and ``main(argv)``, so both spellings take the same flags."""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

# command -> (module, the tools/ script that runs the same function)
COMMANDS = {
    "train": ("train", "tools/train.py"),
    "val": ("val", "tools/val.py"),
    "predict": ("predict", "tools/predict.py"),
    "export": ("export", "tools/export.py"),
    "convert": ("convert", "tools/convert_dataset.py"),
    "analyze": ("analyze", "tools/analyze_model.py"),
    "plot": ("plot", "tools/plot_log.py"),
    "configs": ("configs", None),
}


def _usage() -> str:
    lines = ["usage: paddleseg-unet COMMAND [flags]  ('paddleseg-unet COMMAND --help')", "",
             "commands:"]
    for name, (module, script) in COMMANDS.items():
        doc = (importlib.import_module(f"{__name__}.{module}").__doc__ or "").strip()
        first = doc.split("\n")[0].split(":")[0].rstrip(".")
        lines.append(f"  {name:<8} {first}" + (f" (also {script})" if script else ""))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """``paddleseg-unet COMMAND [flags]``: run one command; its errors print as one line."""
    from paddleseg_unet.apis.cli import run_cli

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]][0]}")
    sys.argv[0] = f"paddleseg-unet {argv[0]}"  # argparse's usage line names the command
    if argv[0] == "convert":  # returns its exit code itself
        return module.main(argv[1:])
    return run_cli(module.main, argv[1:])
