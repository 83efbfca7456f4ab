"""Config merge semantics, overrides and validation on small temporary YAML trees."""
import os
import textwrap

import pytest
import yaml

from paddleseg_unet.cvlibs.config import Config, ConfigError, load_config, parse_value


def write(root, name, text):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


MINIMAL_TRAIN = """
batch_size: 4
iters: 100
model: {type: UNet, num_classes: 2}
train_dataset: {type: Dataset, dataset_root: d, num_classes: 2, transforms: [{type: Normalize}]}
loss: {types: [{type: CrossEntropyLoss}], coef: [1]}
optimizer: {type: SGD, momentum: 0.9}
lr_scheduler: {type: PolynomialDecay, learning_rate: 0.01}
"""


def test_child_wins_dicts_merge_and_lists_are_replaced(tmp_path):
    write(tmp_path, "base.yml", """
        batch_size: 2
        model: {type: UNet, num_classes: 2, use_deconv: False}
        train_dataset:
          type: Dataset
          transforms: [{type: A}, {type: B}]
    """)
    child = write(tmp_path, "child.yml", """
        _base_: base.yml
        model: {num_classes: 3}
        train_dataset:
          transforms: [{type: C}]
    """)
    cfg = load_config(child, purpose=None)
    assert cfg["batch_size"] == 2
    assert cfg["model"] == {"type": "UNet", "num_classes": 3, "use_deconv": False}
    assert cfg["train_dataset"]["transforms"] == [{"type": "C"}]
    assert "_base_" not in cfg.data


def test_inherited_false_replaces_the_base_dict(tmp_path):
    write(tmp_path, "base.yml", "optimizer: {type: SGD, momentum: 0.9, weight_decay: 4.0e-5}\n")
    child = write(tmp_path, "child.yml", """
        _base_: base.yml
        optimizer: {_inherited_: False, type: Adam}
    """)
    cfg = load_config(child, purpose=None)
    assert cfg["optimizer"] == {"type": "Adam"}
    assert cfg.where("optimizer.type").startswith(str(child))


def test_inherited_false_in_a_listed_base_replaces_the_earlier_bases_dict(tmp_path):
    """A shared recipe fragment listed after a dataset base replaces the dataset's optimizer,
    as it would if the fragment's keys were written in the child itself."""
    write(tmp_path, "dataset.yml", "optimizer: {type: SGD, momentum: 0.9, weight_decay: 4.0e-5}\n")
    write(tmp_path, "grand.yml", "optimizer: {type: SGD, nesterov: True}\n")
    write(tmp_path, "recipe.yml", """
        _base_: grand.yml
        optimizer: {_inherited_: False, type: Adam}
    """)
    child = write(tmp_path, "child.yml", """
        _base_: [dataset.yml, recipe.yml]
        optimizer: {weight_decay: 0.0}
    """)
    cfg = load_config(child, purpose=None)
    assert cfg.data == {"optimizer": {"type": "Adam", "weight_decay": 0.0}}
    assert cfg.where("optimizer.type").endswith("recipe.yml: optimizer.type")
    assert cfg.where("optimizer.weight_decay").endswith("child.yml: optimizer.weight_decay")
    # Order matters: listed first, the fragment is only merged under the later base.
    swapped = write(tmp_path, "swapped.yml", "_base_: [recipe.yml, dataset.yml]\n")
    assert load_config(swapped, purpose=None).data == {
        "optimizer": {"type": "SGD", "momentum": 0.9, "weight_decay": 4.0e-5}}


def test_chained_and_listed_bases_relative_to_each_file(tmp_path):
    write(tmp_path, "a/grand.yml", "batch_size: 1\niters: 10\nmodel: {type: UNet, num_classes: 2}\n")
    write(tmp_path, "a/parent.yml", "_base_: grand.yml\niters: 20\n")
    write(tmp_path, "b/other.yml", "model: {use_deconv: True}\nbatch_size: 7\n")
    child = write(tmp_path, "c/child.yml",
                  "_base_: ['../a/parent.yml', '../b/other.yml']\nbatch_size: 9\n")
    cfg = load_config(child, purpose=None)
    assert cfg.data == {"batch_size": 9, "iters": 20,
                        "model": {"type": "UNet", "num_classes": 2, "use_deconv": True}}
    assert cfg.where("iters").endswith("parent.yml: iters")
    assert cfg.where("model.use_deconv").endswith("other.yml: model.use_deconv")
    assert cfg.where("model.num_classes").endswith("grand.yml: model.num_classes")


def test_missing_base_and_cycles_are_reported(tmp_path):
    child = write(tmp_path, "child.yml", "_base_: nowhere.yml\n")
    with pytest.raises(ConfigError, match="nowhere.yml.*not found"):
        load_config(child, purpose=None)
    write(tmp_path, "x.yml", "_base_: y.yml\n")
    y = write(tmp_path, "y.yml", "_base_: x.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(y, purpose=None)


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = write(tmp_path, "bad.yml", "model:\n  type: UNet\n   num_classes: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yml: invalid YAML at line 3"):
        load_config(bad, purpose=None)
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "absent.yml"))


