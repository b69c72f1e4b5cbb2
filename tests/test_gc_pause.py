"""The cyclic collector paused while a model is built: what a successful read built goes to the
oldest generation unscanned, and what a failed read built stays young, so that a process
reading many bad files (a fuzz worker, a scan worker, a notebook) frees it soon."""

from __future__ import annotations

import gc
import weakref

import pytest

from weightscope.gc_pause import paused_gc


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_a_failed_read_leaves_its_garbage_to_the_young_generation() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError), paused_gc():
        node = Node()
        alive = weakref.ref(node)
        del node
        assert not gc.isenabled()
        raise ValueError("a damaged file")
    assert gc.isenabled()
    gc.collect(0)  # the youngest generation alone
    assert alive() is None


def test_what_a_read_built_is_moved_to_the_oldest_generation() -> None:
    with paused_gc():
        node = Node()
        alive = weakref.ref(node)
        del node
    assert gc.isenabled()
    gc.disable()  # no automatic collection of all generations in between
    try:
        gc.collect(0)
        assert alive() is not None  # not walked as young: 200,000 tensors took a second so
        gc.collect()
        assert alive() is None
    finally:
        gc.enable()


def test_a_pause_inside_a_pause_leaves_the_collector_off() -> None:
    with paused_gc():
        with paused_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.parametrize("framework", ["pytorch", "keras", "onnx"])
def test_a_dropped_model_leaves_no_cyclic_garbage(framework: str) -> None:
    """What a read built is freed when the model is dropped, without waiting for a collection
    of the oldest generation (where a successful read moves it): the pickle machine was a cycle
    through its dispatch table, holding everything its memo held."""
    import weightscope
    from weightscope.examples import example_path

    path = example_path(framework)
    weightscope.load(path).close()  # imports and caches: not the read's garbage
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with weightscope.load(path) as model:
            assert model.layers
        del model
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
