"""YAML configs with ``_base_`` inheritance, command-line overrides and validation.

Semantics (PaddleSeg's): ``_base_`` (a path or a list, relative to the file) is loaded
first and the file is merged over it; dicts merge recursively and the child wins; lists
are replaced whole; a dict holding ``_inherited_: False`` replaces the base's dict (with a
list of bases, also the dicts of the bases listed before its file).

Every leaf remembers the file that set it, so an error can say which file to edit.
"""
from __future__ import annotations

import ast
import copy
import difflib
import math
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from paddleseg_unet.cvlibs.errors import ConfigError
from paddleseg_unet.cvlibs.registry import (DATASETS, LOSSES, LR_SCHEDULERS, MODELS, OPTIMIZERS,
                                            TRANSFORMS, Registry)

BASE_KEY = "_base_"
INHERIT_KEY = "_inherited_"

# Top-level keys a config may hold, and the type each must have.
SECTION_TYPES: Dict[str, Tuple[type, ...]] = {
    "batch_size": (int,),
    "iters": (int,),
    "model": (dict,),
    "train_dataset": (dict,),
    "val_dataset": (dict,),
    "test_dataset": (dict,),
    "loss": (dict,),
    "optimizer": (dict,),
    "lr_scheduler": (dict,),
    "test_config": (dict,),
    "train_config": (dict,),
    "export": (dict,),
    "custom_imports": (list,),
}

# Keys ``train_config`` may hold (defaults for tools/train.py's flags), with their types.
TRAIN_CONFIG_TYPES: Dict[str, Tuple[type, ...]] = {
    "best_metric": (str,),
    "ema_decay": (float, int),
    "use_ema": (bool,),
    "early_stop_intervals": (int,),
    "hooks": (list,),
}

# What each purpose needs before anything runs.
REQUIRED_SECTIONS: Dict[str, Tuple[str, ...]] = {
    "model": ("model",),
    "train": ("model", "train_dataset", "batch_size", "iters", "loss", "optimizer",
              "lr_scheduler"),
    "val": ("model", "val_dataset"),
}

# The registry that builds each top-level component section.
SECTION_REGISTRIES: Dict[str, Registry] = {
    "model": MODELS,
    "train_dataset": DATASETS,
    "val_dataset": DATASETS,
    "test_dataset": DATASETS,
    "optimizer": OPTIMIZERS,
    "lr_scheduler": LR_SCHEDULERS,
}
ALL_REGISTRIES = (MODELS, LOSSES, DATASETS, TRANSFORMS, OPTIMIZERS, LR_SCHEDULERS)
__all__ = ["Config", "ConfigError", "load_config", "parse_value", "dataset_num_classes",
           "packaged_configs", "resolve_config"]


# ----------------------------------------------------------------------------- loading

def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, "
                          f"got {type(data).__name__}")
    return data


def _merge(base: Dict[str, Any], child: Dict[str, Any], origins: Dict[str, str],
           child_origins: Dict[str, str]) -> Dict[str, Any]:
    """Merge ``child`` over ``base`` (both left untouched). ``origins`` (of base) is updated
    in place: values the child replaces lose their old origin, the child's are added."""
    merged = _merge_values(base, child, origins, "")
    origins.update(child_origins)
    return merged


def _merge_values(base: Dict[str, Any], child: Dict[str, Any], origins: Dict[str, str],
                  prefix: str) -> Dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in child.items():
        dotted = f"{prefix}{key}"
        if (isinstance(value, dict) and isinstance(merged.get(key), dict)
                and value.get(INHERIT_KEY, True) is not False):
            merged[key] = _merge_values(merged[key], value, origins, dotted + ".")
            continue
        # Replacing a value whole: forget where the base's value and its children came from.
        for stale in [k for k in origins if k == dotted or k.startswith(dotted + ".")]:
            del origins[stale]
        # The marker stays until load_config strips it: a base listed after another must
        # replace that sibling's mapping too, not only the mappings of its own bases.
        merged[key] = copy.deepcopy(value)
    return merged


def _strip_inherit(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_inherit(v) for k, v in value.items() if k != INHERIT_KEY}
    if isinstance(value, list):
        return [_strip_inherit(v) for v in value]
    return value


def _leaf_origins(data: Dict[str, Any], path: str, prefix: str = "") -> Dict[str, str]:
    origins: Dict[str, str] = {}
    for key, value in data.items():
        if key in (BASE_KEY, INHERIT_KEY):
            continue
        dotted = f"{prefix}{key}"
        origins[dotted] = path
        if isinstance(value, dict):
            origins.update(_leaf_origins(value, path, dotted + "."))
    return origins


