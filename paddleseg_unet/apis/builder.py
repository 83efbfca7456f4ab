"""Config -> components. Each component is built once, on first use, with errors that
name the config file and key it came from.

Before anything is built, the cross-section rules (:data:`CONFIG_RULES`) check what no
single section can: that the model and the datasets agree on the class count, that class
weights of the loss have one entry per class. A rule is a function ``(config) -> [problem]``.
"""
from __future__ import annotations

import importlib
from functools import cached_property
from typing import Any, Callable, Dict, Iterable, List, Optional

import paddle

from paddleseg_unet.core.optim import build_lr_scheduler, build_optimizer
from paddleseg_unet.cvlibs.config import Config, dataset_num_classes
from paddleseg_unet.cvlibs.errors import ConfigError
from paddleseg_unet.cvlibs.registry import DATASETS, HOOKS, MODELS, TRANSFORMS, build
from paddleseg_unet.models.losses import build_loss

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
