"""Files of many tiny tensors, built without torch: a safetensors file and a PyTorch zip state
dict written as ``torch.save`` writes one (tests/test_many_tensors.py checks it against torch).
Used by that test and by benchmarks/bench_many_tensors.py."""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np

TENSORS = 200_000
SHAPE = (4, 5)
NUMEL = math.prod(SHAPE)


def tensor_values(count: int) -> np.ndarray:
    """Tensor ``i`` holds ``i / 8 + k / 64`` for k in 0..19 (exact in float32): its mean is
    ``i / 8 + 19 / 128`` and its std that of ``0..19``, over 64."""
    base = np.arange(count, dtype=np.float32)[:, None] / 8
    return (base + np.arange(NUMEL, dtype=np.float32) / 64).astype("<f4")


def expected_stats(index: int) -> tuple[float, float, float, float]:
    steps = np.arange(NUMEL) / 64
    return index / 8 + steps.mean(), steps.std(), index / 8, index / 8 + steps[-1]


def write_safetensors(path: Path, count: int) -> Path:
    values = tensor_values(count)
    width = NUMEL * 4
    header = {
        f"layers.{i}.weight": {
            "dtype": "F32",
            "shape": list(SHAPE),
            "data_offsets": [i * width, (i + 1) * width],
        }
        for i in range(count)
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + values.tobytes())
    return path


class TorchPickle:
    """A protocol 2 pickle written as ``torch.save`` writes a state dict: every object put in
    the memo, globals and repeated strings read back from it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = [b"\x80\x02"]
        self.memo = 0
        self.slots: dict[str, int] = {}

    def put(self) -> None:
        index, self.memo = self.memo, self.memo + 1
        self.parts.append(b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index))

    def get(self, index: int) -> None:
        self.parts.append(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))

    def once(self, key: str, first: bytes) -> None:
        """``first`` and a PUT the first time, a GET of it afterwards."""
        if key in self.slots:
            self.get(self.slots[key])
        else:
            self.parts.append(first)
            self.slots[key] = self.memo
            self.put()

    def text(self, value: str) -> None:
        raw = value.encode()
        self.parts.append(b"X" + struct.pack("<I", len(raw)) + raw)

    def integer(self, value: int) -> None:
        if value < 256:
            self.parts.append(b"K" + bytes([value]))
        elif value < 65536:
            self.parts.append(b"M" + struct.pack("<H", value))
        else:
            self.parts.append(b"J" + struct.pack("<i", value))

    def ints(self, values: tuple[int, ...]) -> None:
        self.parts.append(b"(")
        for value in values:
            self.integer(value)
        self.parts.append(b"t")
        self.put()

    def tensor(self, key: str, numel: int, shape: tuple[int, ...]) -> None:
        strides = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        self.once("rebuild", b"ctorch._utils\n_rebuild_tensor_v2\n")
        self.parts.append(b"((")
        self.once("storage", b"X\x07\x00\x00\x00storage")
        self.once("FloatStorage", b"ctorch\nFloatStorage\n")
        self.text(key)
        self.put()
        self.once("cpu", b"X\x03\x00\x00\x00cpu")
        self.integer(numel)
        self.parts.append(b"t")
        self.put()
        self.parts.append(b"QK\x00")  # BINPERSID, storage offset 0
        self.ints(shape)
        self.ints(strides)
        self.parts.append(b"\x89")  # requires_grad False
        self.once("OrderedDict", b"ccollections\nOrderedDict\n")
        self.parts.append(b")R")
        self.put()
        self.parts.append(b"t")
        self.put()
        self.parts.append(b"R")
        self.put()


def write_torch_zip(path: Path, count: int) -> Path:
    """A zip state dict as ``torch.save`` writes it (protocol 2, one storage member per tensor,
    items set 1,000 at a time), without torch."""
    pickle = TorchPickle()
    pickle.parts.append(b"}")
    pickle.put()
    for start in range(0, count, 1000):
        pickle.parts.append(b"(")
        for i in range(start, min(start + 1000, count)):
            pickle.text(f"layers.{i}.weight")
            pickle.put()
            pickle.tensor(str(i), NUMEL, SHAPE)
        pickle.parts.append(b"u")
    pickle.parts.append(b".")
    values = tensor_values(count)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"".join(pickle.parts))
        archive.writestr("archive/byteorder", "little")
        for i in range(count):
            archive.writestr(f"archive/data/{i}", values[i].tobytes())
        archive.writestr("archive/version", "3\n")
    return path
