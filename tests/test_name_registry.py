"""The shared name → entry registry: order, duplicates, unknown and malformed names, removal, and that every wrcup
registry is built on it."""
from __future__ import annotations

import pytest

from wrcup._registry import Registry


def _fruit(sort: bool = False) -> Registry:
    registry = Registry("fruit", sort=sort)
    for name in ("pear", "apple", "fig"):
        registry.register(name, name.upper())
    return registry


def test_names_in_registration_order_or_sorted():
    assert _fruit().names() == ["pear", "apple", "fig"]
    assert list(_fruit()) == ["pear", "apple", "fig"]
    assert _fruit(sort=True).names() == ["apple", "fig", "pear"]
    assert list(_fruit(sort=True)) == ["apple", "fig", "pear"]
    assert len(_fruit()) == 3 and len(Registry("fruit")) == 0
    assert list(_fruit().as_mapping().items()) == [("pear", "PEAR"), ("apple", "APPLE"), ("fig", "FIG")]


def test_get_and_contains():
    fruit = _fruit()
    assert fruit.get("apple") == "APPLE"
    assert "apple" in fruit and "kiwi" not in fruit
    assert ["apple"] not in fruit and 3 not in fruit  # unhashable or non-string names are simply absent


def test_register_returns_the_entry_and_refuses_a_taken_name():
    fruit = _fruit()
    entry = object()
    assert fruit.register("kiwi", entry) is entry
    with pytest.raises(ValueError, match=r"^fruit 'kiwi' is already registered$"):
        fruit.register("kiwi", "other")
    assert fruit.get("kiwi") is entry  # the first registration stays
    scoped = Registry("dataset", scope="for 'segmentation'")
    scoped.register("camvid", 1)
    with pytest.raises(ValueError, match=r"^dataset 'camvid' is already registered for 'segmentation'$"):
        scoped.register("camvid", 2)


def test_unknown_name_names_the_argument_and_lists_the_choices():
    for bad in ("kiwi", "", None, ["apple"]):
        with pytest.raises(ValueError) as err:
            _fruit().get(bad)
        assert str(err.value) == f"fruit must be one of 'pear', 'apple', 'fig'; got {bad!r}"
    with pytest.raises(ValueError, match=r"^fruit must be one of ; got 'kiwi'$"):
        Registry("fruit").get("kiwi")


@pytest.mark.parametrize("bad", ["", "  ", " pear", "pear ", "a,b", 3, None, b"pear"])
def test_malformed_names_are_refused(bad):
    fruit = Registry("fruit")
    with pytest.raises(ValueError, match=r"^fruit name must be a non-empty string without surrounding spaces or "
                                         r"commas, got "):
        fruit.register(bad, 1)
    with pytest.raises(ValueError, match=r"^fruit name must be"):
        fruit.decorator(bad, lambda f: f)  # refused where the decorator is written, before it is applied
    assert len(fruit) == 0


def test_decorator_registers_the_made_entry_and_returns_the_function():
    fruit = Registry("fruit")

    @fruit.decorator("double", lambda function: ("entry", function))
    def double(x):
        return 2 * x

    assert double(3) == 6  # the function itself, not the entry
    assert fruit.get("double") == ("entry", double)
    with pytest.raises(ValueError, match="already registered"):
        fruit.decorator("double", lambda function: function)(double)


def test_unregister_returns_the_entry_and_frees_the_name():
    fruit = _fruit()
    view = fruit.as_mapping()
    assert fruit.unregister("apple") == "APPLE"
    assert fruit.names() == ["pear", "fig"] and "apple" not in fruit and "apple" not in view  # the view is live
    fruit.register("apple", "again")
    assert fruit.names() == ["pear", "fig", "apple"]
    with pytest.raises(ValueError, match=r"^fruit must be one of 'pear', 'fig', 'apple'; got 'kiwi'$"):
        fruit.unregister("kiwi")
    with pytest.raises(TypeError):
        view["kiwi"] = 1  # read-only


def test_every_wrcup_registry_is_a_registry():
    from wrcup.backbones import registry as backbones
    from wrcup.data import registry as datasets
    from wrcup.eval import extract, tasks
    from wrcup.nn import registry as operators

    assert isinstance(operators._OPERATORS, Registry) and operators._OPERATORS.sort
    assert isinstance(backbones._BACKBONES, Registry) and dict(backbones.REGISTRY) == backbones._BACKBONES.as_mapping()
    assert isinstance(tasks._TASKS, Registry) and isinstance(extract._METHODS, Registry)
    datasets.list_datasets("segmentation")  # loads the readers
    assert all(isinstance(r, Registry) for r in datasets._READERS.values()) and "segmentation" in datasets._READERS


def test_asking_about_a_kind_without_readers_does_not_create_it():
    from wrcup.data import registry as datasets

    kinds = set(datasets._READERS)
    assert datasets.list_datasets("no-such-kind") == []
    with pytest.raises(ValueError, match="no dataset readers are registered for the task kind 'no-such-kind'; "
                                         "kinds with readers: .*'segmentation'"):
        datasets.get_dataset("no-such-kind", "camvid")
    with pytest.raises(ValueError, match="no dataset readers"):
        datasets.unregister_dataset("no-such-kind", "camvid")
    assert set(datasets._READERS) == kinds
