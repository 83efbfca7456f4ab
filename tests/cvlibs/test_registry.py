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