def _load_tree(path: str, chain: Tuple[str, ...] = ()) -> Tuple[Dict[str, Any], Dict[str, str]]:
    path = os.path.normpath(os.path.abspath(path))
    if path in chain:
        cycle = " -> ".join(os.path.basename(p) for p in chain + (path,))
        raise ConfigError(f"{chain[-1]}: _base_ files include each other in a cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    merged: Dict[str, Any] = {}
    origins: Dict[str, str] = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: {BASE_KEY} file {base!r} not found "
                              f"(looked for {os.path.normpath(base_path)})")
        base_data, base_origins = _load_tree(base_path, chain + (path,))
        merged = _merge(merged, base_data, origins, base_origins)
    merged = _merge(merged, data, origins, _leaf_origins(data, path))
    return merged, origins


# ----------------------------------------------------------------------------- the object

class Where(str):
    """The text 'file: key' of ``Config.where``, which can also name a key below it
    (``child``) by the file that set that key: ``build`` uses it so an error about
    ``transforms[1].crop_size`` names the file (or ``--opts``) the value came from."""

    def __new__(cls, text: str, config: "Config", key: str) -> "Where":
        obj = super().__new__(cls, text)
        obj.config, obj.key = config, key
        return obj

    def child(self, part: str) -> "Where":
        """``part`` is a key (``crop_size``) or a list index (``[1]``)."""
        return self.config.where(self.key + ("" if part.startswith("[") else ".") + part)


