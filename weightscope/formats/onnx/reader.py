"""ONNX models (``.onnx``, with or without external data) and live ``onnx.ModelProto`` objects.

The file is mapped read-only and its protobuf decoded by weightscope's own wire reader (see
``wire``): tensor data stays in the file and is read by offset, so a 500 MB model is never held in
memory. Neither onnx, protobuf, onnxruntime nor any framework is imported; a live ``ModelProto``
is serialised with its own ``SerializeToString`` and read the same way.
"""

from __future__ import annotations

import mmap
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from weightscope.errors import (
    CorruptFileError,
    UnsupportedFormatError,
    WeightscopeError,
    file_error,
)
from weightscope.formats.protocol import Match, Probe
from weightscope.limits import DEFAULT, LimitExceeded, Limits, limit_error
from weightscope.model import Model

FRAMEWORK = "onnx"
EXTENSIONS = (".onnx",)
ONNX_MODEL = "ONNX model"
LIVE = "<ModelProto>"


def match(probe: Probe) -> Match | None:
    """Files named ``.onnx``, and files whose first bytes read as a ModelProto."""
    from weightscope.formats.onnx.wire import looks_like_model

    if probe.path.suffix.lower() in EXTENSIONS or looks_like_model(probe.head):
        return Match(ONNX_MODEL, "onnx", probe)
    return None


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    from weightscope.formats._common.file_region import OpenFile, RegionFile

    remote = match.probe.file  # a URL: the protobuf fetched whole, tensors read by ranges
    resources = ExitStack()
    if remote is not None:
        resources.callback(remote.close)
    try:
        if remote is not None:
            proto = _decode(memoryview(remote.read_whole()), path, limits, cut_bulk=True)
        else:
            with (
                open(path, "rb") as handle,
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf,
            ):
                proto = _decode(buf, path, limits, cut_bulk=True)
        if proto.graph is None:
            raise file_error(UnsupportedFormatError, path, "not an ONNX model: it has no graph")
        files: dict[Path, RegionFile] = {}

        def open_file(target: Path) -> RegionFile:
            if target not in files:
                looked_like = ONNX_MODEL if target == path else "ONNX external data file"
                if remote is None:
                    files[target] = OpenFile(target, looked_like)
                elif target == path:
                    files[target] = remote
                else:
                    files[target] = remote.sibling(str(target), looked_like)
                resources.callback(files[target].close)
            return files[target]

        model = _build(proto, path, open_file, limits)
        folder = str(path).rsplit("/", 1)[0] if remote else path.absolute().parent.resolve()
        external = sorted(_relative(p, folder) for p in files if p != path)
        if external:
            model.notes.append(f"external data read from: {', '.join(external)}")
        model.inputs.extend(p for p in files if p != path)
        model._resources = resources
        return model
    except BaseException:
        resources.close()
        raise


def _relative(file: Path, folder: Path | str) -> str:
    if isinstance(folder, str):  # a URL's folder
        return str(file)[len(folder) + 1 :]
    return str(file.relative_to(folder))


def _decode(buf: Any, label: Path | str, limits: Limits, *, cut_bulk: bool) -> Any:
    """The ModelProto in ``buf``, decoded by weightscope's wire reader."""
    from weightscope.formats.onnx.wire import Decoder, WireError

    decoder = Decoder(buf, cut_bulk=cut_bulk, max_graph_depth=limits.max_graph_depth)
    try:
        return decoder.model()
    except WireError as exc:
        raise file_error(CorruptFileError, label, str(exc), ONNX_MODEL) from None
    except RecursionError:
        problem = "graph nested too deep to walk"
        raise file_error(CorruptFileError, label, problem, ONNX_MODEL) from None


def match_object(obj: Any) -> bool:
    """Whether ``obj`` is an ``onnx.ModelProto`` (checked without importing onnx)."""
    cls = type(obj)
    return cls.__name__ == "ModelProto" and cls.__module__.split(".")[0] == "onnx"


def load_object(proto: Any, limits: Limits = DEFAULT) -> Model:
    """A live ``onnx.ModelProto``: serialised (with its own ``SerializeToString`` where protobuf
    allows) and decoded as a file is (tensor data read from the serialised bytes, not copied
    again)."""
    from weightscope.formats.onnx.wire import serialise

    if not proto.HasField("graph"):
        raise WeightscopeError(f"{LIVE}: not an ONNX model: it has no graph")
    try:
        data = serialise(proto)
    except Exception as exc:  # whatever protobuf raises, said in one line
        raise WeightscopeError(f"{LIVE}: cannot be serialised to be read: {exc}") from None
    try:
        decoded = _decode(memoryview(data), LIVE, limits, cut_bulk=False)
        return _build(decoded, None, None, limits)
    except LimitExceeded as exc:
        raise limit_error(LIVE, exc) from None


def _build(proto: Any, path: Path | None, open_file: Any, limits: Limits) -> Model:
    from weightscope.formats.onnx.graph import Scope
    from weightscope.formats.onnx.handlers import handler_of
    from weightscope.formats.onnx.names import name_modules
    from weightscope.formats.onnx.ops import GraphReader
    from weightscope.formats.onnx.tensors import TensorContext

    ctx = TensorContext(path, open_file, limits)
    reader = GraphReader(handler_of)
    try:
        reader.read(Scope(proto.graph, ctx))
    except RecursionError:
        raise file_error(
            CorruptFileError, path or LIVE, "graph nested too deep to walk", ONNX_MODEL
        ) from None
    reader.unused_constants()
    opset = {(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import}
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or None
    name_modules(reader.layers, producer)
    version = f"opset {opset['ai.onnx']}" if "ai.onnx" in opset else None
    notes = [f"ONNX IR version {proto.ir_version}"] if proto.ir_version else []
    notes.extend(ctx.notes)
    return Model(
        source=path,
        format="onnx" if path is not None else "live",
        framework=FRAMEWORK,
        framework_version=version,
        layers=reader.layers,
        weightless_layers=reader.weightless,
        notes=notes,
        producer=producer,
        opset=opset or None,
    )
