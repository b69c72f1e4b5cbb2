"""Files of 200,000 tiny tensors (issue 14, item 11), and the fast paths they need.

A safetensors file and a PyTorch zip state dict (one storage per tensor, as ``torch.save``
writes it; built here without torch) of 200,000 tensors of 4 x 5 floats: ``inspect``,
``inspect --no-stats`` and ``inspect --json`` must each read them correctly within 1 GiB of
address space (``RLIMIT_AS``), in a subprocess, as tests/test_hostile_hdf5.py runs hostile files.
The goal of 10 s is measured by benchmarks/bench_many_tensors.py (against ``torch.load`` and
safetensors' own reader of the same files), not here: a timed test fails on a slow or busy
machine. The timeout here only catches the old behaviour (minutes).

The JSON text ``write_json`` streams must be the text ``json.dump(model_to_dict(...),
indent=2)`` wrote: it is compared on every kind of model, names that need escaping included.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from many_tensor_files import (
    NUMEL,
    SHAPE,
    TENSORS,
    TorchPickle,
    expected_stats,
    tensor_values,
    write_safetensors,
    write_torch_zip,
)
from measured_cli import GiB, Measured, run_measured

import weightscope
from weightscope.formats.pytorch.machine import Budget, Machine
from weightscope.formats.pytorch.records import Opaque, PickleFormatError
from weightscope.formats.pytorch.unpickler import restricted_load
from weightscope.limits import DEFAULT, Limits
from weightscope.reporters.numbers import number
from weightscope.reporters.progress import compute_stats
from weightscope.reporters.summary import layer_to_dict, model_to_dict, write_json

CLI_TIMEOUT_S = 60.0
"""A hang guard, not the goal: before, these commands took 40 s to 5 minutes."""


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("many")
    return {
        "safetensors": write_safetensors(folder / "many.safetensors", TENSORS),
        "pytorch": write_torch_zip(folder / "many.pt", TENSORS),
    }


# ---------------------------------------------------------------------------------------------
# the command line on them, within 1 GiB


def inspect(path: Path, output: Path, *args: str) -> Measured:
    """``weightscope inspect PATH ARGS`` in a subprocess under 1 GiB of address space and
    ``CLI_TIMEOUT_S`` (killed then: a failure), its stdout written to ``output``."""
    with open(output, "wb") as out:
        run = run_measured(["inspect", str(path), *args], CLI_TIMEOUT_S, stdout=out)
    run.stdout = output.read_bytes()
    return run


def layer_entry(text: bytes, index: int) -> dict[str, object]:
    """The JSON entry of layer ``layers.<index>`` in the output of ``inspect --json``."""
    start = text.index(b'{\n      "name": "layers.%d",' % index)
    end = text.index(b"\n    }", start) + len(b"\n    }")
    return json.loads(text[start:end])


def check_entry(entry: dict[str, object], index: int, with_stats: bool) -> None:
    assert entry["name"] == f"layers.{index}" and entry["kind"] == "dense"
    (tensor,) = entry["tensors"]  # type: ignore[misc]
    assert tensor["name"] == f"layers.{index}.weight"
    assert tensor["native_shape"] == list(SHAPE) and tensor["size"] == NUMEL
    if not with_stats:
        assert "stats" not in tensor
        return
    stats = tensor["stats"]
    mean, std, low, high = expected_stats(index)
    assert stats["mean"] == pytest.approx(mean, rel=1e-12)
    assert stats["std"] == pytest.approx(std, rel=1e-12)
    assert (stats["min"], stats["max"], stats["nan"], stats["inf"]) == (low, high, 0, 0)
    assert stats["zeros_fraction"] == (1 / NUMEL if index == 0 else 0.0)


@pytest.mark.slow
@pytest.mark.xdist_group("many_tensors")  # one worker builds the files once
@pytest.mark.parametrize(
    ("kind", "args"),
    [  # each path once (all eight are timed by benchmarks/bench_many_tensors.py)
        ("safetensors", ()),
        ("safetensors", ("--json", "--no-stats")),
        ("pytorch", ("--no-stats",)),
        ("pytorch", ("--json",)),
    ],
)
def test_200000_tiny_tensors_are_read_within_1_gib(
    many_files: dict[str, Path], kind: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    path = many_files[kind]
    run = inspect(path, tmp_path / "out", *args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr == b""
    assert run.peak_rss < GiB
    total = TENSORS * NUMEL
    if "--json" not in args:
        text = run.stdout.decode()
        assert f"Total params: {total:,}" in text
        assert f"... and {TENSORS - 1000:,} more layers" in text
        assert "layers.999 " in text and "layers.1000 " not in text
        if "--no-stats" not in args:  # layers.0's mean and max, as the table writes numbers
            assert f"{number(expected_stats(0)[0])} " in text
            assert f"{number(expected_stats(0)[3])}\n" in text
        return
    with_stats = "--no-stats" not in args
    text = run.stdout
    assert text.count(b'"native_shape": [') == TENSORS
    assert text.count(b'"stats": {') == (TENSORS if with_stats else 0)
    assert text.endswith(
        b'"params": {\n    "total": %d,\n    "trainable": 0,\n    "non_trainable": 0,\n'
        b'    "trainable_unknown": %d\n  }\n}\n' % (total, total)
    )
    for index in (0, 1, 12_345, TENSORS - 1):
        check_entry(layer_entry(text, index), index, with_stats)


@pytest.mark.frameworks
def test_the_torch_zip_without_torch_is_what_torch_writes(tmp_path: Path) -> None:
    """The builder above, on a few tensors: torch (when installed) reads it as weightscope
    does."""
    path = write_torch_zip(tmp_path / "few.pt", 300)
    with weightscope.load(path) as model:
        assert [layer.name for layer in model.layers][:3] == ["layers.0", "layers.1", "layers.2"]
        np.testing.assert_array_equal(model.layer("layers.299").tensor("kernel").numpy(),
                                      tensor_values(300)[299].reshape(SHAPE))  # fmt: skip
    torch = pytest.importorskip("torch")
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == [f"layers.{i}.weight" for i in range(300)]
    np.testing.assert_array_equal(
        loaded["layers.7.weight"].numpy(), tensor_values(8)[7].reshape(SHAPE)
    )


# ---------------------------------------------------------------------------------------------
# write_json: the text json.dump wrote


def reference_text(model: weightscope.Model, with_stats: bool, layer=None, extras=None) -> str:
    data = model_to_dict(model, with_stats)
    if layer is not None:
        data = {**data, "layers": [layer_to_dict(layer, with_stats)]}
    for entry, extra in zip(data["layers"], extras or [], strict=False):
        entry.update(extra)
    return json.dumps(data, indent=2) + "\n"


def streamed_text(model: weightscope.Model, with_stats: bool, layer=None, extras=None) -> str:
    out = io.StringIO()
    write_json(out, model, with_stats, None if layer is None else [layer], extras)
    return out.getvalue()


def tricky_safetensors(path: Path) -> Path:
    """Names that need escaping, tensors without finite values, empty ones, and every type."""
    arrays = {
        'quote".and\\backslash.weight': np.arange(6, dtype="<f4").reshape(2, 3),
        "é.ü.€.😀.weight": np.ones((3, 1, 2, 2), "<f4"),
        "ctrl\x1b[31m.\u2028.weight": np.array([np.nan, np.inf], "<f4"),
        "nan.weight": np.full(4, np.nan, "<f4"),
        "empty.weight": np.zeros((0, 3), "<f4"),
        "bias_only.bias": np.array([1e-45, -3e38], "<f4"),
        "int.weight": np.arange(-3, 3, dtype="<i8"),
        "flag.weight": np.array([True, False]),
        "half.weight": np.array([0.5, -2], "<f2"),
        "bn.running_mean": np.zeros(3, "<f4"),
        "bn.running_var": np.ones(3, "<f4"),
        "bn.weight": np.ones(3, "<f4"),
        "bn.num_batches_tracked": np.array(7, "<i8"),
    }
    codes = {"float32": "F32", "int64": "I64", "bool": "BOOL", "float16": "F16"}
    header: dict[str, object] = {"__metadata__": {"format": "pt", "note": 'a "quoted" é'}}
    data = b""
    for name, array in arrays.items():
        raw = array.tobytes()
        header[name] = {
            "dtype": codes[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.fixture
def models(tmp_path: Path) -> list[Path]:
    examples = [weightscope.example_path(f) for f in ("keras", "pytorch", "onnx")]
    built = [tricky_safetensors(tmp_path / "tricky.safetensors")]
    built.append(write_safetensors(tmp_path / "few.safetensors", 50))
    built.append(write_torch_zip(tmp_path / "few.pt", 50))
    return examples + built


def test_write_json_writes_what_json_dump_wrote(models: list[Path]) -> None:
    for path in models:
        with weightscope.load(path) as model:
            compute_stats([t for _, t in model.tensors()], quiet=True)
            for with_stats in (True, False):
                assert streamed_text(model, with_stats) == reference_text(model, with_stats), path
            layer = model.layers[-1]
            extras = [
                {"health": {"flags": ["nan_inf"], "norm": 1.5, "note": None, "ratio": math.inf}}
            ]
            assert streamed_text(model, True, layer, extras) == reference_text(
                model, True, layer, extras
            ), path


def test_write_json_of_names_that_need_escaping(tmp_path: Path) -> None:
    with weightscope.load(tricky_safetensors(tmp_path / "t.safetensors")) as model:
        compute_stats([t for _, t in model.tensors()], quiet=True)
        text = streamed_text(model, True)
        assert text.isascii()
        data = json.loads(text)
    names = [t["name"] for layer in data["layers"] for t in layer["tensors"]]
    assert 'quote".and\\backslash.weight' in names and "é.ü.€.😀.weight" in names
    stats = {t["name"]: t["stats"] for layer in data["layers"] for t in layer["tensors"]}
    assert stats["nan.weight"]["mean"] is None and stats["nan.weight"]["nan"] == 4
    assert stats["empty.weight"] == {
        "mean": None, "std": None, "min": None, "max": None, "zeros_fraction": 0.0, "nan": 0,
        "inf": 0,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the pickle machine's tensor records: the same as the opcodes one by one


def canonical(value: object, seen: dict[int, int] | None = None, depth: int = 0) -> object:
    """What unpickling built, as plain data: shared and cyclic parts by reference."""
    seen = {} if seen is None else seen
    if depth > 40:
        return "<deep>"
    if isinstance(value, (list, dict, set, frozenset, tuple, Opaque)):
        if id(value) in seen:
            return f"<ref {seen[id(value)]}>"
        seen[id(value)] = len(seen)
    kind = type(value).__name__
    if isinstance(value, (list, tuple)):
        return [kind, [canonical(v, seen, depth + 1) for v in value]]
    if isinstance(value, dict):
        items = [
            [canonical(k, seen, depth + 1), canonical(v, seen, depth + 1)] for k, v in value.items()
        ]
        return [kind, items]
    if isinstance(value, (set, frozenset)):
        return [kind, sorted(repr(canonical(v, seen, depth + 1)) for v in value)]
    if isinstance(value, Opaque):
        parts = (value.args, value.kwargs, value.state, value.items, value.entries)
        return ["opaque", value.qualname, [canonical(p, seen, depth + 1) for p in parts]]
    return repr(value)


def unpickled(data: bytes, limits: Limits, records: bool) -> object:
    """Everything observable of unpickling ``data``: the result (or the error), the budget
    spent, and the machine's memo, sizes and kept objects."""
    machines: list[Machine] = []
    run = Machine.run

    def keep_machine(self: Machine) -> object:
        machines.append(self)
        return run(self)

    budget = Budget(limits)
    storages: dict[str, object] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Machine, "run", keep_machine)
        if not records:
            patch.setattr(Machine, "_tensor_record", lambda self, start: False)
        try:
            outcome = canonical([restricted_load(data, storages, limits, budget), storages])
        except Exception as exc:  # the error is the outcome
            outcome = [type(exc).__name__, str(exc)]
    (machine,) = machines
    entries = {**dict(enumerate(machine.memo)), **machine.sparse_memo}
    memo = sorted((k, canonical(v)) for k, v in entries.items())
    return [outcome, budget.spent, sorted(machine.sizes.values()), len(machine.keep), memo]


