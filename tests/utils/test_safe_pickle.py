"""The allow-list unpickler: plain data comes back equal, every other global is refused
before it runs, damaged and non-pickle files are named."""
import collections
import os
import pickle
import random

import numpy as np
import paddle
import pytest

from paddleseg_unet.utils.safe_pickle import (GeneratorStateRecord, NotAPickleError,
                                              SafePickleError, UnsafePickleError, load_pickle)


class RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_round_trips(tmp_path, protocol):
    data = {"a": [1, 2.5, "x", None, True, b"\x00\xff"], "t": (1, (2,)),
            "s": {1, 2}, "f": frozenset({"k"}), "o": collections.OrderedDict(z=1),
            "arr": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.int64(7),
            "f16": np.ones(2, np.float16), "big": 2 ** 70}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(str(path))
    assert loaded.keys() == data.keys()
    for key in data:
        if isinstance(data[key], np.ndarray):
            assert loaded[key].dtype == data[key].dtype
            np.testing.assert_array_equal(loaded[key], data[key])
        else:
            assert loaded[key] == data[key] and type(loaded[key]) is type(data[key])


def test_paddle_generator_state_becomes_an_inert_record(tmp_path):
    states = paddle.get_rng_state()
    path = tmp_path / "rng.pkl"
    path.write_bytes(pickle.dumps({"paddle": states, "python": random.getstate()}, protocol=4))
    loaded = load_pickle(str(path))
    record = loaded["paddle"][0]
    assert type(record) is GeneratorStateRecord  # not paddle's class: nothing of it runs
    assert record.state == states[0].__getstate__()
    assert loaded["python"] == random.getstate()


@pytest.mark.parametrize("payload, name", [
    (lambda marker: {"w": np.zeros(2), "x": [RunsCommand(marker)]}, r"(posix|nt)\.system"),
    (lambda marker: CallsEval(), r"(__builtin__|builtins)\.eval"),
    (lambda marker: {"nested": {"deeper": (RunsCommand(marker),)}}, r"(posix|nt)\.system"),
])
@pytest.mark.parametrize("protocol", [2, 4])
def test_any_other_global_is_refused_before_it_runs(tmp_path, payload, name, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload(marker), protocol=protocol))
    with pytest.raises(UnsafePickleError, match=name) as err:
        load_pickle(str(path))
    message = str(err.value)
    assert message.startswith(f"Refusing to load {path}: its pickle references the Python "
                              f"global '{err.value.global_name}', which is not allowed")
    assert "delete it and use one from a source you trust" in message
    assert not marker.exists()


def test_not_a_pickle_and_damaged_files_are_named(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(NotAPickleError, match=f"{text} does not start with a pickle header"):
        load_pickle(str(text))
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps({"a": np.ones(100)}, protocol=4)[:50])
    with pytest.raises(SafePickleError, match=f"{cut} is truncated or corrupt"):
        load_pickle(str(cut))
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(SafePickleError, match="truncated or corrupt"):
        load_pickle(str(empty))
    with pytest.raises(OSError):
        load_pickle(str(tmp_path / "missing.pkl"))
