"""One registry mechanism for every kind of component.

A component registers under its class (or function) name with a decorator::

    @MODELS.register()
    class UNet(paddle.nn.Layer): ...

and is built from a config dict whose ``type`` names it::

    build({"type": "UNet", "num_classes": 2}, MODELS, where="drive.yml: model")

Nested dicts that carry a ``type`` are built first (depth first), looked up in the
registry named by ``child_registries`` or, failing that, in the parent's registry, so
``{"type": "MixedLoss", "losses": [{"type": "DiceLoss"}]}`` works without special cases.

A registry knows the modules that fill it (``locations``, as module names, so this ground
layer imports nothing above it): the first lookup imports them. Validation and building
therefore never depend on which package a tool happened to import first.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from paddleseg_unet.cvlibs.errors import ComponentArgumentError, ConfigError, RegistryError  # noqa: F401


class Registry:
    """A name -> class (or factory function) table for one kind of component."""

    def __init__(self, name: str, locations: Sequence[str] = ()) -> None:
        self.name = name
        self.locations = tuple(locations)
        self._table: Dict[str, Callable[..., Any]] = {}
        self._locations_imported = False

    def import_locations(self) -> None:
        """Import the modules that register this registry's members (once)."""
        if self._locations_imported:
            return
        self._locations_imported = True  # first: the imports below look members up too
        try:
            for module in self.locations:
                importlib.import_module(module)
        except BaseException:
            self._locations_imported = False
            raise

    def register(self, name: Optional[str] = None, force: bool = False) -> Callable:
        """Decorator registering a class or function under ``name`` (default: its own)."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__
            if key in self._table and not force and self._table[key] is not obj:
                raise RegistryError(
                    f"{key!r} is already registered in the {self.name} registry "
                    f"(by {self._table[key].__module__}); pass force=True to replace it"
                )
            self._table[key] = obj
            return obj

        return decorator

    def get(self, key: str, where: str = "") -> Callable[..., Any]:
        """The component registered as ``key``; an unknown key names close matches."""
        self.import_locations()
        if key in self._table:
            return self._table[key]
        close = difflib.get_close_matches(key, self._table, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        origin = f" (from {where})" if where else ""
        raise RegistryError(
            f"Unknown {self.name} type {key!r}{origin}.{hint} "
            f"Registered {self.name}: {', '.join(sorted(self._table)) or '(none)'}."
        )

    def __contains__(self, key: str) -> bool:
        self.import_locations()
        return key in self._table

    def names(self) -> List[str]:
        self.import_locations()
        return sorted(self._table)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"


MODELS = Registry("models", locations=["paddleseg_unet.models"])
BACKBONES = MODELS  # UNet has no separate backbone; kept as an alias for readers of PaddleSeg
LOSSES = Registry("losses", locations=["paddleseg_unet.models.losses"])
DATASETS = Registry("datasets", locations=["paddleseg_unet.datasets"])
TRANSFORMS = Registry("transforms", locations=["paddleseg_unet.transforms"])
OPTIMIZERS = Registry("optimizers", locations=["paddleseg_unet.core.optim"])
LR_SCHEDULERS = Registry("lr_schedulers", locations=["paddleseg_unet.core.optim"])
GRAD_CLIPS = Registry("grad_clips", locations=["paddleseg_unet.core.optim"])
BACKENDS = Registry("backends", locations=["paddleseg_unet.core.backends"])
CONVERTERS = Registry("converters", locations=["paddleseg_unet.datasets.converters"])
HOOKS = Registry("hooks", locations=["paddleseg_unet.core.hooks"])


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def build(
    cfg: Dict[str, Any],
    registry: Registry,
    where: str = "",
    child_registries: Optional[Dict[str, Registry]] = None,
    **extra: Any,
) -> Any:
    """Instantiate ``cfg['type']`` from ``registry`` with the remaining keys as arguments.

    ``where`` names the config file and key the dict came from; it is carried into every
    error so a user knows which line of which file to fix. A ValueError/TypeError from the
    constructor comes back as a ConfigError prefixed with ``where`` (and, for a
    ComponentArgumentError, the argument: ``file: train_dataset.transforms[1].crop_size``).
    ``extra`` keyword arguments are passed to the constructor and win over the dict's own
    values.
    """
    if not _is_spec(cfg):
        raise RegistryError(
            f"{where or 'component'}: expected a mapping with a 'type' key, got {cfg!r}"
        )
    child_registries = child_registries or {}
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    for key, value in list(kwargs.items()):
        sub_registry = child_registries.get(key, registry)
        sub_where = _below(where, key)
        if _is_spec(value):
            kwargs[key] = build(value, sub_registry, sub_where, child_registries)
        elif isinstance(value, list) and value and all(_is_spec(v) for v in value):
            kwargs[key] = [
                build(v, sub_registry, _below(sub_where, f"[{i}]"), child_registries)
                for i, v in enumerate(value)
            ]
    kwargs.update(extra)
    component = registry.get(cfg["type"], where)
    _check_arguments(component, kwargs, cfg["type"], where)
    try:
        return component(**kwargs)
    except (ValueError, TypeError) as exc:  # a value the constructor rejects
        argument = getattr(exc, "argument", None)
        key = _below(where, argument) if where and argument else where or cfg["type"]
        raise ConfigError(f"{key}: {exc}") from exc


def _below(where: str, part: str) -> str:
    """``where`` of a key (``part``) or list index (``[i]``) below ``where``; a
    cvlibs.config.Where names the file that set that key."""
    if hasattr(where, "child"):
        return where.child(part)
    if not where:
        return part
    return f"{where}{'' if part.startswith('[') else '.'}{part}"


def _check_arguments(component: Callable[..., Any], kwargs: Dict[str, Any], type_name: str,
                     where: str) -> None:
    """Refuse unknown keyword arguments before calling, with the accepted names listed."""
    try:
        signature = inspect.signature(component)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in
                (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RegistryError(
            f"{where or type_name}: {type_name} does not take {', '.join(hints)}. "
            f"It accepts: {', '.join(accepted)}."
        )


def build_list(cfgs: Iterable[Dict[str, Any]], registry: Registry, where: str = "") -> List[Any]:
    """Build each spec of a list (e.g. a transform pipeline), indexing ``where``."""
    return [build(c, registry, f"{where}[{i}]") for i, c in enumerate(cfgs)]