def record_pickle(count: int = 60) -> bytes:
    """A state dict of tensors of every rank (0-d to 5-d, long dims), sizes of every integer
    width, storages named twice and names past the memo's one-byte indices."""
    pickle = TorchPickle()
    pickle.parts.append(b"}")
    pickle.put()
    shapes = [(4, 5), (3,), (2, 3, 4), (1, 2, 3, 4, 5), (300, 2), (70000,), (), (2, 2)]
    pickle.parts.append(b"(")
    for i in range(count):
        shape = shapes[i % len(shapes)]
        pickle.text(f"block.{i}.weight")
        pickle.put()
        pickle.tensor(str(i % 50), math.prod(shape), shape)
    pickle.parts.append(b"u.")
    return b"".join(pickle.parts)


RECORD_BYTES = b"qrhjKMJt()RQX\x85\x86\x87\x88\x89\x00\x01\xff"


@pytest.mark.parametrize("seed", range(4))
def test_tensor_records_unpickle_as_their_opcodes_do(seed: int) -> None:
    """Random changes to a torch pickle (a byte replaced, dropped or repeated, often by an
    opcode): the machine with its tensor-record fast path builds, spends, memoizes and refuses
    exactly as with the opcodes run one by one; under tight limits too."""
    rng = np.random.default_rng(seed)
    original = record_pickle()
    limits = [DEFAULT, Limits(max_pickle_expansion=2), Limits(max_pickle_depth=1),
              Limits(max_pickle_tree=9)]  # fmt: skip
    assert unpickled(original, DEFAULT, True) == unpickled(original, DEFAULT, False)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.integers(1, 4)):
            at = int(rng.integers(40, len(data) - 2))
            byte = (
                int(rng.choice(list(RECORD_BYTES)))
                if rng.random() < 0.7
                else int(rng.integers(256))
            )
            change = rng.integers(3)
            if change == 0:
                data[at] = byte
            elif change == 1:
                del data[at]
            else:
                data.insert(at, byte)
        chosen = limits[int(rng.integers(len(limits)))]
        fast, slow = unpickled(bytes(data), chosen, True), unpickled(bytes(data), chosen, False)
        assert fast == slow, bytes(data)


