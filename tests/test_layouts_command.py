"""``weightscope layouts`` and the layout table it is generated from: the table lists exactly
the (framework, class or operator, tensor) -> layout entries the readers produce, checked both
against the adapters' own catalogs and end to end, on real Keras, PyTorch and ONNX layers of
every class the table names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_builders as ob
import pytest
from cli_runner import run_cli
from onnx import TensorProto, helper

import weightscope
from weightscope import layouts
from weightscope.formats.keras import catalog as _keras_catalog
from weightscope.formats.onnx import handlers as _onnx_handlers
from weightscope.formats.pytorch import layers as _torch_layers
from weightscope.formats.tflite import reader as _tflite_reader
from weightscope.kinds import LAYER_KINDS
from weightscope.reporters.layouts import layouts_to_dict

FLOAT = TensorProto.FLOAT

Entry = tuple[str, str, str, str, str, str]
"""(framework, class or operator, role, kind, native layout, condition)."""


def _table(framework: str) -> set[Entry]:
    return {
        (u.framework, u.owner, u.role, u.kind, u.layout, u.when) for u in layouts.uses(framework)
    }


def _produced(
    framework: str, model: weightscope.Model, when: dict[tuple[str, str], str] | None = None
) -> set[Entry]:
    """What the reader reported for every tensor with a native layout; ``when``: the condition
    each (layer, role) of the test model was built to meet."""
    when = when or {}
    return {
        (
            framework,
            str(layer.class_name),
            tensor.role,
            layer.kind,
            tensor.native_layout,
            when.get((layer.name, tensor.role), ""),
        )
        for layer in model.layers
        for tensor in layer.tensors
        if tensor.native_layout is not None
    }


# ---------------------------------------------------------------------------------------------
# the command line


def _line(output: str, *words: str) -> str:
    lines = [line for line in output.splitlines() if all(w in line for w in words)]
    assert lines, f"no line with {words} in:\n{output}"
    return lines[0]


def test_table_lists_native_next_to_canonical() -> None:
    result = run_cli("layouts")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    line = _line(out, "Conv2D ", "kernel")
    assert "HWIO (kh, kw, in/groups, out)" in line and line.rstrip().endswith("OIHW")
    assert "IOHW (in, out/groups, kh, kw)" in _line(out, "ConvTranspose2d ", "weight (kernel)")
    assert _line(out, "Gemm [transB=0]", "B (kernel)").split()[-1] == "OI"
    assert "IO (in, out)" in _line(out, "Gemm [transB=0]")
    assert "OI (out, in)" in _line(out, "Gemm [transB=1]")
    assert "HWIM (kh, kw, in, multiplier)" in _line(out, "DepthwiseConv2D", "kernel")
    assert "DHWOI (kd, kh, kw, out, in)" in _line(out, "Conv3DTranspose", "kernel")
    assert "running_var (moving_variance)" in out
    # grouped by kind, in the order of weightscope's kinds, each named once
    kinds = [line.split()[0] for line in out.splitlines() if line.split() and
             line.split()[0] in LAYER_KINDS]  # fmt: skip
    assert kinds == [k for k in LAYER_KINDS if k != "unknown"]
    assert "Letters: O output channels" in out


def test_framework_filter() -> None:
    result = run_cli("layouts", "--framework", "keras")
    assert result.returncode == 0, result.stderr
    assert "Keras" in result.stdout
    assert "PyTorch" not in result.stdout and "ONNX" not in result.stdout
    assert "Conv2d" not in result.stdout and "Gemm" not in result.stdout
    bad = run_cli("layouts", "--framework", "tensorflow")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_json_structure() -> None:
    result = run_cli("layouts", "--json", "--framework", "onnx")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == layouts_to_dict("onnx")
    assert data["framework"] == "onnx" and data["schema_version"] == 1
    assert set(data["letters"]) == set("OIMDHWCNVEGU")
    entries = data["entries"]
    assert len(entries) == len(layouts.uses("onnx"))
    assert {e["framework"] for e in entries} == {"onnx"}
    for entry in entries:
        assert set(entry) == {
            "kind", "framework", "class", "tensor", "role", "when", "native_layout",
            "native_axes", "canonical_layout", "canonical_axes", "grouped_axis",
        }  # fmt: skip
        assert len(entry["native_axes"]) == layouts.rank(entry["native_layout"])
        assert len(entry["canonical_axes"]) == layouts.rank(entry["canonical_layout"])
        assert entry["canonical_layout"] == layouts.canonical_layout(entry["native_layout"])
    gemm = {e["when"]: e for e in entries if e["class"] == "Gemm" and e["role"] == "kernel"}
    assert gemm["transB=0"]["native_layout"] == "IO"
    assert gemm["transB=0"]["native_axes"] == ["in", "out"]
    assert gemm["transB=1"]["native_layout"] == "OI"
    transposed = [e for e in entries if e["class"] == "ConvTranspose" and e["role"] == "kernel"]
    assert {e["native_layout"] for e in transposed} == {"IOW", "IOHW", "IODHW"}
    assert all(e["grouped_axis"] == "O" for e in transposed)

    every = json.loads(run_cli("layouts", "--json").stdout)
    assert every["framework"] is None
    assert len(every["entries"]) == len(layouts.USES)
    keras_conv = next(e for e in every["entries"] if e["class"] == "Conv2D" and
                      e["role"] == "kernel")  # fmt: skip
    assert keras_conv == {
        "kind": "conv2d", "framework": "keras", "class": "Conv2D", "tensor": "kernel",
        "role": "kernel", "when": None, "native_layout": "HWIO",
        "native_axes": ["kh", "kw", "in/groups", "out"], "canonical_layout": "OIHW",
        "canonical_axes": ["out", "in/groups", "kh", "kw"], "grouped_axis": "I",
    }  # fmt: skip
    depthwise = next(e for e in every["entries"] if e["class"] == "DepthwiseConv2D" and
                     e["role"] == "kernel")  # fmt: skip
    assert depthwise["canonical_axes"] == ["in*multiplier", "1", "kh", "kw"]
    kinds = [e["kind"] for e in every["entries"]]
    assert kinds == sorted(kinds, key=LAYER_KINDS.index)


# ---------------------------------------------------------------------------------------------
# the table itself


def test_layouts_are_the_table_grouped() -> None:
    for axes, spec in layouts.LAYOUTS.items():
        assert spec.axes == axes
        assert spec.used_by, f"{axes} is used by nothing"
        assert spec.used_by == tuple(u for u in layouts.USES if u.layout == axes)
        assert spec.used_by_text
    assert {u.layout for u in layouts.USES} <= set(layouts.LAYOUTS)
    assert "Keras Conv2D kernel" in layouts.LAYOUTS["HWIO"].used_by_text
    assert "ONNX Gemm B (kernel) [transB=0]" in layouts.LAYOUTS["IO"].used_by_text


def test_entries_are_unique_and_their_lookup_is_unambiguous() -> None:
    keys = [(u.framework, u.owner, u.role, u.kind, u.layout, u.when) for u in layouts.USES]
    assert len(keys) == len(set(keys))  # so that comparing sets of them is exact
    tensors = {(u.framework, u.owner, u.role, u.kind, u.when): u.tensor for u in layouts.USES}
    assert len(tensors) == len(set(keys))  # one tensor name per role
    for use in layouts.USES:
        assert use.framework in layouts.FRAMEWORKS
        assert use.kind in LAYER_KINDS and use.kind != "unknown"
        found = layouts.native_layout(
            use.framework,
            use.role,
            layouts.rank(use.layout),
            owner=use.owner,
            kind=use.kind,
            when=use.when,
        )
        assert found == use.layout, use


def test_lookup_refuses_an_ambiguous_question() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        layouts.native_layout("onnx", "kernel", 2, owner="Gemm")  # transB decides
    assert layouts.native_layout("onnx", "kernel", 2, owner="Gemm", when="transB=0") == "IO"
    assert layouts.native_layout("onnx", "bias", 2, owner="Gemm", kind="dense") == "NC"
    assert layouts.native_layout("onnx", "bias", 2, owner="Conv", kind="conv2d") is None
    assert layouts.native_layout("pytorch", "kernel", 4, kind="conv_transpose2d") == "IOHW"
    assert layouts.native_layout("pytorch", "kernel", 3, kind="conv_transpose2d") is None


@pytest.mark.parametrize("axes", sorted(layouts.LAYOUTS))
def test_axis_words_name_each_letter(axes: str) -> None:
    meaning = {
        "O": ("out", "out/groups"), "I": ("in", "in/groups"), "M": ("multiplier",),
        "D": ("kd",), "H": ("kh",), "W": ("kw",), "C": ("channels",), "N": ("1",),
        "V": ("vocabulary",), "E": ("width",),
    }  # fmt: skip
    words = layouts.axis_words(axes)
    assert len(words) == layouts.rank(axes)
    for letter, word in zip(layouts.axes_of(axes), words, strict=True):
        if letter.startswith("{"):  # a recurrent layer's gates: "4*units (i,f,c,o)"
            gates = letter[1:-1]
            expected = "units" if len(gates) == 1 else f"{len(gates)}*units ({','.join(gates)})"
            if axes.endswith(layouts.CUDNN_PACKED):
                expected += " cuDNN-packed"
            assert word == expected
        else:
            assert word in meaning[letter], (axes, letter, word)
    canonical = layouts.canonical_words(axes)
    assert len(canonical) == len(layouts.canonical_layout(axes))
    # per group: the axis to_canonical regroups (transposed, input-first) or none
    spec = layouts.LAYOUTS[axes]
    assert ("out/groups" in words) == (spec.grouped_axis == "O")


def test_axis_words_examples() -> None:
    assert layouts.axis_words("HWIO") == ("kh", "kw", "in/groups", "out")
    assert layouts.axis_words("HWOI") == ("kh", "kw", "out", "in")  # Keras: no groups
    assert layouts.axis_words("IODHW") == ("in", "out/groups", "kd", "kh", "kw")
    assert layouts.axis_words("IO") == ("in", "out")
    assert layouts.canonical_words("HWIM") == ("in*multiplier", "1", "kh", "kw")
    assert layouts.canonical_words("NC") == ("channels",)


# ---------------------------------------------------------------------------------------------
# the table against the adapters' catalogs


def test_keras_catalog_is_the_table() -> None:
    owners = {u.owner for u in layouts.uses("keras")}
    assert owners == set(_keras_catalog.KERAS_LAYER_TYPES)
    for name, layer_type in _keras_catalog.KERAS_LAYER_TYPES.items():
        table = {u.role: u.layout for u in layouts.uses("keras", owner=name)}
        assert dict(layer_type.layouts) == table
        assert {u.kind for u in layouts.uses("keras", owner=name)} == {layer_type.kind}
    assert set(_keras_catalog.CLASS_ALIASES.values()) <= owners


def test_torch_catalog_is_the_table() -> None:
    owners = {u.owner for u in layouts.uses("pytorch")}
    assert owners == set(_torch_layers.CLASS_KINDS)
    for name, kind in _torch_layers.CLASS_KINDS.items():
        kinds = {u.kind for u in layouts.uses("pytorch", owner=name)}
        # a Conv2d with one input channel per group is read as a depthwise conv
        conv2d = name in ("Conv2d", "quantized.Conv2d")
        assert kinds == ({kind, "depthwise_conv2d"} if conv2d else {kind})
        for use in layouts.uses("pytorch", owner=name):
            assert _torch_layers.ROLES[use.kind][use.tensor] == use.role
    # every kind a state dict can be inferred as has its layouts in the table
    inferred = {"batch_norm", "dense", *(f"conv{d}d" for d in (1, 2, 3)),
                *(f"conv_transpose{d}d" for d in (1, 2, 3)),
                "lstm", "gru", "simple_rnn"}  # fmt: skip
    assert inferred <= {u.kind for u in layouts.uses("pytorch")}


def test_onnx_handlers_are_the_table() -> None:
    owners = {u.owner for u in layouts.uses("onnx")}
    assert owners == set(_onnx_handlers.HANDLERS)


def test_tflite_operators_are_the_table() -> None:
    owners = {u.owner for u in layouts.uses("tflite")}
    assert owners == {owner for _, owner, _, _ in _tflite_reader.LAYER_OPS.values()}
    for kind, owner, _, _ in _tflite_reader.LAYER_OPS.values():
        assert {u.kind for u in layouts.uses("tflite", owner=owner)} == {kind}


# ---------------------------------------------------------------------------------------------
# end to end: real layers of every class in the table, read back


def test_keras_reader_produces_exactly_the_table(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    layers = keras.layers
    seq, img = keras.Input((8, 4)), keras.Input((6, 6, 4))
    vol, ids = keras.Input((4, 4, 4, 2)), keras.Input((5,), dtype="int32")
    outputs = [
        layers.Conv1D(6, 3)(seq),
        layers.Conv1DTranspose(6, 3)(seq),
        layers.DepthwiseConv1D(3, depth_multiplier=2)(seq),
        layers.SeparableConv1D(6, 3, depth_multiplier=2)(seq),
        layers.Conv2D(6, 3, groups=2)(img),
        layers.Conv2DTranspose(6, 3)(img),
        layers.DepthwiseConv2D(3, depth_multiplier=2)(img),
        layers.SeparableConv2D(6, 3)(img),
        layers.BatchNormalization()(img),
        layers.LayerNormalization()(img),
        layers.Dense(3)(img),
        layers.Conv3D(3, 2)(vol),
        layers.Conv3DTranspose(3, 2)(vol),
        layers.Embedding(10, 3)(ids),
        layers.LSTM(3, name="lstm")(seq),
        layers.GRU(3, reset_after=True, name="gru_after")(seq),
        layers.GRU(3, reset_after=False, name="gru_before")(seq),
        layers.SimpleRNN(3, name="simple_rnn")(seq),
    ]
    when = {
        ("gru_after", "bias"): layouts.RESET_AFTER,
        ("gru_after", "recurrent_bias"): layouts.RESET_AFTER,
        ("gru_before", "bias"): layouts.RESET_BEFORE,
    }
    path = tmp_path / "every_class.keras"
    keras.Model([seq, img, vol, ids], outputs).save(path)
    # Keras 3 has no CuDNN layers: tests/test_keras_recurrent.py reads their entries from
    # tf-keras files (test_cudnn_layers_reproduce_the_lstm_and_gru_tf_keras_converts_them_to)
    cudnn = {entry for entry in _table("keras") if entry[1] in ("CuDNNLSTM", "CuDNNGRU")}
    assert cudnn
    with weightscope.load(path) as model:
        assert _produced("keras", model, when) == _table("keras") - cudnn


def test_torch_reader_produces_exactly_the_table(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class LazyLinear(torch.nn.Linear):
        """Stands in for ``nn.LazyLinear`` with its weights made: the real one turns into a
        ``Linear`` then, so no file holds a LazyLinear with weights; the reader goes by name."""

    net = nn.Module()
    modules = {
        "c1": nn.Conv1d(4, 6, 3), "c2": nn.Conv2d(4, 6, 3), "c3": nn.Conv3d(4, 6, 3),
        "dw": nn.Conv2d(4, 8, 3, groups=4), "t1": nn.ConvTranspose1d(4, 6, 3, groups=2),
        "t2": nn.ConvTranspose2d(4, 6, 3), "t3": nn.ConvTranspose3d(4, 6, 3),
        "fc": nn.Linear(4, 3), "lazy": LazyLinear(4, 3),
        "ndq": nn.modules.linear.NonDynamicallyQuantizableLinear(4, 3),
        "b1": nn.BatchNorm1d(4), "b2": nn.BatchNorm2d(4), "b3": nn.BatchNorm3d(4),
        "sync": nn.SyncBatchNorm(4), "ln": nn.LayerNorm(4), "emb": nn.Embedding(10, 3),
        "lstm": nn.LSTM(4, 3, proj_size=2), "gru": nn.GRU(4, 3), "rnn": nn.RNN(4, 3),
    }  # fmt: skip
    for name, module in modules.items():
        net.add_module(name, module)
    with weightscope.load(net) as model:
        when = {("dw", "kernel"): "groups = in_channels", ("dw", "bias"): "groups = in_channels"}
        for layer in model.layers:
            for tensor in layer.tensors if layer.kind.is_recurrent else ():
                projection = tensor.role == "projection"
                when[layer.name, tensor.role] = (
                    "proj_size > 0" if projection else layouts.TORCH_DIRECTIONS
                )
        produced = _produced("pytorch", model, when)
    quantized = _torch_quantized_modules(torch)
    with weightscope.load(quantized) as model:
        live = _produced("pytorch", model, _torch_quantized_when(model))
    path = tmp_path / "quantized.pt"
    torch.save(quantized, path)
    with weightscope.load(path) as model:
        assert _produced("pytorch", model, _torch_quantized_when(model)) == live
    assert produced | live == _table("pytorch")


def _torch_quantized_modules(torch: Any) -> Any:
    """A module of each quantized class in the table (their default weights)."""
    nnq = torch.ao.nn.quantized
    net = torch.nn.Module()
    modules = {
        "c1": nnq.Conv1d(4, 6, 3), "c2": nnq.Conv2d(4, 6, 3), "c3": nnq.Conv3d(4, 6, 3),
        "dw": nnq.Conv2d(4, 8, 3, groups=4), "fc": nnq.Linear(4, 3),
        "dfc": nnq.dynamic.Linear(4, 3), "lstm": nnq.dynamic.LSTM(4, 3),
        "gru": nnq.dynamic.GRU(4, 3),
    }  # fmt: skip
    for name, module in modules.items():
        net.add_module(name, module)
    return net


def _torch_quantized_when(model: weightscope.Model) -> dict[tuple[str, str], str]:
    when = {}
    for layer in model.layers:
        for tensor in layer.tensors:
            condition = layouts.TORCH_QUANTIZED
            if layer.kind.is_recurrent:
                condition = layouts.TORCH_CELLS
            elif layer.kind == "depthwise_conv2d":
                condition = f"groups = in_channels, {condition}"
            when[layer.name, tensor.role] = condition
    return when


def _onnx_every_op() -> onnx.ModelProto:
    """One node of every kind the table lists for ONNX, each on its own graph input."""
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    inputs: list[Any] = []

    def const(name: str, shape: tuple[int, ...]) -> str:
        inits.append(ob.tensor(name, rng.standard_normal(shape).astype(np.float32)))
        return name

    def scalar(name: str, value: float, dtype: str) -> str:
        inits.append(ob.tensor(name, np.array(value, dtype=dtype)))
        return name

    def node(op: str, name: str, args: list[str], elem: int = FLOAT, **attrs: Any) -> None:
        inputs.append(ob.value_info(f"x_{name}", elem, None))
        nodes.append(helper.make_node(op, [f"x_{name}", *args], [f"y_{name}"], name, **attrs))

    def contrib(op: str, name: str, args: list[str], elem: int = FLOAT, **attrs: Any) -> None:
        node(op, name, args, elem, domain="com.microsoft", **attrs)

    def _scaled(name: str, bias: tuple[int, ...]) -> None:
        """Cast, Mul by x_scale * w_scale, Add of a bias: after an integer op's output."""
        inputs.append(ob.value_info(f"xs_{name}", FLOAT, []))
        nodes.extend([
            helper.make_node("Cast", [f"y_{name}"], [f"c_{name}"], f"cast_{name}", to=FLOAT),
            helper.make_node("Mul", [f"xs_{name}", scalar(f"ws_{name}", 0.1, "float32")],
                             [f"s_{name}"], f"scales_{name}"),
            helper.make_node("Mul", [f"c_{name}", f"s_{name}"], [f"m_{name}"], f"mul_{name}"),
            helper.make_node("Add", [f"m_{name}", const(f"b_{name}", bias)], [f"z_{name}"],
                             f"add_{name}"),
        ])  # fmt: skip

    for dims in (1, 2, 3):
        k = (2,) * dims
        node("Conv", f"conv{dims}", [const(f"W{dims}", (6, 4, *k)), const(f"B{dims}", (6,))])
        node("Conv", f"dw{dims}", [const(f"Wd{dims}", (8, 1, *k)), const(f"Bd{dims}", (8,))],
             group=4)  # fmt: skip
        node("ConvTranspose", f"t{dims}",
             [const(f"Wt{dims}", (4, 3, *k)), const(f"Bt{dims}", (6,))], group=2)  # fmt: skip
        # no B: the bias is the (1, C, 1, ...) or (C, 1, ...) constant of the Add after it
        ones = (1,) * dims
        for name, op, weight, bias, group in (
            (f"ca{dims}", "Conv", (6, 4, *k), (1, 6, *ones), 1),
            (f"dwa{dims}", "Conv", (8, 1, *k), (8, *ones), 4),
            (f"ta{dims}", "ConvTranspose", (4, 3, *k), (1, 6, *ones), 2),
        ):
            node(op, name, [const(f"W_{name}", weight)], group=group)
            nodes.append(helper.make_node("Add", [f"y_{name}", const(f"b_{name}", bias)],
                                          [f"z_{name}"], f"add_{name}"))  # fmt: skip
        for name, shape, group in ((f"q{dims}", (6, 4, *k), 1), (f"qd{dims}", (8, 1, *k), 4)):
            inits.append(ob.tensor(f"w_{name}", rng.integers(-8, 8, shape).astype(np.int8)))
            inits.append(ob.tensor(f"b_{name}", rng.integers(-8, 8, shape[:1]).astype(np.int32)))
            args = [scalar(f"xs_{name}", 0.1, "float32"), scalar(f"xz_{name}", 0, "uint8"),
                    f"w_{name}", scalar(f"ws_{name}", 0.1, "float32"),
                    scalar(f"wz_{name}", 0, "int8"), scalar(f"ys_{name}", 0.1, "float32"),
                    scalar(f"yz_{name}", 0, "uint8"), f"b_{name}"]  # fmt: skip
            node("QLinearConv", name, args, TensorProto.UINT8, group=group)
        # ConvInteger: kernel and zero point inputs, the scale and bias in the Mul and Add after
        for name, shape, group in ((f"ci{dims}", (6, 4, *k), 1), (f"cid{dims}", (8, 1, *k), 4)):
            inits.append(ob.tensor(f"w_{name}", rng.integers(0, 255, shape).astype(np.uint8)))
            node("ConvInteger", name, [f"w_{name}", "", scalar(f"wz_{name}", 128, "uint8")],
                 TensorProto.UINT8, group=group)  # fmt: skip
            _scaled(name, (1, shape[0], *ones))
    node("MatMulInteger", "mmi", ["w_mmi", "", scalar("wz_mmi", 128, "uint8")], TensorProto.UINT8)
    inits.append(ob.tensor("w_mmi", rng.integers(0, 255, (4, 3)).astype(np.uint8)))
    _scaled("mmi", (3,))
    args = [scalar("xs_qmm", 0.1, "float32"), scalar("xz_qmm", 0, "int8"), "w_qmm",
            scalar("ws_qmm", 0.1, "float32"), scalar("wz_qmm", 0, "int8"),
            scalar("ys_qmm", 0.1, "float32"), scalar("yz_qmm", 0, "int8")]  # fmt: skip
    inits.append(ob.tensor("w_qmm", rng.integers(-8, 8, (4, 3)).astype(np.int8)))
    node("QLinearMatMul", "qmm", args, TensorProto.INT8)
    for name, trans_b, shape in (("qgemm_t", 1, (3, 4)), ("qgemm_n", 0, (4, 3))):
        inits.append(ob.tensor(f"w_{name}", rng.integers(-8, 8, shape).astype(np.int8)))
        inits.append(ob.tensor(f"b_{name}", rng.integers(-8, 8, (3,)).astype(np.int32)))
        args = [scalar(f"xs_{name}", 0.1, "float32"), scalar(f"xz_{name}", 0, "int8"),
                f"w_{name}", scalar(f"ws_{name}", 0.1, "float32"),
                scalar(f"wz_{name}", 0, "int8"), f"b_{name}"]  # fmt: skip
        contrib("QGemm", name, args, TensorProto.INT8, transB=trans_b)
    inits.append(ob.tensor("w_qattn", rng.integers(-8, 8, (4, 6)).astype(np.int8)))
    contrib("QAttention", "qattn",
            ["w_qattn", const("b_qattn", (6,)), scalar("xs_qattn", 0.1, "float32"),
             scalar("ws_qattn", 0.1, "float32"), "", scalar("xz_qattn", 0, "uint8"),
             scalar("wz_qattn", 0, "int8")], TensorProto.UINT8, num_heads=1)  # fmt: skip
    inits.append(ob.tensor("w_nbits", rng.integers(0, 255, (3, 2, 8)).astype(np.uint8)))
    contrib("MatMulNBits", "nbits", ["w_nbits", const("s_nbits", (6,))], K=32, N=3, bits=4,
            block_size=16)  # fmt: skip
    for op, gates in (("LSTM", 4), ("GRU", 3), ("RNN", 1)):
        name = op.lower()
        weights = [const(f"{n}_{name}", (2, gates * 2, w)) for n, w in (("W", 3), ("R", 2))]
        node(op, name, [*weights, const(f"B_{name}", (2, gates * 4))], hidden_size=2,
             direction="bidirectional")  # fmt: skip
    inits.append(ob.tensor("W_dql", rng.integers(-8, 8, (2, 3, 8)).astype(np.int8)))
    inits.append(ob.tensor("R_dql", rng.integers(-8, 8, (2, 2, 8)).astype(np.int8)))
    for n in ("W", "R"):
        inits.append(ob.tensor(f"{n}s_dql", np.full(2, 0.1, np.float32)))
        inits.append(ob.tensor(f"{n}z_dql", np.zeros(2, np.int8)))
    contrib("DynamicQuantizeLSTM", "dql",
            ["W_dql", "R_dql", const("B_dql", (2, 16)), "", "", "", "", "Ws_dql", "Wz_dql",
             "Rs_dql", "Rz_dql"], hidden_size=2, direction="bidirectional")  # fmt: skip
    node("Gemm", "gemm_t", [const("Wg", (3, 4)), const("bg", (3,))], transB=1)
    node("Gemm", "gemm_n", [const("Wn", (4, 3)), const("bn", (1, 3))], transB=0)
    for name, bias in (("mm", (3,)), ("mm_row", (1, 3))):
        node("MatMul", name, [const(f"W_{name}", (4, 3))])
        nodes.append(helper.make_node("Add", [f"y_{name}", const(f"b_{name}", bias)],
                                      [f"z_{name}"], f"add_{name}"))  # fmt: skip
    inputs.append(ob.value_info("x_left", FLOAT, None))
    nodes.append(helper.make_node("MatMul", [const("W_left", (3, 4)), "x_left"], ["y_left"],
                                  "mm_left"))  # fmt: skip
    node("BatchNormalization", "bn", [const(n, (4,)) for n in ("scale", "beta", "mean", "var")])
    node("LayerNormalization", "ln", [const("ln_s", (4,)), const("ln_b", (4,))])
    inputs.append(ob.value_info("ids", TensorProto.INT64, None))
    nodes.append(helper.make_node("Gather", [const("table", (10, 3)), "ids"], ["emb"], "emb"))
    outputs = [ob.value_info(o, TensorProto.UNDEFINED, None) for n in nodes for o in n.output
               if not any(o in m.input for m in nodes)]  # fmt: skip
    graph = helper.make_graph(nodes, "every_op", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", ob.OPSET), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_onnx_reader_produces_exactly_the_table() -> None:
    depthwise = "group = input channels"
    row = "a (1, C) row"
    when = {
        **{(f"{name}{d}", role): depthwise for name in ("dw", "qd") for d in (1, 2, 3)
           for role in ("kernel", "bias")},
        **{(f"{name}{d}", "bias"): layouts.ONNX_CONV_ADD_BIAS for name in ("ca", "ta")
           for d in (1, 2, 3)},
        **{(f"dwa{d}", "bias"): f"{depthwise}, {layouts.ONNX_CONV_ADD_BIAS}" for d in (1, 2, 3)},
        **{(f"dwa{d}", "kernel"): depthwise for d in (1, 2, 3)},
        ("gemm_t", "kernel"): layouts.GEMM_TRANS_B,
        ("gemm_n", "kernel"): layouts.GEMM_NO_TRANS_B,
        ("gemm_n", "bias"): row,
        ("mm", "kernel"): layouts.MATMUL_CONSTANT_B,
        ("mm", "bias"): "Add after x @ B",
        ("mm_row", "kernel"): layouts.MATMUL_CONSTANT_B,
        ("mm_row", "bias"): f"Add after x @ B, {row}",
        ("mm_left", "kernel"): layouts.MATMUL_CONSTANT_A,
        ("emb", "embeddings"): "constant table, axis 0",
        **{(f"cid{d}", "kernel"): depthwise for d in (1, 2, 3)},
        **{(f"ci{d}", "bias"): layouts.INTEGER_BIAS for d in (1, 2, 3)},
        **{(f"cid{d}", "bias"): f"{depthwise}, {layouts.INTEGER_BIAS}" for d in (1, 2, 3)},
        ("mmi", "kernel"): layouts.MATMUL_CONSTANT_B,
        ("mmi", "bias"): layouts.INTEGER_BIAS,
        ("qmm", "kernel"): layouts.MATMUL_CONSTANT_B,
        ("qgemm_t", "kernel"): layouts.GEMM_TRANS_B,
        ("qgemm_n", "kernel"): layouts.GEMM_NO_TRANS_B,
        ("nbits", "kernel"): layouts.NBITS,
        **{(f"{name}{suffix}", role): layouts.ONNX_DIRECTIONS
           for name in ("lstm", "gru", "rnn", "dql") for suffix in ("", "/reverse")
           for role in ("kernel", "recurrent_kernel", "bias", "recurrent_bias")},
    }  # fmt: skip
    with weightscope.load(_onnx_every_op()) as model:
        assert _produced("onnx", model, when) == _table("onnx")


def _tflite_keras_files(tmp_path: Path) -> list[Path]:
    """Keras layers of every TFLite operator in the table, converted by TensorFlow's converter
    (a Conv3D's and a Conv3DTranspose's bias becomes an ADD after it; an embedding a GATHER),
    and a CONV_3D with its bias input
    and a CONV_3D_TRANSPOSE with its bias input (neither of which the converter writes) built
    with TensorFlow's schema objects."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    import tflite_builders

    rng = np.random.default_rng(3)
    inp = keras.Input((6, 6, 2), batch_size=1)
    x = keras.layers.Conv2D(3, 3, name="c2")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.Conv2DTranspose(2, 3, name="tc")(x)
    x = keras.layers.Flatten()(x)
    two = keras.Model(inp, keras.layers.Dense(3, name="fc")(x))
    inp = keras.Input((4, 4, 4, 2), batch_size=1)
    three = keras.Model(inp, keras.layers.Conv3D(3, 2, name="c3")(inp))
    inp = keras.Input((2, 2, 2, 3), batch_size=1)
    up = keras.Model(inp, keras.layers.Conv3DTranspose(2, 2, name="t3")(inp))
    ids = keras.Input((4,), batch_size=1, dtype="int32")
    words = keras.Model(ids, keras.layers.Embedding(9, 3, name="emb")(ids))
    paths = []
    for name, model in (("two", two), ("three", three), ("up", up), ("words", words)):
        for variable in model.weights:  # nonzero biases: the converter drops zero ones
            variable.assign(rng.normal(size=variable.shape).astype(np.float32))
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        paths.append(path)
    conv3d = [
        ("x", (1, 4, 4, 4, 2), None),
        ("cb/filter", (2, 2, 2, 2, 3), rng.normal(size=(2, 2, 2, 2, 3)).astype(np.float32)),
        ("cb/bias", (3,), np.ones(3, np.float32)),
        ("y", (1, 3, 3, 3, 3), None),
    ]
    paths.append(tmp_path / "conv3d_bias.tflite")
    paths[-1].write_bytes(tflite_builders.build(conv3d, [(132, [0, 1, 2], [3])]))
    up3d = [
        ("x", (1, 2, 2, 2, 3), None),
        ("tb/output_shape", (5,), np.array([1, 3, 3, 3, 2], np.int32)),
        ("tb/filter", (2, 2, 2, 2, 3), rng.normal(size=(2, 2, 2, 2, 3)).astype(np.float32)),
        ("tb/bias", (2,), np.ones(2, np.float32)),
        ("y", (1, 3, 3, 3, 2), None),
    ]
    paths.append(tmp_path / "conv3d_transpose_bias.tflite")
    paths[-1].write_bytes(tflite_builders.build(up3d, [(141, [1, 2, 0, 3], [4])]))
    return paths


def test_tflite_reader_produces_exactly_the_table(tmp_path: Path) -> None:
    produced: set[Entry] = set()
    for path in _tflite_keras_files(tmp_path):
        with weightscope.load(path) as model:
            when = {
                (layer.name, "bias"): layouts.TFLITE_ADD_BIAS
                for layer in model.layers
                if (path.stem, layer.name.rsplit("/", 1)[-1]) in (("three", "c3_1"), ("up", "t3_1"))
            }
            produced |= _produced("tflite", model, when)
    assert produced == _table("tflite")