class Config:
    """A resolved config: plain nested dicts plus where each value came from."""

    def __init__(self, data: Dict[str, Any], path: str = "<dict>",
                 origins: Optional[Dict[str, str]] = None) -> None:
        self.data = data
        self.path = path
        self.origins = origins if origins is not None else _leaf_origins(data, path)

    # -- access
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def where(self, dotted_key: str) -> "Where":
        """'file: key' for messages: the file that set the key (or its nearest parent);
        ``--opts`` (or another flag) when the command line set it. List items may be
        written ``transforms[1]`` or ``transforms.1``."""
        key = re.sub(r"\[(\d+)\]", r".\1", dotted_key)
        while key and key not in self.origins:
            key = key.rpartition(".")[0]
        return Where(f"{self.origins.get(key, self.path)}: {dotted_key}", self, dotted_key)

    @property
    def batch_size(self) -> int:
        return self.data["batch_size"]

    @property
    def iters(self) -> int:
        return self.data["iters"]

    @property
    def test_config(self) -> Dict[str, Any]:
        return dict(self.data.get("test_config") or {})

    @property
    def train_config(self) -> Dict[str, Any]:
        return dict(self.data.get("train_config") or {})

    # -- overrides
    def set_dotted(self, dotted_key: str, value: Any, source: str = "--opts") -> None:
        """Set ``a.b.0.c`` to ``value``. The key must exist, or be an argument that the
        component it lands in accepts (so ``model.base_channels=16`` works, ``model.nmu=2``
        does not)."""
        parts = dotted_key.split(".")
        node: Any = self.data
        for i, part in enumerate(parts[:-1]):
            node = _step(node, part, ".".join(parts[: i + 1]), source)
        leaf = parts[-1]
        if isinstance(node, list):
            index = _list_index(node, leaf, dotted_key, source)
            node[index] = value
        elif isinstance(node, dict):
            if leaf not in node and not _component_accepts(node, leaf):
                close = difflib.get_close_matches(leaf, list(node), n=1)
                hint = f" Did you mean {'.'.join(parts[:-1] + close)}?" if close else ""
                raise ConfigError(f"{source} {dotted_key}={value!r}: {self.path} has no key "
                                  f"{dotted_key!r}.{hint}")
            node[leaf] = value
        else:
            raise ConfigError(f"{source} {dotted_key}: {'.'.join(parts[:-1])} is a "
                              f"{type(node).__name__}, not a mapping or list")
        self.origins[dotted_key] = source

    def apply_overrides(self, batch_size: Optional[int] = None, iters: Optional[int] = None,
                        learning_rate: Optional[float] = None,
                        opts: Optional[Sequence[str]] = None) -> "Config":
        if batch_size is not None:
            self.data["batch_size"] = batch_size
            self.origins["batch_size"] = "--batch_size"
        if iters is not None:
            self.data["iters"] = iters
            self.origins["iters"] = "--iters"
        if learning_rate is not None:
            if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
                    and learning_rate > 0):
                raise ConfigError(f"--learning_rate must be a finite number > 0, "
                                  f"got {learning_rate!r}")
            if not isinstance(self.data.get("lr_scheduler"), dict):
                raise ConfigError(f"--learning_rate: {self.path} has no lr_scheduler section "
                                  f"to set learning_rate in")
            self.data["lr_scheduler"]["learning_rate"] = learning_rate
            self.origins["lr_scheduler.learning_rate"] = "--learning_rate"
        for opt in opts or []:
            key, sep, raw = opt.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--opts {opt!r}: expected key=value, e.g. "
                                  f"train_dataset.dataset_root=data/DRIVE")
            self.set_dotted(key.strip(), parse_value(raw.strip()))
        return self

    # -- validation
    def validate(self, purpose: str = "model") -> "Config":
        """Check section presence and types for ``purpose`` ('model', 'train', 'val');
        every problem is gathered into one ConfigError."""
        problems = self._check_keys(self.data, SECTION_TYPES, what="top-level key")
        for key in REQUIRED_SECTIONS[purpose]:
            if self.data.get(key) is None:
                problems.append(f"{self.path}: missing required section {key!r} "
                                f"(needed to {purpose})")
        for key, types in SECTION_TYPES.items():
            value = self.data.get(key)
            if types == (int,) and type(value) is int and value <= 0:
                problems.append(f"{self.where(key)}: must be a positive integer, got {value}")
        train_config = self.data.get("train_config")
        if isinstance(train_config, dict):
            problems += self._check_keys(train_config, TRAIN_CONFIG_TYPES, "train_config.")
        problems += self._check_components()
        problems += self._check_loss()
        problems += self._check_num_classes()
        if problems:
            raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))
        return self

    def _check_keys(self, section: Dict[str, Any], allowed: Dict[str, Tuple[type, ...]],
                    prefix: str = "", what: str = "key") -> List[str]:
        """Keys of ``section`` not in ``allowed`` (with a did-you-mean) and values not of
        their key's types (None passes: an empty section)."""
        problems = []
        for key, value in section.items():
            types = allowed.get(key)
            if types is None:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{self.where(prefix + key)}: unknown {what}{hint}; "
                                f"allowed: {', '.join(allowed)}")
            elif value is not None and (not isinstance(value, types) or (
                    isinstance(value, bool) and bool not in types)):
                problems.append(f"{self.where(prefix + key)}: must be {_type_names(types)}, "
                                f"got {type(value).__name__} {value!r}")
        return problems

    def _check_components(self) -> List[str]:
        problems = []
        for key in SECTION_REGISTRIES:
            section = self.data.get(key)
            if isinstance(section, dict) and not isinstance(section.get("type"), str):
                problems.append(f"{self.where(key)}: needs a 'type' naming the component")
        for key in ("train_dataset", "val_dataset", "test_dataset"):
            section = self.data.get(key)
            if not isinstance(section, dict) or "transforms" not in section:
                continue
            transforms = section["transforms"]
            if not isinstance(transforms, list):
                problems.append(f"{self.where(key + '.transforms')}: must be a list, "
                                f"got {type(transforms).__name__}")
                continue
            for i, t in enumerate(transforms):
                if not (isinstance(t, dict) and isinstance(t.get("type"), str)):
                    problems.append(f"{self.where(key + '.transforms')}[{i}]: each transform "
                                    f"needs a 'type', got {t!r}")
        return problems

    def _check_loss(self) -> List[str]:
        loss = self.data.get("loss")
        if not isinstance(loss, dict):
            return []
        types, coef = loss.get("types"), loss.get("coef")
        problems = []
        if not isinstance(types, list) or not types or not all(
                isinstance(t, dict) and isinstance(t.get("type"), str) for t in types):
            problems.append(f"{self.where('loss.types')}: must be a non-empty list of "
                            f"mappings with a 'type'")
        if not isinstance(coef, list) or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) for c in coef):
            problems.append(f"{self.where('loss.coef')}: must be a list of numbers")
        elif isinstance(types, list) and len(coef) != len(types):
            problems.append(f"{self.where('loss.coef')}: has {len(coef)} values for "
                            f"{len(types)} loss types")
        return problems

    def _check_num_classes(self) -> List[str]:
        model = self.data.get("model")
        if not isinstance(model, dict) or "num_classes" not in model:
            return []
        model_k = model["num_classes"]
        if not isinstance(model_k, int) or isinstance(model_k, bool) or model_k < 1:
            return [f"{self.where('model.num_classes')}: must be a positive integer, "
                    f"got {model_k!r}"]
        return []  # agreement with the datasets is a builder-side rule (apis/builder.py)

    # -- output
    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self.data)

    def to_yaml(self) -> str:
        """The resolved config (no ``_base_``) as YAML, headed by the file it came from."""
        body = yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None)
        return f"# resolved from {self.path}\n{body}"

    def __repr__(self) -> str:
        return f"Config({self.path!r})"