def test_command_line_overrides(tmp_path):
    path = write(tmp_path, "c.yml", MINIMAL_TRAIN)
    cfg = load_config(path, batch_size=8, iters=50, learning_rate=0.5,
                      opts=["train_dataset.dataset_root=data/DRIVE",
                            "train_dataset.transforms.0.type=Resize", "optimizer.momentum=0.8"],
                      purpose="train")
    assert cfg.batch_size == 8 and cfg.iters == 50
    assert cfg["lr_scheduler"]["learning_rate"] == 0.5
    assert cfg["train_dataset"]["dataset_root"] == "data/DRIVE"
    assert cfg["train_dataset"]["transforms"][0]["type"] == "Resize"
    assert cfg["optimizer"]["momentum"] == 0.8
    assert cfg.where("optimizer.momentum") == "--opts: optimizer.momentum"
    # List items in either spelling; a key below an overridden one keeps its override.
    assert cfg.where("train_dataset.transforms[0].type") == \
        "--opts: train_dataset.transforms[0].type"
    assert cfg.where("train_dataset").child("transforms").child("[0]").child("type") == \
        "--opts: train_dataset.transforms[0].type"
    assert cfg.where("train_dataset").child("mode") == f"{path}: train_dataset.mode"


@pytest.mark.parametrize("opt, message", [
    ("model.num_clases=3", r"no key 'model.num_clases'.*Did you mean model.num_classes"),
    ("modle.num_classes=3", r"modle: no such key.*Did you mean 'model'"),
    ("train_dataset.transforms.5.type=X", r"'5' is not an index of a list of 1 items"),
    ("no_equals_sign", r"expected key=value"),
])
def test_unknown_dotted_keys_are_errors(tmp_path, opt, message):
    path = write(tmp_path, "c.yml", MINIMAL_TRAIN)
    with pytest.raises(ConfigError, match=message):
        load_config(path, opts=[opt])


def test_opts_may_set_an_argument_the_component_accepts(tmp_path):
    from paddleseg_unet.cvlibs.registry import MODELS

    @MODELS.register(name="_OptsProbeModel")
    class Probe:
        def __init__(self, num_classes, base_channels=64):
            pass

    path = write(tmp_path, "c.yml", "model: {type: _OptsProbeModel, num_classes: 2}\n")
    cfg = load_config(path, opts=["model.base_channels=16"])
    assert cfg["model"]["base_channels"] == 16
    with pytest.raises(ConfigError, match="no key 'model.base_channel'"):
        load_config(path, opts=["model.base_channel=16"])


@pytest.mark.parametrize("raw, value", [
    ("4", 4), ("0.5", 0.5), ("[64, 64]", [64, 64]), ("True", True), ("false", False),
    ("None", None), ("null", None), ("data/DRIVE", "data/DRIVE"), ("'quoted'", "quoted"),
    ("1e-3", 1e-3),
])
def test_values_parse_as_python_literals(raw, value):
    assert parse_value(raw) == value


@pytest.mark.parametrize("edit, message", [
    ("iters: '1000'", r"c.yml: iters: must be an integer, got str '1000'"),
    ("batch_size: 0", r"c.yml: batch_size: must be a positive integer"),
    ("batch_size: true", r"c.yml: batch_size: must be an integer, got bool"),
    ("modle: {type: UNet}", r"c.yml: modle: unknown top-level key \(did you mean 'model'\?\)"),
    ("model: [UNet]", r"c.yml: model: must be a mapping, got list"),
    ("model: {num_classes: 2}", r"c.yml: model: needs a 'type'"),
    ("loss: {types: [{type: CrossEntropyLoss}], coef: [1, 2]}", r"loss.coef: has 2 values for 1"),
    ("loss: {types: [], coef: []}", r"loss.types: must be a non-empty list"),
    ("train_dataset: {type: Dataset, num_classes: 2, transforms: {type: Normalize}}",
     r"train_dataset.transforms: must be a list"),
    ("train_dataset: {type: Dataset, num_classes: 2, transforms: [Normalize]}",
     r"train_dataset.transforms\[0\]: each transform needs a 'type'"),
    ("train_config: {use_emaa: true}",
     r"c.yml: train_config.use_emaa: unknown key \(did you mean 'use_ema'\?\)"),
    ("train_config: {use_ema: 1}", r"train_config.use_ema: must be true or false, got int 1"),
    ("train_config: {ema_decay: true}", r"train_config.ema_decay: must be a number, got bool"),
])
def test_validation_errors_name_file_and_key(tmp_path, edit, message):
    base = yaml.safe_load(MINIMAL_TRAIN)
    base.update(yaml.safe_load(edit))
    path = write(tmp_path, "c.yml", yaml.safe_dump(base))
    with pytest.raises(ConfigError, match=message):
        load_config(path, purpose="train")


def test_missing_sections_depend_on_purpose_and_are_gathered(tmp_path):
    path = write(tmp_path, "c.yml", "model: {type: UNet, num_classes: 2}\niters: 'x'\n")
    load_config(path, purpose=None)  # parsing alone is fine
    with pytest.raises(ConfigError) as err:
        load_config(path, purpose="train")
    msg = str(err.value)
    for key in ("train_dataset", "batch_size", "loss", "optimizer", "lr_scheduler"):
        assert f"missing required section '{key}'" in msg
    assert "iters: must be an integer" in msg  # all problems in one error
    with pytest.raises(ConfigError, match="missing required section 'val_dataset'"):
        load_config(path, purpose="val")


def test_dump_reloads_to_the_same_values(tmp_path):
    write(tmp_path, "base.yml", MINIMAL_TRAIN)
    child = write(tmp_path, "child.yml", "_base_: base.yml\ntest_config: {auc_roc: True}\n")
    cfg = load_config(child, opts=["optimizer.momentum=0.5"], purpose="train")
    out = tmp_path / "out" / "resolved.yml"
    out.parent.mkdir()
    out.write_text(cfg.to_yaml(), encoding="utf-8")
    again = load_config(str(out), purpose="train")
    assert again.data == cfg.data
    assert cfg.to_yaml().startswith(f"# resolved from {child}")


def test_config_from_a_dict():
    cfg = Config({"model": {"type": "UNet", "num_classes": 2}})
    assert cfg.validate("model") is cfg
    assert cfg.where("model.type") == "<dict>: model.type"
