"""2-D convolutions on the CPU through oneDNN, the library inside Paddle's own wheel.

Paddle's eager CPU convolution is im2col + GEMM (about 40 GFLOP/s on two cores of the
machines this project is timed on); oneDNN's direct convolutions run the same arithmetic
several times faster, but Paddle only calls them from static inference graphs. This module
calls ``libdnnl.so.3`` (shipped in ``paddle/libs``) through its C API with ctypes, so nothing
is compiled, and wraps forward and backward in a ``PyLayer``: ``conv2d`` is a drop-in for
``paddle.nn.functional.conv2d`` (NCHW, float32, groups 1) in eager CPU mode, and falls back
to it everywhere else (GPU, static graphs, other dtypes, or when the library is missing).

Results equal Paddle's convolution up to float32 rounding (the summation order differs);
``tests/utils/test_onednn.py`` compares forward and gradients with a numpy reference.
``PADDLESEG_UNET_ONEDNN=0`` turns it off.
"""
from __future__ import annotations

import collections
import ctypes
import os
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import paddle
import paddle.nn.functional as F

from paddleseg_unet.utils.device import configured_cpu_threads
from paddleseg_unet.utils.logger import logger

# Values from oneDNN 3.x's dnnl_types.h / dnnl_common_types.h (stable within major version 3).
_CPU_ENGINE = 1
_F32 = 3
_TAG_ANY, _TAG_A, _TAG_ABCD = 1, 2, 5
_FORWARD_TRAINING, _FORWARD_INFERENCE = 64, 96
_CONVOLUTION_DIRECT = 0x1
_STREAM_IN_ORDER = 0x1
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_BIAS = 1, 17, 33, 41
_ARG_DIFF_SRC, _ARG_DIFF_DST, _ARG_DIFF_WEIGHTS, _ARG_DIFF_BIAS = 129, 145, 161, 169
_QUERY_IMPL_INFO = 8
_QUERY_SRC_MD, _QUERY_DIFF_SRC_MD, _QUERY_WEIGHTS_MD = 129, 130, 131
_QUERY_DIFF_WEIGHTS_MD, _QUERY_DST_MD, _QUERY_DIFF_DST_MD = 132, 133, 134

_Dims = ctypes.c_int64 * 12
_vp = ctypes.c_void_p
_pvp = ctypes.POINTER(ctypes.c_void_p)


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class OneDNNError(RuntimeError):
    pass


def _dims(values: Sequence[int]) -> "ctypes.Array[ctypes.c_int64]":
    return _Dims(*values)


