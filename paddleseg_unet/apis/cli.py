"""What every command shares: its common arguments, the start-up (logger, config, device,
builder; :func:`start`), and the one place that turns the package's errors into a single
readable line (:func:`run_cli`)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

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
    for flag in ("save_json", "per_image", "json"):
        if getattr(args, flag, None):
            check_writable_file(getattr(args, flag), f"--{flag}")
    if getattr(args, "curves", None):
        check_writable_dir(args.curves, "--curves")
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
    parser.add_argument("--device_id", type=int, default=None,
                        help="which GPU (default: the launcher's, else 0); ignored on a CPU")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="CPU threads for Paddle (default: OMP_NUM_THREADS, else all cores)")


def add_model_path_arg(parser: argparse.ArgumentParser, what: str = "weights") -> None:
    parser.add_argument("--model_path", default=None,
                        help=f"{what}: a .pdparams file, a save_dir/iter_N folder, an http(s) "
                             f"URL or a model-zoo name (default: model.pretrained of the config)")


def apply_model_path(model: Any, model_path: Optional[str], pretrained: Optional[str],
                     strict: bool = True) -> str:
    """Load ``--model_path`` into ``model``; without it the config's ``model.pretrained``
    (already loaded when the model was built) must be set: random weights are an error.
    Returns the local weights file."""
    from paddleseg_unet.utils.weights import load_weights, resolve_weights

    if model_path:
        load_weights(model, model_path, strict=strict)
        return resolve_weights(model_path)
    if not pretrained:
        raise UsageError("give --model_path (a file, URL or zoo name) or set "
                         "model.pretrained in the config; random weights would be meaningless")
    return resolve_weights(pretrained)


def model_for_inference(args: argparse.Namespace, cfg: Any, builder: Any) -> Any:
    """The config's model with ``--model_path`` (or ``model.pretrained``) loaded, as
    ``--backend`` asks: eager, or (``auto``) the fastest correct path, with one log line."""
    from paddleseg_unet.utils.logger import logger

    model = builder.model
    weights = apply_model_path(model, args.model_path, cfg["model"].get("pretrained"),
                               strict=not getattr(args, "allow_partial", False))
    if args.backend != "auto":
        return model
    from paddleseg_unet.core.fast_path import fast_model

    model.eval()
    chosen, why = fast_model(model, weights, cfg["model"], builder.deploy_info,
                             args.num_threads)
    logger.info(f"Running {why}")
    return chosen


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Flip / multi-scale / sliding-window flags, as PaddleSeg's val.py and predict.py.
    A flag left out keeps the config's ``test_config`` value (None here means "not given")."""
    group = parser.add_argument_group("inference")
    group.add_argument("--aug_eval", "--aug_pred", dest="aug_eval", action="store_true",
                       default=None, help="flip / multi-scale augmentation")
    group.add_argument("--scales", nargs="+", type=float, default=None,
                       help="scales for --aug_eval (default 1.0)")
    group.add_argument("--flip_horizontal", action="store_true", default=None,
                       help="add horizontal flips")
    group.add_argument("--flip_vertical", action="store_true", default=None,
                       help="add vertical flips")
    group.add_argument("--is_slide", action="store_true", default=None,
                       help="sliding-window inference")
    group.add_argument("--crop_size", nargs=2, type=int, default=None, metavar=("W", "H"),
                       help="window size for --is_slide")
    group.add_argument("--stride", nargs=2, type=int, default=None, metavar=("W", "H"),
                       help="window stride for --is_slide")
    group.add_argument("--slide_batch", type=int, default=None,
                       help="at most this many windows per forward pass in --is_slide "
                            "(default: as many as --slide_memory_gb allows, up to 8)")
    group.add_argument("--slide_memory_gb", type=float, default=None,
                       help="memory for --is_slide windows run at once and their sums, in "
                            "GB (default: a quarter of the free memory, at most 2 GB; at "
                            "least one window at a time, as PaddleSeg)")
    group.add_argument("--slide_weight", choices=["uniform", "gaussian"], default=None,
                       help="blend overlapping windows equally (PaddleSeg, default) or with a "
                            "Gaussian per window (nnU-Net; removes tile seams)")
    group.add_argument("--aug_average", choices=["logit", "prob"], default=None,
                       help="average raw logits (PaddleSeg, default) or softmax probabilities "
                            "(MMSegmentation) over flips and scales")


