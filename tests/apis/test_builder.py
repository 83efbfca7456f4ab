"""The builder's cross-section rules, and config loading that does not depend on what a
process happened to import first."""
import os
import subprocess
import sys
import textwrap

import pytest

from paddleseg_unet.apis.builder import SegBuilder, check_config
from paddleseg_unet.cvlibs.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVE_CONFIG = os.path.join(REPO, "configs", "unet", "unet_drive_128x128_40k.yml")


def write(root, name, text):
    path = os.path.join(str(root), name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def test_model_and_dataset_class_counts_must_agree(tmp_path):
    path = write(tmp_path, "c.yml", """
        model: {type: UNet, num_classes: 3}
        val_dataset: {type: Dataset, dataset_root: d, num_classes: 2}
        """)
    cfg = load_config(path, purpose="val")  # each section is fine on its own
    with pytest.raises(ConfigError, match=r"c.yml: model.num_classes: model has 3 classes "
                                          r"but val_dataset \(Dataset"):
        SegBuilder(cfg)


def test_fixed_class_count_of_a_registered_dataset_is_checked(tmp_path):
    from paddleseg_unet.cvlibs.registry import DATASETS

    @DATASETS.register(name="_FixedFiveClasses")
    class Fixed:
        NUM_CLASSES = 5

        def __init__(self, transforms=None, mode="train"):
            pass

    path = write(tmp_path, "c.yml", "model: {type: UNet, num_classes: 2}\n"
                                    "val_dataset: {type: _FixedFiveClasses}\n")
    with pytest.raises(ConfigError, match=r"model has 2 classes but val_dataset "
                                          r"\(_FixedFiveClasses"):
        check_config(load_config(path, purpose="val"))


def test_loss_class_weights_need_one_value_per_class(tmp_path):
    path = write(tmp_path, "c.yml", """
        model: {type: UNet, num_classes: 2}
        loss: {types: [{type: CrossEntropyLoss, weight: [1.0, 2.0, 3.0]}], coef: [1]}
        """)
    with pytest.raises(ConfigError, match=r"loss.types\[0\].weight: 3 values for 2 classes"):
        check_config(load_config(path))


def test_a_fresh_process_validates_without_importing_the_components_first():
    # The registries import their members on first lookup, so neither of these depends on
    # the builder (or anything else) having been imported before load_config.
    code = textwrap.dedent(f"""
        import sys
        from paddleseg_unet.cvlibs.config import ConfigError, load_config
        assert "paddleseg_unet.apis.builder" not in sys.modules
        cfg = load_config({DRIVE_CONFIG!r}, opts=["model.base_channels=16"])
        assert cfg["model"]["base_channels"] == 16
        from paddleseg_unet.apis.builder import check_config
        try:
            check_config(load_config({DRIVE_CONFIG!r}, opts=["model.num_classes=5"]))
        except ConfigError as e:
            assert "model has 5 classes but train_dataset (DRIVE" in str(e), e
        else:
            sys.exit("num_classes=5 on DRIVE was accepted")
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