class _Library:
    """The C functions used here, with their signatures, and one CPU engine."""

    _SIGNATURES = {
        "dnnl_engine_create": [_pvp, ctypes.c_int, ctypes.c_size_t],
        "dnnl_stream_create": [_pvp, _vp, ctypes.c_uint],
        "dnnl_memory_desc_create_with_tag": [_pvp, ctypes.c_int, _Dims, ctypes.c_int,
                                             ctypes.c_int],
        "dnnl_convolution_forward_primitive_desc_create": [
            _pvp, _vp, ctypes.c_int, ctypes.c_int, _vp, _vp, _vp, _vp,
            _Dims, _Dims, _Dims, _Dims, _vp],
        "dnnl_convolution_backward_data_primitive_desc_create": [
            _pvp, _vp, ctypes.c_int, _vp, _vp, _vp, _Dims, _Dims, _Dims, _Dims, _vp, _vp],
        "dnnl_convolution_backward_weights_primitive_desc_create": [
            _pvp, _vp, ctypes.c_int, _vp, _vp, _vp, _vp, _Dims, _Dims, _Dims, _Dims, _vp, _vp],
        "dnnl_reorder_primitive_desc_create": [_pvp, _vp, _vp, _vp, _vp, _vp],
        "dnnl_primitive_desc_query": [_vp, ctypes.c_int, ctypes.c_int, _vp],
        "dnnl_primitive_create": [_pvp, _vp],
        "dnnl_memory_create": [_pvp, _vp, _vp, _vp],
        "dnnl_memory_set_data_handle": [_vp, _vp],
        "dnnl_primitive_execute": [_vp, _vp, ctypes.c_int, ctypes.POINTER(_ExecArg)],
        "dnnl_stream_wait": [_vp],
    }

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        for name, argtypes in self._SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
        lib.dnnl_primitive_desc_query_md.argtypes = [_vp, ctypes.c_int, ctypes.c_int]
        lib.dnnl_primitive_desc_query_md.restype = _vp
        lib.dnnl_memory_desc_equal.argtypes = [_vp, _vp]
        lib.dnnl_memory_desc_equal.restype = ctypes.c_int
        lib.dnnl_memory_desc_get_size.argtypes = [_vp]
        lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
        for kind in ("primitive", "primitive_desc", "memory", "memory_desc"):
            getattr(lib, f"dnnl_{kind}_destroy").argtypes = [_vp]
        lib.dnnl_version.restype = ctypes.POINTER(ctypes.c_int * 3)
        version = tuple(lib.dnnl_version().contents)
        if version[0] != 3:  # the constants above are version 3's
            raise OneDNNError(f"{path} is oneDNN {'.'.join(map(str, version))}, not 3.x")
        self.version = version
        self.lib = lib
        self.owned: Optional[List[Tuple]] = None  # where ``new`` records handles to destroy
        self.engine = self.new(lib.dnnl_engine_create, _CPU_ENGINE, 0)
        # Thread count of the OpenMP runtime oneDNN was built with (GNU OpenMP in Paddle's
        # wheel): separate from the count Paddle's own kernels use.
        self._omp = _openmp()

    def call(self, fn, *args) -> None:
        status = fn(*args)
        if status != 0:
            raise OneDNNError(f"oneDNN {fn.__name__} failed with status {status}")

    def new(self, fn, *args) -> ctypes.c_void_p:
        """Call a ``dnnl_*_create`` function and return what it created; it is destroyed by
        ``release`` (plans are evicted, see ``_plan``)."""
        handle = ctypes.c_void_p()
        self.call(fn, ctypes.byref(handle), *args)
        kind = fn.__name__[len("dnnl_"):].split("_create")[0]
        if kind.endswith("_primitive_desc"):
            kind = "primitive_desc"
        elif kind.startswith("memory_desc"):
            kind = "memory_desc"
        if self.owned is not None:
            self.owned.append((getattr(self.lib, f"dnnl_{kind}_destroy"), handle))
        return handle

    def release(self, owned: List[Tuple]) -> None:
        for destroy, handle in reversed(owned):
            destroy(handle)
        owned.clear()

    def plain_md(self, shape: Sequence[int]) -> ctypes.c_void_p:
        tag = {1: _TAG_A, 4: _TAG_ABCD}[len(shape)]
        return self.new(self.lib.dnnl_memory_desc_create_with_tag, len(shape), _dims(shape),
                        _F32, tag)

    def any_md(self, shape: Sequence[int]) -> ctypes.c_void_p:
        return self.new(self.lib.dnnl_memory_desc_create_with_tag, len(shape), _dims(shape),
                        _F32, _TAG_ANY)

    def set_threads(self, threads: Optional[int]) -> None:
        """The calling thread's OpenMP thread count (None: leave it)."""
        if threads and self._omp is not None and self._omp.omp_get_max_threads() != threads:
            self._omp.omp_set_num_threads(threads)


def _openmp() -> Optional[ctypes.CDLL]:
    """The GNU OpenMP runtime Paddle's libdnnl.so.3 is linked with (already loaded with it, so
    this is the same instance), or None: then oneDNN keeps its default thread count."""
    try:
        omp = ctypes.CDLL("libgomp.so.1")
    except OSError:
        return None
    omp.omp_get_max_threads.restype = ctypes.c_int
    omp.omp_set_num_threads.argtypes = [ctypes.c_int]
    return omp


