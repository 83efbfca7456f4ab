"""List the configs that ship with the package: name, dataset, train crop, iterations and
the published score of the matching PaddleSeg model. Any of the names can be passed as
``--config NAME`` (a path works as well)."""
from __future__ import annotations

import argparse
from typing import Any, List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--filter", default=None, help="only names containing this text")
    return parser.parse_args(argv)


def _crop(section: Any) -> str:
    for t in (section or {}).get("transforms") or []:
        if isinstance(t, dict) and "crop_size" in t:
            size = t["crop_size"]
            w, h = (size[0], size[-1]) if isinstance(size, list) else (size, size)
            return f"{w}x{h}"
    return ""


def rows(name_filter: Optional[str] = None) -> List[List[str]]:
    """``[name, dataset, crop, iters, published]`` of each packaged config."""
    from paddleseg_unet.cvlibs.config import load_config, packaged_configs
    from paddleseg_unet.utils.weights import PUBLISHED_SCORES

    out = []
    for name, path in packaged_configs().items():
        if name_filter and name_filter not in name:
            continue
        cfg = load_config(path, purpose=None)
        train = cfg.get("train_dataset") or {}
        out.append([name, str(train.get("type", "")), _crop(train), str(cfg.get("iters", "")),
                    PUBLISHED_SCORES.get(name.rsplit("/", 1)[-1], "")])
    return out


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    table = [["config", "dataset", "crop", "iters", "published (PaddleSeg)"]] + rows(args.filter)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
