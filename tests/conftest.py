import logging
import os
import tempfile

import pytest

# Paddle uses one thread unless told; the tests run on small inputs where two are plenty.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Never touch the user's real cache from a test.
os.environ.setdefault("PADDLESEG_UNET_HOME",
                      os.path.join(tempfile.gettempdir(), "paddleseg_unet_test_home"))

SHARED_DATA = os.environ.get(
    "PADDLESEG_UNET_SHARED_DATA",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


@pytest.fixture
def log_lines():
    """The messages the package logger emits during the test (its handlers may not
    propagate to pytest's caplog once a tool has configured logging)."""
    from paddleseg_unet.utils.logger import logger

    lines = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    # Importing the package sets no level (a library stays silent): ask for INFO here.
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
