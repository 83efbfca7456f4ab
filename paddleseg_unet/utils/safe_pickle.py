"""The one way this toolkit reads a pickle: an unpickler with an allow-list.

Pickle can run arbitrary code: any global a pickle names is imported and may be called
while loading. ``.pdparams`` (weights), ``.pdopt`` (optimizer state) and the ``rng.pkl`` of
older checkpoints are pickles, and they come from the internet or from shared folders, so
every one of them is read with :func:`load_pickle`, which resolves only:

- plain containers, numbers, strings, bytes, booleans and None (pickle builds these itself);
- ``set``, ``frozenset`` and ``tuple`` (protocol 2 sets; ``paddle.save``'s tensors);
- numpy arrays, dtypes and scalars (what ``paddle.save`` turns tensors into);
- ``collections.OrderedDict`` and protocol 2's latin-1 ``_codecs.encode`` for bytes;
- Paddle's random-generator state (``paddle.base.libpaddle.GeneratorState``, in older
  ``rng.pkl`` files), built as an inert :class:`GeneratorStateRecord`, never the real class.

Any other global is refused with :class:`UnsafePickleError` before it is imported or called.
What is *not* checked: the values themselves (a huge array is still loaded) and the meaning
of the structure; callers validate that.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any, Callable, Dict, Tuple

import numpy as np

PICKLE_PROTOCOL_OPCODE = b"\x80"  # first byte of every protocol >= 2 pickle (paddle.save's)
ALLOWED_SUMMARY = "dicts, lists, tuples, sets, numbers, strings and numpy arrays"


class SafePickleError(Exception):
    """A pickle that cannot be read; the message names the file."""


class UnsafePickleError(SafePickleError):
    """A pickle that names a global outside the allow-list (e.g. ``posix.system``)."""

    def __init__(self, path: str, global_name: str) -> None:
        self.path, self.global_name = path, global_name
        super().__init__(
            f"Refusing to load {path}: its pickle references the Python global "
            f"'{global_name}', which is not allowed (only {ALLOWED_SUMMARY}); loading it "
            f"could run code. The file may be malicious: delete it and use one from a "
            f"source you trust (do not open it with paddle.load or pickle either)")


class NotAPickleError(SafePickleError):
    """A non-empty file that does not start with a pickle header."""


class GeneratorStateRecord:
    """What a pickled ``paddle.base.libpaddle.GeneratorState`` holds, as plain data: the
    tuple its ``__getstate__`` returned. Turning it back into a real state is the caller's
    job (``paddle.base.libpaddle.GeneratorState().__setstate__(record.state)``)."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _numpy_core_attr(submodule: str, name: str) -> Any:
    try:  # numpy >= 2 moved numpy.core to numpy._core
        import numpy._core as core
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core as core
    return getattr(getattr(core, submodule), name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only latin1 allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode called with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> Dict[Tuple[str, str], Callable[..., Any]]:
    allowed: Dict[Tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # Protocol 2 (older Paddle, paddle.save(protocol=2)) stores bytes via this call.
        ("_codecs", "encode"): _latin1_encode,
        ("paddle.base.libpaddle", "GeneratorState"): GeneratorStateRecord,
    }
    for module in ("builtins", "__builtin__"):
        # Protocol 2 spells sets as calls; paddle.save writes each tensor of a nested
        # structure (an AMP optimizer state with master_weights) as tuple((name, array)).
        allowed[(module, "set")] = set
        allowed[(module, "frozenset")] = frozenset
        allowed[(module, "tuple")] = tuple
    for core in ("numpy.core", "numpy._core"):
        for submodule, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                ("numeric", "_frombuffer")):  # the last: protocol 5 arrays
            allowed[(f"{core}.{submodule}", name)] = _numpy_core_attr(submodule, name)
    return allowed


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(self._path, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._path, f"persistent id {pid!r}")


def load_pickle(path: str) -> Any:
    """Unpickle ``path`` with the allow-list; nothing in it is executed.

    Raises ``OSError`` when the file cannot be opened, :class:`UnsafePickleError` for a
    global outside the allow-list, :class:`NotAPickleError` for a non-empty file without a
    pickle header, and :class:`SafePickleError` (with the cause) when it is truncated or
    corrupt."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(1)
        if head and head != PICKLE_PROTOCOL_OPCODE:
            raise NotAPickleError(f"{path} does not start with a pickle header (it is not "
                                  f"a file written by paddle.save or pickle)")
        f.seek(0)
        try:
            return _AllowListUnpickler(f, path).load()
        except SafePickleError:
            raise
        except Exception as exc:  # pickle/numpy errors of every kind mean a damaged file
            raise SafePickleError(f"{path} is truncated or corrupt "
                                  f"({type(exc).__name__}: {exc})") from None


__all__ = ["SafePickleError", "UnsafePickleError", "NotAPickleError", "GeneratorStateRecord",
           "load_pickle", "ALLOWED_SUMMARY"]