def test_tensor_records_reach_the_budget_where_their_opcodes_do() -> None:
    """Past 1 MiB of objects (max_pickle_expansion=0): refused at the same opcode, with the same
    line, whether records run at once or opcode by opcode."""
    data = record_pickle(1500)
    limits = Limits(max_pickle_expansion=0)
    fast = unpickled(data, limits, True)
    assert fast[0][0] == "LimitExceeded" and "max_pickle_expansion" not in fast[0][1]
    assert fast == unpickled(data, limits, False)
    assert unpickled(data, DEFAULT, True) == unpickled(data, DEFAULT, False)


@pytest.mark.parametrize(
    "body",
    [
        b"K\x01q\x05K\x02q\x00K\x03q\x01K\x04q\x02h\x05h\x00h\x01h\x02\x94K\x05q\x06h\x06",
        b"K\x01q\x02K\x02q\x00K\x03q\x01K\x04q\x02K\x05q\x03h\x02h\x03h\x00",  # 2 superseded
        b"K\x01\x94K\x02r\x00\x00\x01\x00K\x03\x94h\x00h\x02j\x00\x00\x01\x00",
        b"I7\np3\nI8\np0\nI9\np1\nI10\np2\ng3\ng2\ng0\n",  # protocol 0
    ],
)
def test_memo_indices_in_any_order_read_as_pickle_reads_them(body: bytes) -> None:
    """The memo is a list while indices come in order, a dict for the others: whatever the
    order, what is read back is what CPython's unpickler reads."""
    data = b"\x80\x04(" + body + b"t."
    expected = pickle.loads(data)
    assert restricted_load(data) == expected


@pytest.mark.parametrize("body", [b"K\x01q\x00h\x01", b"I1\np0\ng-1\n", b"K\x01q\x02h\x01"])
def test_memo_indices_never_stored_are_refused(body: bytes) -> None:
    data = b"\x80\x02(" + body + b"t."
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)
    with pytest.raises(PickleFormatError, match="never stored"):
        restricted_load(data)
