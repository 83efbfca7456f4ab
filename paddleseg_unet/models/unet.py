"""UNet with PaddleSeg's layer names, so its published ``.pdparams`` load key for key.

Layout (widths for ``base_channels`` b = 64, the PaddleSeg model):

* ``encode.double_conv``: two conv-BN-ReLU blocks, in_channels -> b -> b.
* ``encode.down_sample_list.{0..3}``: MaxPool 2x2/2 (index 0, no weights), then two blocks:
  b -> 2b, 2b -> 4b, 4b -> 8b, 8b -> 8b. The map entering each one is kept as a skip.
* ``decode.up_sample_list.{0..3}``: upsample to the skip's exact size (bilinear, or a
  2x2/2 transposed conv with ``use_deconv``), concatenate ``[upsampled, skip]``, two blocks.
* Head: one 3x3 conv registered as both ``cls`` and ``conv`` (PaddleSeg keeps the alias, so
  its state dicts carry both key sets).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_unet.cvlibs.errors import ComponentArgumentError
from paddleseg_unet.cvlibs.registry import MODELS
from paddleseg_unet.utils import onednn
from paddleseg_unet.utils.weights import load_weights

# Four 2x2 poolings: smaller inputs would pool down to an empty map.
MIN_INPUT_SIZE = 16


def _conv_weight_attr(in_channels: int, kernel_size: int) -> paddle.ParamAttr:
    """He-style Normal(0, sqrt(2 / fan_in)), the Paddle Conv2D default PaddleSeg relies on."""
    std = math.sqrt(2.0 / (kernel_size * kernel_size * in_channels))
    return paddle.ParamAttr(initializer=nn.initializer.Normal(mean=0.0, std=std))


def _zero_bias_attr() -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=nn.initializer.Constant(0.0))


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2D:
    return nn.Conv2D(in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                     weight_attr=_conv_weight_attr(in_channels, 3),
                     bias_attr=_zero_bias_attr())


class ConvBNReLU(nn.Layer):
    """3x3 conv (with bias) -> BatchNorm -> ReLU; keys ``_conv.*`` and ``_batch_norm.*``.

    In eager mode the conv bias is folded into the BatchNorm instead of being added to every
    pixel: BN only sees ``conv(x) + b`` through ``conv(x) + b - mean``. With batch statistics
    the shift cancels exactly (the running mean still gets ``+ (1 - momentum) b`` so it tracks
    ``conv(x) + b``, as in the unfolded layer); with running statistics ``gamma b / std`` joins
    BN's shift.
    Same function and gradients, minus a full-size broadcast add and its backward (~15% of a
    CPU training step at width 16). The convolution itself runs through ``utils.onednn``
    (oneDNN's kernels on the CPU, Paddle's elsewhere). Static graphs (export) and other norm layers (SyncBatchNorm)
    take the plain path, which Paddle Inference's conv+BN fusion passes expect; so does a
    block whose ``_conv`` or ``_batch_norm`` carries a forward hook (feature extraction,
    FLOP counting), since the fast path never calls those layers and their hooks would
    silently not fire.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self._conv = _conv3x3(in_channels, out_channels)
        self._batch_norm = nn.BatchNorm2D(
            out_channels, momentum=0.9, epsilon=1e-5,
            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0)),
            bias_attr=_zero_bias_attr())
        self._relu = nn.ReLU()  # no weights; a layer so that hooks see it (PaddleSeg has one)

    def _hooked(self) -> bool:
        return any(layer._forward_pre_hooks or layer._forward_post_hooks
                   for layer in (self._conv, self._batch_norm))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        conv, bn = self._conv, self._batch_norm
        # Paddle's rule: running statistics in eval mode unless use_global_stats says otherwise.
        global_stats = not bn.training if bn._use_global_stats is None else bool(bn._use_global_stats)
        if not paddle.in_dynamic_mode() or type(bn) is not nn.BatchNorm2D or not (
                global_stats or bn.training) or self._hooked():
            return self._relu(bn(conv(x)))
        y = onednn.conv2d(x, conv.weight, padding=1)
        if not global_stats:
            # The op updates its mean argument in place and keeps it for backward, hence a copy.
            running_mean = bn._mean.clone()
            # b enters with zero weight so it keeps a (zero) gradient: DataParallel expects
            # every parameter to get one.
            out = F.batch_norm(y, running_mean, bn._variance, bn.weight, bn.bias + 0.0 * conv.bias,
                               training=True, momentum=bn._momentum, epsilon=bn._epsilon)
            with paddle.no_grad():
                paddle.assign(running_mean + conv.bias * (1.0 - bn._momentum), output=bn._mean)
        else:
            # gamma (y + b - mean) / std + beta: b goes into the shift, where it keeps its
            # gradient (Paddle's BN passes none to the mean).
            shift = bn.bias + bn.weight * conv.bias / paddle.sqrt(bn._variance + bn._epsilon)
            out = F.batch_norm(y, bn._mean, bn._variance, bn.weight, shift,
                               training=False, epsilon=bn._epsilon, use_global_stats=True)
        return self._relu(out)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(in_channels, out_channels),
                         ConvBNReLU(out_channels, out_channels))


