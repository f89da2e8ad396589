"""harness.loading: --model selectors (zoo names and package.module:attribute) into ModelSpecs."""

from __future__ import annotations

import pytest

from harness.loading import ModelSelectionError, resolve_models, specs_from, validate_selectors, zoo_names
from harness.spec import ModelSpec
from harness_zoo import ZOO
from tests.user_models import custom_lm

USER = "tests.user_models.custom_lm"


def test_zoo_names_are_the_sorted_zoo():
    assert zoo_names() == sorted(ZOO)
    assert {"cnn-digits", "gpt2-tiny"} <= set(zoo_names())


def test_no_selector_means_the_whole_zoo():
    specs = resolve_models([])
    assert all(isinstance(spec, ModelSpec) for spec in specs)
    assert [spec.name for spec in specs] == zoo_names()


def test_zoo_names_resolve_in_the_order_given():
    assert [spec.name for spec in resolve_models(["gpt2-tiny", "cnn-digits"])] == ["gpt2-tiny", "cnn-digits"]
    assert [spec.name for spec in resolve_models(["cnn-digits"])] == ["cnn-digits"]


def test_unknown_zoo_names_are_all_named_with_the_available_ones():
    with pytest.raises(ModelSelectionError) as error:
        resolve_models(["cnn-digits", "nope", "gpt3"])
    message = str(error.value)
    assert "unknown model 'nope', 'gpt3'" in message
    assert "available: " + ", ".join(zoo_names()) in message


def test_validate_selectors_checks_zoo_names_without_importing_user_modules():
    validate_selectors(["cnn-digits", "no_such_package_xyz.module:attribute"])  # not imported, so no error
    with pytest.raises(ModelSelectionError, match="unknown model 'cnn_digits'"):
        validate_selectors(["cnn_digits"])


@pytest.mark.parametrize(
    ("attribute", "names"),
    [
        ("SPEC", ["custom-lm"]),
        ("SPECS", ["custom-lm-small", "custom-lm-wide"]),
        ("build", ["custom-lm-built"]),
        ("build_list", ["custom-lm-listed-a", "custom-lm-listed-b"]),
    ],
)
def test_user_selectors_resolve_every_target_shape(attribute, names):
    specs = resolve_models([f"{USER}:{attribute}"])
    assert [spec.name for spec in specs] == names
    assert all(isinstance(spec, ModelSpec) for spec in specs)


def test_zoo_and_user_selectors_mix_in_order():
    specs = resolve_models([f"{USER}:SPECS", "cnn-digits", f"{USER}:SPEC"])
    assert [spec.name for spec in specs] == ["custom-lm-small", "custom-lm-wide", "cnn-digits", "custom-lm"]
    assert specs[-1] is custom_lm.SPEC


@pytest.mark.parametrize(
    ("selectors", "name"),
    [
        (["cnn-digits", "cnn-digits"], "cnn-digits"),
        ([f"{USER}:SPEC", f"{USER}:SPEC"], "custom-lm"),
        ([f"{USER}:SPECS", f"{USER}:SPEC", f"{USER}:SPECS"], "custom-lm-small, custom-lm-wide"),
    ],
)
def test_duplicate_names_are_rejected(selectors, name):
    with pytest.raises(ModelSelectionError) as error:
        resolve_models(selectors)
    assert f"share the name {name};" in str(error.value)
    assert "names must be unique" in str(error.value)


@pytest.mark.parametrize("selector", [f"{USER}:", ":SPEC"])
def test_malformed_selectors(selector):
    with pytest.raises(ModelSelectionError, match="must look like package.module:attribute"):
        resolve_models([selector])


def test_a_failed_import_shows_the_exception():
    with pytest.raises(ModelSelectionError) as error:
        resolve_models(["no_such_package_xyz.models:build"])
    message = str(error.value)
    assert "cannot import 'no_such_package_xyz.models'" in message
    assert "ModuleNotFoundError" in message


def test_a_missing_attribute_lists_what_the_module_has():
    with pytest.raises(ModelSelectionError) as error:
        resolve_models([f"{USER}:missing_attr"])
    message = str(error.value)
    assert f"module '{USER}' has no attribute 'missing_attr'" in message
    listed = message.split("specs and callables it defines: ")[1].split(", ")
    assert {"SPEC", "SPECS", "build", "build_list"} <= set(listed)
    assert not any(name.startswith("_") for name in listed)
    assert not {"torch", "nn", "annotations"} & set(listed)  # imported names are not the user's


def _spec() -> ModelSpec:
    return custom_lm.SPEC


def test_specs_from_accepts_a_spec_a_list_a_tuple_and_callables():
    spec, (small, wide) = custom_lm.SPEC, custom_lm.SPECS
    assert specs_from(spec, "o") == [spec]
    assert specs_from([small, wide], "o") == [small, wide]
    assert specs_from((small, wide), "o") == [small, wide]
    assert specs_from(_spec, "o") == [spec]
    assert specs_from(lambda: (small,), "o") == [small]
    assert isinstance(specs_from((small,), "o"), list)


@pytest.mark.parametrize(
    ("target", "type_name"),
    [
        (42, "int"),
        ("custom-lm", "str"),
        ([], "list"),
        ((), "tuple"),
        ([custom_lm.SPEC, 3], "list"),
        ({"custom-lm": custom_lm.SPEC}, "dict"),
        (lambda: 7, "int"),
        (lambda: [], "list"),
        (lambda: None, "NoneType"),
        (lambda: _spec, "function"),  # only one call: a callable returning a callable is refused
    ],
)
def test_specs_from_rejects_other_types(target, type_name):
    with pytest.raises(ModelSelectionError) as error:
        specs_from(target, "pkg.mod:thing")
    assert str(error.value) == (
        f"pkg.mod:thing must be a ModelSpec, a non-empty list of them, or a callable returning either; got {type_name}"
    )


def test_specs_from_reports_a_callable_that_raises():
    def explode():
        raise RuntimeError("checkpoint not found")

    with pytest.raises(ModelSelectionError) as error:
        specs_from(explode, "pkg.mod:explode")
    assert "calling pkg.mod:explode raised" in str(error.value)
    assert "RuntimeError: checkpoint not found" in str(error.value)


def test_specs_from_does_not_call_a_callable_that_needs_arguments_silently():
    def needs_argument(size):
        return custom_lm.SPEC

    with pytest.raises(ModelSelectionError, match="calling pkg.mod:f raised"):
        specs_from(needs_argument, "pkg.mod:f")