INFERENCE_FLAGS = ("scales", "flip_horizontal", "flip_vertical", "is_slide", "crop_size",
                   "stride", "slide_batch", "slide_weight", "aug_average", "slide_memory_gb")


def inference_options(args: argparse.Namespace, test_config: Optional[Dict[str, Any]] = None
                      ) -> Any:
    """The one ``InferenceOptions`` of a run: the config's ``test_config``, flags on top."""
    from paddleseg_unet.core.infer import InferenceOptions

    test_config = dict(test_config or {})
    options = InferenceOptions.build(test_config, aug=args.aug_eval,
                                      **{k: getattr(args, k) for k in INFERENCE_FLAGS})
    aug = args.aug_eval if args.aug_eval is not None else bool(test_config.get("aug_eval"))
    _warn_unused_flags(args, options.is_slide, aug)
    return options


def start(args: argparse.Namespace, purpose: str, log_file: Optional[str] = None,
          **overrides: Any) -> Tuple[Any, Any]:
    """The start-up of a command: logging (rank 0 prints), the config loaded and checked for
    ``purpose`` with the command-line overrides, the device, the parallel environment when
    launched on several devices, and the builder. Returns ``(config, builder)``."""
    import paddle

    from paddleseg_unet.apis.builder import SegBuilder
    from paddleseg_unet.cvlibs.config import load_config
    from paddleseg_unet.utils.device import setup_device
    from paddleseg_unet.utils.logger import setup_logger

    setup_logger(log_file, rank=paddle.distributed.get_rank())
    cfg = load_config(args.config, opts=args.opts, purpose=purpose, **overrides)
    setup_device(args.device, args.num_threads, getattr(args, "device_id", None))
    if paddle.distributed.get_world_size() > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()
    return cfg, SegBuilder(cfg)


def _warn_unused_flags(args: argparse.Namespace, is_slide: bool, aug: bool) -> None:
    """PaddleSeg ignores window flags without --is_slide and flip/scale flags without
    --aug_eval, silently; we accept them too (scripts keep working) but say so."""
    from paddleseg_unet.utils.logger import logger

    unused = []
    if not is_slide:
        unused += [(f"--{k}", "--is_slide") for k in ("crop_size", "stride")
                   if getattr(args, k) is not None]
    if not aug:
        unused += [(f"--{k}", "--aug_eval") for k in ("scales", "flip_horizontal",
                                                       "flip_vertical")
                   if getattr(args, k) is not None]
    for needed in dict.fromkeys(n for _, n in unused):
        flags = [f for f, n in unused if n == needed]
        logger.warning(f"{'/'.join(flags)} given without {needed}: ignored (add {needed} to "
                       f"use {'it' if len(flags) == 1 else 'them'})")


def run_cli(main: Callable[[Optional[List[str]]], Any], argv: Optional[List[str]] = None) -> int:
    """Run ``main``; the package's own errors print as one line (exit 1) instead of a
    traceback. Set PADDLESEG_UNET_DEBUG=1 to see the traceback anyway."""
    try:
        main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (``| head``, ``| grep -q``): stop quietly, as a Unix tool killed by
        # SIGPIPE would, and point stdout at devnull so the exit-time flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for such a tool
    except Exception as exc:  # noqa: BLE001 - decided by where the error class lives
        ours = type(exc).__module__.startswith("paddleseg_unet")
        if not ours or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
