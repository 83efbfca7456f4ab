"""Config -> components. Each component is built once, on first use, with errors that
name the config file and key it came from."""
from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Dict, Iterable, Optional

import paddle

# Importing the component packages fills the registries.
import paddleseg_unet.core.optim  # noqa: F401
import paddleseg_unet.datasets  # noqa: F401
import paddleseg_unet.models  # noqa: F401
import paddleseg_unet.transforms  # noqa: F401
from paddleseg_unet.core.optim import build_lr_scheduler, build_optimizer
from paddleseg_unet.cvlibs.config import Config, ConfigError
from paddleseg_unet.cvlibs.registry import DATASETS, MODELS, TRANSFORMS, build
from paddleseg_unet.models.losses import build_loss


class SegBuilder:
    """Builds the model, datasets, loss, lr scheduler and optimizer a config describes."""

    def __init__(self, config: Config) -> None:
        self.config = config

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