class Encoder(nn.Layer):
    """Returns the bottleneck map and the skips, shallowest first."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.double_conv = _double_conv(in_channels, widths[0])
        # Last step keeps the width (8b -> 8b), as in PaddleSeg.
        steps = list(zip(widths, list(widths[1:]) + [widths[-1]]))
        self.down_sample_list = nn.LayerList([
            nn.Sequential(nn.MaxPool2D(kernel_size=2, stride=2),
                          ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))
            for cin, cout in steps
        ])

    def forward(self, x: paddle.Tensor) -> Tuple[paddle.Tensor, List[paddle.Tensor]]:
        x = self.double_conv(x)
        skips = []
        for down in self.down_sample_list:
            skips.append(x)
            x = down(x)
        return x, skips


class UpSampling(nn.Layer):
    """Upsample ``x`` to ``skip``'s size, concatenate ``[x, skip]``, apply two blocks.

    ``in_channels`` is the channel count of both ``x`` and ``skip`` (equal in UNet).
    """

    def __init__(self, in_channels: int, out_channels: int, align_corners: bool,
                 use_deconv: bool) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.use_deconv = use_deconv
        if use_deconv:
            # Weight init left at Paddle's transposed-conv default, as PaddleSeg does.
            self.deconv = nn.Conv2DTranspose(in_channels, out_channels // 2, kernel_size=2,
                                             stride=2, padding=0)
            concat_channels = in_channels + out_channels // 2
        else:
            concat_channels = 2 * in_channels
        self.double_conv = _double_conv(concat_channels, out_channels)

    def forward(self, x: paddle.Tensor, skip: paddle.Tensor) -> paddle.Tensor:
        if self.use_deconv:
            x = self.deconv(x)
            # An odd-sized skip (pooling floored it) is one pixel larger than 2x; match it.
            if tuple(x.shape[2:]) != tuple(skip.shape[2:]):
                x = self._resize_to(x, skip)
        else:
            x = self._resize_to(x, skip)
        return self.double_conv(paddle.concat([x, skip], axis=1))

    def _resize_to(self, x: paddle.Tensor, ref: paddle.Tensor) -> paddle.Tensor:
        # paddle.shape (a tensor) keeps exported static graphs valid for any input size.
        return F.interpolate(x, paddle.shape(ref)[2:], mode="bilinear",
                             align_corners=self.align_corners)


class Decoder(nn.Layer):
    def __init__(self, widths: Sequence[int], align_corners: bool, use_deconv: bool) -> None:
        super().__init__()
        b = widths[0]
        # (channels of x and skip, output channels), deepest step first.
        steps = [(widths[3], widths[2]), (widths[2], widths[1]), (widths[1], b), (b, b)]
        self.up_sample_list = nn.LayerList([
            UpSampling(cin, cout, align_corners, use_deconv) for cin, cout in steps
        ])

    def forward(self, x: paddle.Tensor, skips: List[paddle.Tensor]) -> paddle.Tensor:
        for up, skip in zip(self.up_sample_list, reversed(skips)):
            x = up(x, skip)
        return x


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ComponentArgumentError(f"UNet: {name} must be a positive integer, got {value!r}",
                                     name)
    return value


@MODELS.register()
class UNet(nn.Layer):
    """U-Net (Ronneberger et al. 2015) laid out exactly like PaddleSeg's ``UNet``.

    Args:
        num_classes: number of output channels (classes).
        in_channels: input image channels.
        align_corners: ``align_corners`` of the bilinear upsampling.
        use_deconv: upsample with 2x2 transposed convs instead of bilinear resizing.
        pretrained: weights to load after building: a ``.pdparams`` path, an http(s) URL
            or a model-zoo name (see ``paddleseg_unet.utils.weights.MODEL_ZOO``). Loaded
            leniently: keys whose shape differs (e.g. another class count) are skipped.
        base_channels: width of the first stage; all widths scale with it (64 = PaddleSeg).

    ``forward`` returns a list holding one ``[N, num_classes, H, W]`` logit map.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, align_corners: bool = False,
                 use_deconv: bool = False, pretrained: Optional[str] = None,
                 base_channels: int = 64) -> None:
        super().__init__()
        self.num_classes = _check_positive_int("num_classes", num_classes)
        self.in_channels = _check_positive_int("in_channels", in_channels)
        b = _check_positive_int("base_channels", base_channels)
        if use_deconv and b < 2:
            raise ComponentArgumentError("UNet: use_deconv needs base_channels >= 2 (the last "
                                         f"transposed conv has base_channels // 2 outputs), "
                                         f"got {b}", "base_channels")
        self.align_corners = bool(align_corners)
        self.use_deconv = bool(use_deconv)
        widths = [b, 2 * b, 4 * b, 8 * b]
        self.encode = Encoder(in_channels, widths)
        self.decode = Decoder(widths, self.align_corners, self.use_deconv)
        # One layer under two names: PaddleSeg's checkpoints hold both cls.* and conv.*.
        self.cls = self.conv = _conv3x3(b, num_classes)
        self.pretrained = pretrained
        if pretrained:
            load_weights(self, pretrained, strict=False)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        self._check_input(x)
        x, skips = self.encode(x)
        x = self.decode(x, skips)
        return [self.cls(x)]

    def _check_input(self, x: paddle.Tensor) -> None:
        shape = list(x.shape)
        if len(shape) != 4:
            raise ValueError(f"UNet expects an NCHW batch, got a tensor of shape {shape}")
        # Static-graph export marks unknown sizes with -1 (or a graph value): check known ones.
        if shape[1] > 0 and shape[1] != self.in_channels:
            raise ValueError(f"UNet was built with in_channels={self.in_channels} but got "
                             f"an input with {shape[1]} channels (shape {shape})")
        known = [s for s in shape[2:] if isinstance(s, int) and s > 0]
        if known and min(known) < MIN_INPUT_SIZE:
            raise ValueError(f"UNet needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} "
                             f"pixels (four 2x poolings), got {shape[2]}x{shape[3]}")
