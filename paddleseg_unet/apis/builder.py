"""Config -> components. Each component is built once, on first use, with errors that
name the config file and key it came from.

Before anything is built, the cross-section rules (:data:`CONFIG_RULES`) check what no
single section can: that the model and the datasets agree on the class count, that class
weights of the loss have one entry per class. A rule is a function ``(config) -> [problem]``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import paddle

from paddleseg_unet.core.backends import Backend, BackendError
from paddleseg_unet.core.optim import build_lr_scheduler, build_optimizer
from paddleseg_unet.cvlibs.config import Config, dataset_num_classes
from paddleseg_unet.cvlibs.errors import ConfigError
from paddleseg_unet.cvlibs.registry import DATASETS, HOOKS, MODELS, TRANSFORMS, build
from paddleseg_unet.datasets.dataset import dataset_meta
from paddleseg_unet.models.losses import build_loss
from paddleseg_unet.utils.logger import logger

DATASET_SECTIONS = ("train_dataset", "val_dataset", "test_dataset")


def _model_classes(config: Config) -> Optional[int]:
    model = config.get("model")
    k = model.get("num_classes") if isinstance(model, dict) else None
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None


def rule_num_classes_match(config: Config) -> List[str]:
    """Every dataset section has the model's class count."""
    model_k = _model_classes(config)
    if model_k is None:
        return []
    problems = []
    for key in DATASET_SECTIONS:
        dataset_k = dataset_num_classes(config.get(key))
        if dataset_k is not None and dataset_k != model_k:
            problems.append(f"{config.where('model.num_classes')}: model has {model_k} "
                            f"classes but {key} ({config[key]['type']}, "
                            f"{config.where(key)}) has {dataset_k}")
    return problems


def rule_loss_class_weights(config: Config) -> List[str]:
    """A loss's per-class ``weight`` list has one entry per class."""
    model_k = _model_classes(config)
    loss = config.get("loss")
    types = loss.get("types") if isinstance(loss, dict) else None
    if model_k is None or not isinstance(types, list):
        return []
    problems = []
    for i, spec in enumerate(types):
        weight = spec.get("weight") if isinstance(spec, dict) else None
        if isinstance(weight, (list, tuple)) and len(weight) != model_k:
            problems.append(f"{config.where(f'loss.types')}[{i}].weight: {len(weight)} "
                            f"values for {model_k} classes (model.num_classes)")
    return problems


CONFIG_RULES: List[Callable[[Config], List[str]]] = [rule_num_classes_match,
                                                     rule_loss_class_weights]


def check_config(config: Config) -> Config:
    """Run every cross-section rule; all problems are raised as one ConfigError."""
    problems = [p for rule in CONFIG_RULES for p in rule(config)]
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))
    return config


@dataclass
class ConfigDeployInfo:
    """What a config says about deployment: preprocessing, classes and colours."""

    transforms: List[Dict[str, Any]]
    num_classes: int
    dataset_type: Optional[str]
    class_names: List[str]
    color_map: np.ndarray


def import_custom_modules(config: Config) -> None:
    """Import the modules named in ``custom_imports`` (a user's own components and hooks
    register themselves when imported), as mmengine's ``custom_imports``."""
    modules = config.get("custom_imports") or []
    for i, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{config.where('custom_imports')}[{i}]: cannot import {name!r} "
                              f"({exc}); put the folder that holds it on PYTHONPATH") from None


class SegBuilder:
    """Builds the model, datasets, loss, lr scheduler, optimizer and the user's training
    hooks a config describes."""

    def __init__(self, config: Config) -> None:
        import_custom_modules(config)
        self.config = check_config(config)

    def _section(self, key: str) -> Dict[str, Any]:
        section = self.config.get(key)
        if not isinstance(section, dict):
            raise ConfigError(f"{self.config.path}: missing required section {key!r}")
        return section

    @cached_property
    def model(self) -> paddle.nn.Layer:
        return build(self._section("model"), MODELS, where=self.config.where("model"))

    @property
    def num_classes(self) -> int:
        return int(self._section("model")["num_classes"])

    def dataset(self, key: str, **overrides: Any) -> Any:
        """Build ``train_dataset``/``val_dataset``/``test_dataset``."""
        spec = dict(self._section(key), **overrides)
        return build(spec, DATASETS, where=self.config.where(key),
                     child_registries={"transforms": TRANSFORMS})

    @cached_property
    def train_dataset(self) -> Any:
        return self.dataset("train_dataset")

    @cached_property
    def val_dataset(self) -> Any:
        return self.dataset("val_dataset")

    @cached_property
    def loss(self) -> Callable[..., paddle.Tensor]:
        return build_loss(self._section("loss"), where=self.config.where("loss"))

    @cached_property
    def lr_scheduler(self) -> Any:
        return build_lr_scheduler(self._section("lr_scheduler"), iters=self.config.iters,
                                  where=self.config.where("lr_scheduler"))

    def optimizer(self, parameters: Optional[Iterable[Any]] = None) -> Any:
        params = parameters if parameters is not None else self.model.parameters()
        return build_optimizer(self._section("optimizer"), params, self.lr_scheduler,
                               where=self.config.where("optimizer"))

    @cached_property
    def hooks(self) -> List[Any]:
        """``train_config.hooks``: the user's hooks, built from the ``HOOKS`` registry."""
        specs = self.config.train_config.get("hooks") or []
        where = self.config.where("train_config.hooks")
        if not isinstance(specs, list):
            raise ConfigError(f"{where}: must be a list of hooks such as [{{type: MyHook}}]")
        return [build(spec, HOOKS, where=f"{where}[{i}]") for i, spec in enumerate(specs)]

    @cached_property
    def deploy_info(self) -> ConfigDeployInfo:
        """Preprocessing = the ``val_dataset`` transforms (else ``test_dataset``'s, else
        ``[Normalize]``); class names and colour map are the dataset's metadata."""
        section = next((self.config.get(k) for k in ("val_dataset", "test_dataset")
                        if isinstance(self.config.get(k), dict)), None)
        if section is None:
            logger.warning(f"{self.config.path} has no val_dataset: using the default "
                           f"preprocessing [Normalize]")
        transforms = list(section.get("transforms") or []) if section else [
            {"type": "Normalize"}]
        meta = dataset_meta(section, self.num_classes)
        return ConfigDeployInfo(transforms=transforms, num_classes=self.num_classes,
                          dataset_type=section.get("type") if section else None,
                          class_names=list(meta.class_names),
                          color_map=np.asarray(meta.palette, dtype=np.uint8))

    def exported_val_dataset(self, backend: Backend, auc_roc: bool = False) -> Any:
        """The val dataset with an exported model's preprocessing (its deploy.yaml), after
        checking that the export fits this config and the metrics asked for."""
        deploy = backend.deploy
        if deploy is None:
            return self.val_dataset
        if deploy.num_classes != self.num_classes:
            raise BackendError(f"{deploy.model_dir} was exported for {deploy.num_classes} "
                               f"classes but the config has {self.num_classes}")
        if auc_roc and deploy.output_op == "argmax":
            raise BackendError(f"AUC-ROC needs probabilities, but {deploy.model_dir} was "
                               f"exported with --output_op argmax (class ids only); "
                               f"re-export with --output_op softmax or none, or pass "
                               f"--auc_roc off")
        return self.dataset("val_dataset", transforms=list(deploy.transforms))
