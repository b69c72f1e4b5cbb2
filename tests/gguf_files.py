"""Writing GGUF test files with the gguf package's writer, for the GGUF tests."""

from __future__ import annotations

import gguf
import numpy as np


def finish_gguf(writer: gguf.GGUFWriter, tensors: list[tuple[str, np.ndarray, object]]) -> None:
    """Add ``tensors`` (as :func:`write_gguf` takes them) to ``writer`` and write the file."""
    for name, array, qtype in tensors:
        if qtype is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