def dataset_num_classes(section: Any) -> Optional[int]:
    """The class count a dataset section implies: its own ``num_classes``, else the fixed
    ``NUM_CLASSES`` of the registered dataset class, else None (unknown yet)."""
    if not isinstance(section, dict):
        return None
    if isinstance(section.get("num_classes"), int):
        return section["num_classes"]
    type_name = section.get("type")
    if isinstance(type_name, str) and type_name in DATASETS:
        return getattr(DATASETS.get(type_name), "NUM_CLASSES", None)
    return None


def _type_names(types: Iterable[type]) -> str:
    names = {int: "an integer", dict: "a mapping", list: "a list", str: "a string",
             float: "a number", bool: "true or false"}
    if float in types:  # an integer is a number too: say "a number", not "... or an integer"
        types = [t for t in types if t is not int]
    return " or ".join(names.get(t, t.__name__) for t in types)


def _step(node: Any, part: str, dotted: str, source: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            close = difflib.get_close_matches(part, list(node), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source} {dotted}: no such key in the config.{hint}")
        return node[part]
    if isinstance(node, list):
        return node[_list_index(node, part, dotted, source)]
    raise ConfigError(f"{source} {dotted}: cannot descend into a {type(node).__name__}")


def _list_index(node: List[Any], part: str, dotted: str, source: str) -> int:
    try:
        index = int(part)
        node[index]
    except (ValueError, IndexError):
        raise ConfigError(f"{source} {dotted}: {part!r} is not an index of a list of "
                          f"{len(node)} items") from None
    return index


def _component_accepts(node: Dict[str, Any], argument: str) -> bool:
    """Whether the registered component ``node['type']`` takes ``argument``."""
    import inspect

    type_name = node.get("type")
    for registry in ALL_REGISTRIES:
        if isinstance(type_name, str) and type_name in registry:
            try:
                params = inspect.signature(registry.get(type_name)).parameters
            except (TypeError, ValueError):
                return False
            return argument in params
    return False


def parse_value(raw: str) -> Any:
    """A command-line value as a Python literal (``4``, ``[64, 64]``, ``True``, ``None``);
    anything that is not a literal stays a string (``data/DRIVE``). YAML spellings
    ``true/false/null`` are accepted too."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if raw.lower() in lowered:
        return lowered[raw.lower()]
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def config_roots() -> List[str]:
    """Where packaged configs live: inside the installed package (``paddleseg_unet/configs``,
    a wheel) or beside it (``configs/`` of a source checkout)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.path.join(package, "configs"),
                  os.path.join(os.path.dirname(package), "configs")]
    return [c for c in candidates if os.path.isdir(c)]


def packaged_configs() -> Dict[str, str]:
    """``name -> path`` of every packaged config (``unet/unet_drive_128x128_40k``), the
    ``_base_`` fragments left out."""
    found: Dict[str, str] = {}
    for root in config_roots():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != BASE_KEY)
            for name in sorted(files):
                if name.endswith((".yml", ".yaml")):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, root).replace(os.sep, "/")
                    found.setdefault(os.path.splitext(rel)[0], path)
    return found


def resolve_config(spec: str) -> str:
    """A config file: ``spec`` itself when it is a file, else the packaged config it names
    (``unet/unet_drive_128x128_40k``, ``unet_drive_128x128_40k``, with or without .yml)."""
    if os.path.isfile(spec):
        return spec
    known = packaged_configs()
    name = os.path.splitext(spec.replace(os.sep, "/"))[0] if spec.endswith(
        (".yml", ".yaml")) else spec.replace(os.sep, "/")
    if name in known:
        return known[name]
    matches = sorted(k for k in known if k.rsplit("/", 1)[-1] == name.rsplit("/", 1)[-1]
                     and k.endswith(name))
    if len(matches) == 1:
        return known[matches[0]]
    if matches:
        raise ConfigError(f"config {spec!r} is ambiguous: {', '.join(matches)}; give one of "
                          f"these names")
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"Config file not found: {spec} (neither a file nor a packaged config "
                      f"name; 'paddleseg-unet configs' lists them).{hint}")


def load_config(path: str, batch_size: Optional[int] = None, iters: Optional[int] = None,
                learning_rate: Optional[float] = None, opts: Optional[Sequence[str]] = None,
                purpose: Optional[str] = "model") -> Config:
    """Load ``path`` with its bases, apply command-line overrides, then validate for
    ``purpose`` (None skips validation)."""
    path = resolve_config(path)
    data, origins = _load_tree(path)
    data = _strip_inherit(data)
    config = Config(data, os.path.normpath(path), origins)
    config.apply_overrides(batch_size, iters, learning_rate, opts)
    if purpose is not None:
        config.validate(purpose)
    return config