class _Memory:
    """One argument of a primitive: a oneDNN memory object over the Paddle tensor (plain
    layout) and, when the primitive chose a blocked layout, a second one in that layout with
    the reorder between them (into it for inputs, out of it for outputs)."""

    def __init__(self, library: _Library, plain_md, chosen_md, is_input: bool) -> None:
        lib = library.lib
        self.library = library
        self.is_input = is_input
        self.plain = library.new(lib.dnnl_memory_create, plain_md, library.engine, None)
        self.memory = self.plain
        self.blocked = chosen_md is not None and not lib.dnnl_memory_desc_equal(plain_md,
                                                                                 chosen_md)
        if self.blocked:
            self.memory = library.new(lib.dnnl_memory_create, chosen_md, library.engine, None)
            self.nbytes = int(lib.dnnl_memory_desc_get_size(chosen_md))
            src, dst = (plain_md, chosen_md) if is_input else (chosen_md, plain_md)
            pd = library.new(lib.dnnl_reorder_primitive_desc_create, src, library.engine, dst,
                             library.engine, None)
            self.reorder = library.new(lib.dnnl_primitive_create, pd)

    def bind(self, tensor: paddle.Tensor, stream) -> Optional[paddle.Tensor]:
        """Point at ``tensor``'s data (and reorder an input into the chosen layout). Returns
        the blocked-layout buffer, which must live until the primitive has run."""
        lib = self.library.lib
        self.library.call(lib.dnnl_memory_set_data_handle, self.plain, tensor.data_ptr())
        if not self.blocked:
            return None
        # Allocated through Paddle, so its allocator's cache serves the next call.
        buffer = paddle.empty([(self.nbytes + 3) // 4], dtype="float32")
        self.library.call(lib.dnnl_memory_set_data_handle, self.memory, buffer.data_ptr())
        if self.is_input:
            self._reorder(stream)
        return buffer

    def finish(self, stream) -> None:
        """After the primitive ran: reorder an output from the chosen layout into the tensor."""
        if self.blocked and not self.is_input:
            self._reorder(stream)

    def _reorder(self, stream) -> None:
        src, dst = (self.plain, self.memory) if self.is_input else (self.memory, self.plain)
        args = (_ExecArg * 2)(_ExecArg(_ARG_SRC, src), _ExecArg(_ARG_DST, dst))
        self.library.call(self.library.lib.dnnl_primitive_execute, self.reorder, stream, 2, args)


class _Primitive:
    """A convolution primitive and its arguments. ``args`` maps each execution argument to
    (plain memory descriptor, query for the layout the primitive chose, is_input); a query
    of None keeps the argument plain (the bias)."""

    def __init__(self, library: _Library, pd, args: Dict[int, Tuple]) -> None:
        lib = library.lib
        self.library = library
        self.primitive = library.new(lib.dnnl_primitive_create, pd)
        info = ctypes.c_char_p()
        library.call(lib.dnnl_primitive_desc_query, pd, _QUERY_IMPL_INFO, 0, ctypes.byref(info))
        self.implementation = (info.value or b"").decode()
        self.args = {
            arg: _Memory(library, plain, None if query is None
                         else lib.dnnl_primitive_desc_query_md(pd, query, 0), is_input)
            for arg, (plain, query, is_input) in args.items()}
        self._exec_args = (_ExecArg * len(self.args))(
            *[_ExecArg(arg, memory.memory) for arg, memory in self.args.items()])

    def run(self, stream, tensors: Dict[int, paddle.Tensor]) -> None:
        buffers = [memory.bind(tensors[arg], stream) for arg, memory in self.args.items()]
        lib = self.library.lib
        self.library.call(lib.dnnl_primitive_execute, self.primitive, stream,
                          len(self.args), self._exec_args)
        for memory in self.args.values():
            memory.finish(stream)
        self.library.call(lib.dnnl_stream_wait, stream)
        del buffers


class _ConvPlan:
    """Forward, backward-data and backward-weights primitives for one convolution shape;
    each picks its own memory layouts (``format_tag_any``), reordered to and from NCHW."""

    def __init__(self, library: _Library, x_shape: Sequence[int], w_shape: Sequence[int],
                 with_bias: bool, padding: Tuple[int, int], stride: Tuple[int, int],
                 training: bool) -> None:
        lib, engine = library.lib, library.engine
        n, _, h, w = x_shape
        o, _, kh, kw = w_shape
        self.out_shape = [n, o, (h + 2 * padding[0] - kh) // stride[0] + 1,
                          (w + 2 * padding[1] - kw) // stride[1] + 1]
        geometry = (_dims(stride), _dims([0, 0]), _dims(padding), _dims(padding))
        shapes = {"x": x_shape, "w": w_shape, "y": self.out_shape}
        plain = {name: library.plain_md(shape) for name, shape in shapes.items()}
        anys = {name: library.any_md(shape) for name, shape in shapes.items()}
        bias_md = library.plain_md([o]) if with_bias else None
        prop = _FORWARD_TRAINING if training else _FORWARD_INFERENCE
        fwd_pd = library.new(lib.dnnl_convolution_forward_primitive_desc_create, engine, prop,
                             _CONVOLUTION_DIRECT, anys["x"], anys["w"], bias_md, anys["y"],
                             *geometry, None)
        args = {_ARG_SRC: (plain["x"], _QUERY_SRC_MD, True),
                _ARG_WEIGHTS: (plain["w"], _QUERY_WEIGHTS_MD, True),
                _ARG_DST: (plain["y"], _QUERY_DST_MD, False)}
        if with_bias:
            args[_ARG_BIAS] = (bias_md, None, True)
        self.forward = _Primitive(library, fwd_pd, args)
        self.backward_data = self.backward_weights = None
        if not training:
            return
        pd = library.new(lib.dnnl_convolution_backward_data_primitive_desc_create, engine,
                         _CONVOLUTION_DIRECT, anys["x"], anys["w"], anys["y"], *geometry,
                         fwd_pd, None)
        self.backward_data = _Primitive(library, pd, {
            _ARG_DIFF_DST: (plain["y"], _QUERY_DIFF_DST_MD, True),
            _ARG_WEIGHTS: (plain["w"], _QUERY_WEIGHTS_MD, True),
            _ARG_DIFF_SRC: (plain["x"], _QUERY_DIFF_SRC_MD, False)})
        pd = library.new(lib.dnnl_convolution_backward_weights_primitive_desc_create, engine,
                         _CONVOLUTION_DIRECT, anys["x"], anys["w"], bias_md, anys["y"],
                         *geometry, fwd_pd, None)
        args = {_ARG_SRC: (plain["x"], _QUERY_SRC_MD, True),
                _ARG_DIFF_DST: (plain["y"], _QUERY_DIFF_DST_MD, True),
                _ARG_DIFF_WEIGHTS: (plain["w"], _QUERY_DIFF_WEIGHTS_MD, False)}
        if with_bias:
            args[_ARG_DIFF_BIAS] = (bias_md, None, False)
        self.backward_weights = _Primitive(library, pd, args)


_state = threading.local()  # per thread: stream and plans (memory objects are rebound per call)
_library: Optional[_Library] = None
_library_failed = False
_lock = threading.Lock()
_build_lock = threading.Lock()


def _library_path() -> str:
    return os.path.join(os.path.dirname(paddle.__file__), "libs", "libdnnl.so.3")


def _load() -> Optional[_Library]:
    global _library, _library_failed
    if _library is not None or _library_failed:
        return _library
    with _lock:
        if _library is None and not _library_failed:
            try:
                _library = _Library(_library_path())
            except (OSError, AttributeError, OneDNNError) as exc:
                _library_failed = True
                logger.info(f"oneDNN convolutions unavailable ({exc}); using Paddle's")
    return _library


def enabled() -> bool:
    """Whether ``conv2d`` can take the oneDNN path in this process."""
    if os.environ.get("PADDLESEG_UNET_ONEDNN", "1") == "0":
        return False
    return _load() is not None


# Distinct convolution shapes kept per thread. A UNet has ~20 per input size; predicting
# images of many sizes would otherwise grow without bound.
MAX_PLANS = 128


def _plan(library: _Library, key: Tuple) -> _ConvPlan:
    plans = getattr(_state, "plans", None)
    if plans is None:
        plans = _state.plans = collections.OrderedDict()
        _state.stream = library.new(library.lib.dnnl_stream_create, library.engine,
                                    _STREAM_IN_ORDER)
    plan = plans.get(key)
    if plan is not None:
        plans.move_to_end(key)
        return plan
    while plans and len(plans) >= MAX_PLANS:
        _, oldest = plans.popitem(last=False)
        oldest.evicted = True  # a backward still holding it rebuilds (see _Conv2D.backward)
        library.release(oldest.owned)
    owned: List[Tuple] = []
    with _build_lock:  # library.owned is shared; building a plan is rare
        library.owned = owned
        try:
            plan = _ConvPlan(library, *key)
        except OneDNNError:
            library.release(owned)
            raise
        finally:
            library.owned = None
    plan.owned, plan.evicted, plan.key = owned, False, key
    plans[key] = plan
    return plan


class _Conv2D(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, weight, *bias_and_plan):
        *bias, plan = bias_and_plan
        _load().set_threads(configured_cpu_threads())
        out = paddle.empty(plan.out_shape, dtype="float32")
        tensors = {_ARG_SRC: x, _ARG_WEIGHTS: weight, _ARG_DST: out}
        if bias:
            tensors[_ARG_BIAS] = bias[0]
        plan.forward.run(_state.stream, tensors)
        ctx.plan, ctx.with_bias, ctx.x_needs_grad = plan, bool(bias), not x.stop_gradient
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensor()
        library = _load()
        library.set_threads(configured_cpu_threads())
        plan = ctx.plan if not ctx.plan.evicted else _plan(library, ctx.plan.key)
        grad_out = grad_out.contiguous()
        grad_x = None
        if ctx.x_needs_grad:  # e.g. not for the input image
            grad_x = paddle.empty(x.shape, dtype="float32")
            plan.backward_data.run(_state.stream, {_ARG_DIFF_DST: grad_out, _ARG_WEIGHTS: weight,
                                                   _ARG_DIFF_SRC: grad_x})
        grads = {_ARG_DIFF_WEIGHTS: paddle.empty(weight.shape, dtype="float32")}
        if ctx.with_bias:
            grads[_ARG_DIFF_BIAS] = paddle.empty([weight.shape[0]], dtype="float32")
        plan.backward_weights.run(_state.stream, {_ARG_SRC: x, _ARG_DIFF_DST: grad_out, **grads})
        return (grad_x, *grads.values())


def _pair(value) -> Tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


_warned: set = set()


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor] = None,
           stride=1, padding=0) -> paddle.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (NCHW, groups 1, no dilation), run by
    oneDNN in eager mode on the CPU for float32 tensors, by Paddle otherwise."""
    if (paddle.in_dynamic_mode() and x.place.is_cpu_place() and x.dtype == paddle.float32
            and weight.dtype == paddle.float32 and len(x.shape) == 4 and enabled()):
        padding, stride = _pair(padding), _pair(stride)
        training = paddle.is_grad_enabled() and not (x.stop_gradient and weight.stop_gradient)
        key = (tuple(x.shape), tuple(weight.shape), bias is not None, padding, stride, training)
        try:
            plan = _plan(_load(), key)
        except OneDNNError as exc:
            if key not in _warned:
                _warned.add(key)
                logger.warning(f"oneDNN cannot run a convolution of input {list(x.shape)} and "
                               f"weights {list(weight.shape)} ({exc}); Paddle's kernel runs it")
        else:
            args = (x.contiguous(), weight) + ((bias,) if bias is not None else ())
            return _Conv2D.apply(*args, plan)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)
