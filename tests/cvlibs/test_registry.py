import pytest

from paddleseg_unet.cvlibs.registry import (ComponentArgumentError, ConfigError, Registry,
                                            RegistryError, build, build_list)


@pytest.fixture()
def registries():
    parts = Registry("parts")
    extras = Registry("extras")

    @parts.register()
    class Wheel:
        def __init__(self, size, spokes=32):
            self.size, self.spokes = size, spokes

    @parts.register()
    class Bike:
        def __init__(self, front, wheels=(), bell=None):
            self.front, self.wheels, self.bell = front, wheels, bell

    @extras.register(name="Bell")
    def make_bell(loud=False):
        return ("bell", loud)

    return parts, extras


def test_decorator_registers_under_class_name(registries):
    parts, _ = registries
    assert parts.names() == ["Bike", "Wheel"]
    assert "Wheel" in parts and "wheel" not in parts


def test_build_recurses_into_dicts_and_lists(registries):
    parts, extras = registries
    bike = build({"type": "Bike", "front": {"type": "Wheel", "size": 26},
                  "wheels": [{"type": "Wheel", "size": 1}, {"type": "Wheel", "size": 2}],
                  "bell": {"type": "Bell", "loud": True}},
                 parts, child_registries={"bell": extras})
    assert bike.front.size == 26 and bike.front.spokes == 32
    assert [w.size for w in bike.wheels] == [1, 2]
    assert bike.bell == ("bell", True)


def test_plain_dicts_without_type_stay_dicts(registries):
    parts, _ = registries
    bike = build({"type": "Bike", "front": {"size": 3}}, parts)
    assert bike.front == {"size": 3}


def test_unknown_type_names_registry_origin_and_close_matches(registries):
    parts, _ = registries
    with pytest.raises(RegistryError) as err:
        build({"type": "Wheal", "size": 1}, parts, where="bike.yml: model")
    msg = str(err.value)
    assert "parts" in msg and "bike.yml: model" in msg and "Did you mean 'Wheel'" in msg


def test_nested_unknown_type_names_the_nested_key(registries):
    parts, _ = registries
    with pytest.raises(RegistryError, match=r"bike.yml: model.wheels\[1\]"):
        build({"type": "Bike", "front": 1, "wheels": [{"type": "Wheel", "size": 1},
                                                        {"type": "Whee", "size": 2}]},
              parts, where="bike.yml: model")


def test_rejected_values_name_the_file_and_key_path():
    parts = Registry("parts")

    @parts.register()
    class Wheel:
        def __init__(self, size, spokes=32):
            if not isinstance(size, int) or size <= 0:
                raise ComponentArgumentError(f"Wheel: size must be a positive int, got "
                                             f"{size!r}", "size")
            if spokes % 2:
                raise ValueError("Wheel: an odd number of spokes")

    @parts.register()
    class Bike:
        def __init__(self, wheels=()):
            self.wheels = wheels

    with pytest.raises(ConfigError) as err:
        build({"type": "Bike", "wheels": [{"type": "Wheel", "size": 1},
                                          {"type": "Wheel", "size": [0]}]},
              parts, where="bike.yml: model")
    assert str(err.value) == ("bike.yml: model.wheels[1].size: Wheel: size must be a "
                              "positive int, got [0]")
    # A plain ValueError (or TypeError) does not say which argument: the component's key.
    with pytest.raises(ConfigError) as err:
        build({"type": "Wheel", "size": 2, "spokes": 3}, parts, where="bike.yml: model")
    assert str(err.value) == "bike.yml: model: Wheel: an odd number of spokes"
    with pytest.raises(ConfigError, match=r"^bike.yml: model: .*size"):
        build({"type": "Wheel"}, parts, where="bike.yml: model")  # missing argument


def test_unknown_argument_is_refused_with_suggestion(registries):
    parts, _ = registries
    with pytest.raises(RegistryError, match=r"does not take 'sise' \(did you mean 'size'\?\)"):
        build({"type": "Wheel", "sise": 1}, parts, where="x.yml: w")


def test_duplicate_registration_is_refused(registries):
    parts, _ = registries
    with pytest.raises(RegistryError, match="already registered"):
        @parts.register(name="Wheel")
        class Other:
            pass


def test_missing_type_and_build_list(registries):
    parts, _ = registries
    with pytest.raises(RegistryError, match="expected a mapping with a 'type'"):
        build({"size": 1}, parts, where="x.yml: w")
    wheels = build_list([{"type": "Wheel", "size": 5}, {"type": "Wheel", "size": 6}], parts)
    assert [w.size for w in wheels] == [5, 6]


def test_a_registry_imports_its_locations_on_first_lookup(tmp_path, monkeypatch):
    module = tmp_path / "_lazy_members.py"
    module.write_text("from tests_lazy_registry import REG\n"
                      "@REG.register()\nclass LazyThing:\n    pass\n")
    holder = tmp_path / "tests_lazy_registry.py"
    holder.write_text("from paddleseg_unet.cvlibs.registry import Registry\n"
                      "REG = Registry('lazy', locations=['_lazy_members'])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys
    from tests_lazy_registry import REG
    assert "_lazy_members" not in sys.modules
    assert "LazyThing" in REG  # the lookup imported the member's module
    assert "_lazy_members" in sys.modules and REG.names() == ["LazyThing"]


def test_every_registry_finds_its_members_without_prior_imports():
    import subprocess
    import sys
    code = ("from paddleseg_unet.cvlibs import registry as r\n"
            "assert 'UNet' in r.MODELS and 'DRIVE' in r.DATASETS and 'Normalize' in r.TRANSFORMS\n"
            "assert 'DiceLoss' in r.LOSSES and 'SGD' in r.OPTIMIZERS\n"
            "assert 'PolynomialDecay' in r.LR_SCHEDULERS and 'ClipGradByNorm' in r.GRAD_CLIPS\n"
            "assert r.BACKENDS.names() == ['inference', 'onnxruntime', 'paddle']\n"
            "assert 'CheckpointHook' in r.HOOKS\n"
            "assert r.CONVERTERS.names() == ['chasedb1', 'cityscapes', 'drive', 'folder', "
            "'hrf', 'stare']\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
