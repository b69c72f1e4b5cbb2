"""The cyclic collector paused while a model is built: what a large successful read built goes
to the oldest generation unscanned; what a small or failed read built stays young, so that a
process reading many files (a fuzz worker, a scan worker, a notebook) frees its garbage soon."""

from __future__ import annotations

import gc
import weakref

import pytest

from weightscope import gc_pause
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


@pytest.mark.parametrize("large", [False, True])
def test_what_a_large_read_built_is_moved_to_the_oldest_generation(
    large: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over ``MOVE_ABOVE`` objects built, they are moved to the oldest generation unscanned
    (walking 200,000 tensors' objects as young took a second); fewer stay young, so that any
    cyclic garbage among them is freed by the next young collections."""
    monkeypatch.setattr(gc_pause, "MOVE_ABOVE", 1000 if large else 10**9)
    with paused_gc():
        node = Node()
        alive = weakref.ref(node)
        del node
        built = [[] for _ in range(2000)]
    del built
    assert gc.isenabled()
    gc.disable()  # no automatic collection of all generations in between
    try:
        gc.collect(0)
        assert (alive() is not None) is large
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
