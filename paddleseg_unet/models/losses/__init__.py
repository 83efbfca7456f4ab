"""Segmentation losses. Importing this package registers them in ``LOSSES``."""
from paddleseg_unet.models.losses.cross_entropy import (CrossEntropyLoss, LossInputError,
                                                        prepare_label)
from paddleseg_unet.models.losses.dice import DiceLoss
from paddleseg_unet.models.losses.bce import BCELoss
from paddleseg_unet.models.losses.mixed import LossComputation, MixedLoss, build_loss

__all__ = ["CrossEntropyLoss", "DiceLoss", "BCELoss", "MixedLoss", "LossComputation",
           "LossInputError", "build_loss", "prepare_label"]
