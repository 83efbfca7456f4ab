"""Train a UNet from a config: ``python tools/train.py --config configs/unet/unet_drive_128x128_40k.yml``.

Multi-device: ``python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py ...``
(``--batch_size`` is per device).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional, Tuple

from paddleseg_unet.apis.cli import (add_config_args, add_inference_args,
                                     check_args, inference_options, start)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--save_dir", default="output", help="where checkpoints and logs go")
    parser.add_argument("--iters", type=int, default=None, help="override config iters")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="override config batch_size (per device)")
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="override lr_scheduler.learning_rate")
    parser.add_argument("--save_interval", type=int, default=1000,
                        help="save a checkpoint every N iterations")
    parser.add_argument("--eval_interval", type=int, default=None,
                        help="with --do_eval, evaluate every N iterations "
                             "(default: --save_interval)")
    parser.add_argument("--log_iters", type=int, default=10, help="log every N iterations")
    parser.add_argument("--keep_checkpoint_max", type=int, default=5,
                        help="keep only the newest N iter_* checkpoints")
    parser.add_argument("--resume_model", default=None, metavar="DIR|auto",
                        help="a save_dir/iter_N folder to continue from; auto: the newest "
                             "complete checkpoint under --save_dir (none yet: start afresh)")
    parser.add_argument("--do_eval", action="store_true",
                        help="evaluate every --eval_interval iterations and keep best_model/")
    parser.add_argument("--use_vdl", action="store_true", help="log to VisualDL (save_dir/vdl_log)")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--seed", type=int, default=0, help="random seed (CPU runs repeat exactly)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16 or bf16 (AMP; GPU only)")
    parser.add_argument("--amp_level", default="O1", help="AMP level O1 or O2")
    parser.add_argument("--early_stop_intervals", type=int, default=None,
                        help="stop after N evaluations without improvement")
    parser.add_argument("--use_ema", action="store_true",
                        help="PaddleSeg's EMA: decay 0.999 with its warm-up ramp "
                             "min(1 - 1/(iter + 1), 0.999); --ema_decay sets another decay "
                             "(default: train_config.use_ema)")
    parser.add_argument("--ema_decay", type=float, default=None,
                        help="evaluate an exponential moving average of the weights")
    parser.add_argument("--best_metric", default=None,
                        help="metric that picks best_model (default: train_config.best_metric "
                             "or mIoU)")
    parser.add_argument("--to_static_training", action="store_true",
                        help="run forward + loss as a static graph (paddle.jit.to_static), "
                             "as PaddleSeg's flag: same losses as eager, but no faster for "
                             "UNet on a CPU (docs/training.md); kept for parity")
    add_inference_args(parser)
    return parser.parse_args(argv)


def ema_settings(args: argparse.Namespace, train_config: Dict[str, Any]
                 ) -> Tuple[Optional[float], bool]:
    """(decay, PaddleSeg warm-up) from the flags, else ``train_config``; None: no EMA.

    ``--use_ema`` / ``train_config.use_ema`` is PaddleSeg's EMA (0.999 with its ramp); an
    explicit ``ema_decay`` (flag first, then config) replaces the 0.999."""
    use_ema = bool(args.use_ema or train_config.get("use_ema"))
    # "is None", not "or": an invalid 0 must reach TrainOptions' range check, not vanish.
    decay = args.ema_decay if args.ema_decay is not None else train_config.get("ema_decay")
    if decay is None and use_ema:
        decay = 0.999
    return decay, use_ema


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args)  # flags, device and output paths, before any work
    import paddle

    from paddleseg_unet.core.evaluate import EvalOptions, evaluate
    from paddleseg_unet.core.train import Trainer, TrainOptions

    cfg, builder = start(args, purpose="train", log_file=os.path.join(args.save_dir, "train.log"),
                         batch_size=args.batch_size, iters=args.iters,
                         learning_rate=args.learning_rate)
    if args.do_eval:
        cfg.validate("val")
    train_config = cfg.train_config
    ema_decay, ema_warmup = ema_settings(args, train_config)
    eval_options = EvalOptions.build(cfg.test_config, inference_options(args, cfg.test_config),
                                     num_workers=args.num_workers)
    options = TrainOptions(
        iters=cfg.iters, batch_size=cfg.batch_size, save_dir=args.save_dir,
        save_interval=args.save_interval, eval_interval=args.eval_interval,
        log_iters=args.log_iters,
        keep_checkpoint_max=args.keep_checkpoint_max, resume_model=args.resume_model,
        num_workers=args.num_workers, seed=args.seed, do_eval=args.do_eval,
        use_vdl=args.use_vdl, precision=args.precision, amp_level=args.amp_level,
        early_stop_intervals=args.early_stop_intervals or train_config.get("early_stop_intervals"),
        ema_decay=ema_decay, ema_warmup=ema_warmup,
        best_metric=args.best_metric or train_config.get("best_metric", "mIoU"),
        eval_options=eval_options, to_static_training=args.to_static_training)
    options.check()  # bad flags fail before anything is built
    builder.lr_scheduler  # noqa: B018 - bad (NaN, <= 0) rates fail before anything runs
    paddle.seed(args.seed)
    trainer = Trainer(builder.model, builder.train_dataset, builder.loss, builder.optimizer(),
                      builder.lr_scheduler, options,
                      val_dataset=builder.val_dataset if args.do_eval else None,
                      num_classes=builder.num_classes, config=cfg.to_dict(),
                      evaluate_fn=evaluate, hooks=builder.hooks)
    trainer.train()

