"""One-call prediction from Python, with the preprocessing and outputs of tools/predict.py::

    from paddleseg_unet import Segmenter
    seg = Segmenter.from_config("unet_drive_128x128_40k", weights="unet_drive_128x128_40k")
    seg = Segmenter.from_exported("output/inference_model", backend="onnxruntime")
    result = seg.predict("image.png")        # a path, an HxWx3 uint8 RGB array, or a list
    result.label, result.prob                # HxW class ids; KxHxW probabilities
    seg.predict(img, flip=True, scales=[0.75, 1.0], slide=(crop, stride))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Segmenter", "SegmentationResult"]

Image = Union[str, np.ndarray]


@dataclass
class SegmentationResult:
    """One image's prediction: ``label`` (HxW int32 class ids) and ``prob`` (KxHxW float32
    probabilities), at the input's size; ``class_names`` and ``color_map`` of the model."""

    label: np.ndarray
    prob: np.ndarray
    class_names: List[str]
    color_map: np.ndarray

    def colorized(self) -> np.ndarray:
        """The label as an HxWx3 uint8 RGB picture in the model's colours."""
        from paddleseg_unet.utils.visualize import colorize

        return colorize(self.label, self.color_map)


class Segmenter:
    """A model, its preprocessing and its classes, ready to predict images."""

    def __init__(self, model: Callable[..., Any], transforms: Callable, num_classes: int,
                 class_names: Sequence[str], color_map: np.ndarray) -> None:
        self.model = model
        self.transforms = transforms
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.color_map = np.asarray(color_map, dtype=np.uint8)

    @classmethod
    def from_config(cls, config: str, weights: Optional[str] = None,
                    opts: Sequence[str] = (), device: str = "auto",
                    num_threads: Optional[int] = None, backend: str = "auto") -> "Segmenter":
        """A model built from ``config`` (a path or a packaged config's name) with
        ``weights`` (a .pdparams file, a checkpoint folder, a URL or a model-zoo name;
        default: the config's ``model.pretrained``). ``backend`` ``auto`` runs it exported
        on a CPU (as tools/val.py's default), ``paddle`` eager."""
        from paddleseg_unet.apis.builder import SegBuilder
        from paddleseg_unet.apis.cli import apply_model_path
        from paddleseg_unet.cvlibs.config import load_config
        from paddleseg_unet.transforms import Compose
        from paddleseg_unet.utils.device import setup_device

        cfg = load_config(config, opts=list(opts), purpose="model")
        setup_device(device, num_threads)
        builder = SegBuilder(cfg)
        model = builder.model
        weights_path = apply_model_path(model, weights, cfg["model"].get("pretrained"))
        model.eval()
        info = builder.deploy_info
        if backend == "auto":
            from paddleseg_unet.core.fast_path import fast_model

            model, _ = fast_model(model, weights_path, cfg["model"], info, num_threads)
        elif backend != "paddle":
            raise ValueError(f"backend must be 'auto' or 'paddle' for a config (an exported "
                             f"model: Segmenter.from_exported), got {backend!r}")
        return cls(model, Compose(info.transforms), info.num_classes, info.class_names,
                   info.color_map)

    @classmethod
    def from_exported(cls, model_dir: str, backend: str = "inference",
                      num_threads: Optional[int] = None) -> "Segmenter":
        """An exported model (tools/export.py: ``deploy.yaml`` + model) run by ``backend``
        (``inference``: Paddle Inference, ``onnxruntime``, or ``paddle``)."""
        from paddleseg_unet.core.backends import build_backend
        from paddleseg_unet.datasets import SegDataset
        from paddleseg_unet.utils.visualize import get_color_map

        model = build_backend(backend, model_dir, num_threads)
        deploy = model.deploy
        names = deploy.class_names or list(SegDataset.meta_for(deploy.num_classes).class_names)
        colors = deploy.color_map if deploy.color_map is not None else get_color_map(
            deploy.num_classes)
        return cls(model, model.transforms(), deploy.num_classes, names, colors)

    def predict(self, images: Union[Image, Sequence[Image]], flip: bool = False,
                scales: Sequence[float] = (1.0,),
                slide: Optional[Tuple[Sequence[int], Sequence[int]]] = None,
                slide_batch: int = 8, average: str = "logit"
                ) -> Union[SegmentationResult, List[SegmentationResult]]:
        """Predict one image (a path or an HxWx3 uint8 RGB array) or a list of them.

        ``flip`` adds a horizontal flip, ``scales`` resizes (test-time augmentation,
        averaged as ``average`` says); ``slide=(crop_size, stride)``, both (w, h), runs
        sliding windows."""
        from paddleseg_unet.core.infer import InferenceOptions
        from paddleseg_unet.core.predict import predict_image
        from paddleseg_unet.datasets import read_image

        crop, stride = slide if slide is not None else (None, None)
        options = InferenceOptions(scales=tuple(scales), flip_horizontal=bool(flip),
                                   is_slide=slide is not None, crop_size=crop, stride=stride,
                                   slide_batch=slide_batch, average=average)
        single = isinstance(images, (str, np.ndarray))
        results = []
        for image in ([images] if single else list(images)):
            path = image if isinstance(image, str) else "<array>"
            rgb = read_image(image) if isinstance(image, str) else _check_array(image)
            label, prob = predict_image(self.model, self.transforms, rgb, self.num_classes,
                                        path, options)
            results.append(SegmentationResult(label, prob, self.class_names, self.color_map))
        return results[0] if single else results


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"an image array must be HxWx3 uint8 RGB, got {image.dtype} "
                         f"{list(image.shape)}")
    return image
