"""Arguments shared by the tools in ``tools/`` and the one place that turns the package's
errors into a single readable line."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional

DEBUG_ENV = "PADDLESEG_UNET_DEBUG"


class UsageError(ValueError):
    """A command-line value that cannot work; the message names the flag and what to do."""


# Integer flags shared by the tools and their smallest value (argparse's type=int takes
# any int; train-only flags are checked by core.train.TrainOptions.check).
_MIN_INT_FLAGS = {"num_workers": (0, "data loader processes; 0 loads in the main process"),
                  "num_threads": (1, "or leave it out: OMP_NUM_THREADS, else every core"),
                  "slide_batch": (1, "windows per forward pass of --is_slide")}


def check_args(args: argparse.Namespace) -> None:
    """What can be refused from the flags alone, before any config, data or model is
    loaded: integer ranges, the device, and that ``--save_dir`` / ``--save_json`` can be
    written (so a long run cannot end unable to save its results). One line each."""
    from paddleseg_unet.utils.io import check_writable_dir, check_writable_file

    for name, (low, hint) in _MIN_INT_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise UsageError(f"--{name} {value}: must be an integer >= {low} ({hint})")
    if getattr(args, "save_dir", None):
        check_writable_dir(args.save_dir, "--save_dir")
    if getattr(args, "save_json", None):
        check_writable_file(args.save_json, "--save_json")
    if getattr(args, "device", None):
        from paddleseg_unet.utils.device import check_device

        check_device(args.device)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values by dotted key, e.g. "
                             "train_dataset.dataset_root=data/DRIVE model.base_channels=16")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                        help="where to run (auto: a GPU when Paddle sees one)")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="CPU threads for Paddle (default: OMP_NUM_THREADS, else all cores)")


def add_model_path_arg(parser: argparse.ArgumentParser, what: str = "weights") -> None:
    parser.add_argument("--model_path", default=None,
                        help=f"{what}: a .pdparams file, a save_dir/iter_N folder, an http(s) "
                             f"URL or a model-zoo name (default: model.pretrained of the config)")


def apply_model_path(model: Any, model_path: Optional[str], pretrained: Optional[str],
                     strict: bool = True) -> None:
    """Load ``--model_path`` into ``model``; without it the config's ``model.pretrained``
    (already loaded when the model was built) must be set: random weights are an error."""
    if model_path:
        from paddleseg_unet.utils.weights import load_weights

        load_weights(model, model_path, strict=strict)
    elif not pretrained:
        raise UsageError("give --model_path (a file, URL or zoo name) or set "
                         "model.pretrained in the config; random weights would be meaningless")


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Flip / multi-scale / sliding-window flags, as PaddleSeg's val.py and predict.py."""
    group = parser.add_argument_group("inference")
    group.add_argument("--aug_eval", "--aug_pred", dest="aug_eval", action="store_true",
                       help="flip / multi-scale augmentation")
    group.add_argument("--scales", nargs="+", type=float, default=[1.0],
                       help="scales for --aug_eval")
    group.add_argument("--flip_horizontal", action="store_true", help="add horizontal flips")
    group.add_argument("--flip_vertical", action="store_true", help="add vertical flips")
    group.add_argument("--is_slide", action="store_true", help="sliding-window inference")
    group.add_argument("--crop_size", nargs=2, type=int, default=None, metavar=("W", "H"),
                       help="window size for --is_slide")
    group.add_argument("--stride", nargs=2, type=int, default=None, metavar=("W", "H"),
                       help="window stride for --is_slide")
    group.add_argument("--slide_batch", type=int, default=8,
                       help="windows per forward pass in --is_slide")
    group.add_argument("--aug_average", choices=["logit", "prob"], default="logit",
                       help="average raw logits (PaddleSeg) or softmax probabilities "
                            "(MMSegmentation) over flips and scales")


def inference_options(args: argparse.Namespace, test_config: Optional[Dict[str, Any]] = None
                      ) -> Dict[str, Any]:
    """Inference keyword arguments: the config's ``test_config`` first, flags on top."""
    options: Dict[str, Any] = {}
    for key in ("aug_eval", "scales", "flip_horizontal", "flip_vertical", "is_slide",
                "crop_size", "stride"):
        if test_config and key in test_config:
            options[key] = test_config[key]
    defaults = {"aug_eval": False, "scales": [1.0], "flip_horizontal": False,
                "flip_vertical": False, "is_slide": False, "crop_size": None, "stride": None}
    for key, default in defaults.items():
        value = getattr(args, key)
        if value != default or key not in options:
            options[key] = value
    options["slide_batch"] = args.slide_batch
    options["aug_average"] = args.aug_average
    _warn_unused_flags(args, options)
    if options["is_slide"] and (options["crop_size"] is None or options["stride"] is None):
        raise UsageError("--is_slide needs --crop_size W H and --stride W H "
                         "(or test_config.crop_size / stride in the config)")
    if isinstance(options["scales"], (int, float)):
        options["scales"] = [float(options["scales"])]
    return options


def _warn_unused_flags(args: argparse.Namespace, options: Dict[str, Any]) -> None:
    """PaddleSeg ignores window flags without --is_slide and flip/scale flags without
    --aug_eval, silently; we accept them too (scripts keep working) but say so."""
    from paddleseg_unet.utils.logger import logger

    unused = []
    if not options["is_slide"]:
        unused += [(f"--{k}", "--is_slide") for k in ("crop_size", "stride")
                   if getattr(args, k) is not None]
    if not options["aug_eval"]:
        unused += [(flag, "--aug_eval") for flag, given in (
            ("--scales", args.scales != [1.0]), ("--flip_horizontal", args.flip_horizontal),
            ("--flip_vertical", args.flip_vertical)) if given]
    for needed in dict.fromkeys(n for _, n in unused):
        flags = [f for f, n in unused if n == needed]
        logger.warning(f"{'/'.join(flags)} given without {needed}: ignored (add {needed} to "
                       f"use {'it' if len(flags) == 1 else 'them'})")


def run_cli(main: Callable[[Optional[List[str]]], Any], argv: Optional[List[str]] = None) -> int:
    """Run ``main``; the package's own errors print as one line (exit 1) instead of a
    traceback. Set PADDLESEG_UNET_DEBUG=1 to see the traceback anyway."""
    try:
        main(argv)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - decided by where the error class lives
        ours = type(exc).__module__.startswith("paddleseg_unet")
        if not ours or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
