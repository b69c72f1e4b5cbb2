"""The PyTorch module each layer of an exported ONNX file came from (``Layer.module``), read from
the file: the state-dict names of its tensors, else the scope in its node's name. It names the
layer's arrays in ``export`` (``conv1/kernel``, not ``/conv1/Conv/kernel``)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import weightscope
from weightscope.formats.onnx.names import module_of

# ---------------------------------------------------------------------------------------------
# files made here: node names and tensor names as each PyTorch exporter writes them


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], producer: str) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, producer_name=producer, producer_version="2.13.0")


def _conv(node: str, weight: str, bias: str, x: str, y: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, weight, bias], [y], name=node, pads=[1, 1, 1, 1])


def _inits(*names: str, channels: int = 2) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(0)
    out = []
    for name in names:
        shape = (channels, channels, 3, 3) if name.endswith(("weight", "_w")) else (channels,)
        out.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    return out


def load(tmp_path: Path, proto: onnx.ModelProto) -> weightscope.Model:
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    return weightscope.load(path)


def test_module_from_state_dict_names_and_from_scopes(tmp_path):
    nodes = [
        # unfolded TorchScript export: state-dict names kept
        _conv("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1.weight", "layer1.0.conv1.bias",
              "x", "a"),
        # folded: tensors renamed onnx::Conv_N, the scope in the node name remains
        _conv("/layer1/layer1.1/conv1/Conv", "onnx::Conv_7_w", "onnx::Conv_8", "a", "b"),
        # dynamo: node_* names, state-dict names kept
        _conv("node_Conv_12", "head.weight", "head.bias", "b", "c"),
    ]  # fmt: skip
    inits = _inits(
        "layer1.0.conv1.weight", "layer1.0.conv1.bias", "onnx::Conv_7_w", "onnx::Conv_8",
        "head.weight", "head.bias",
    )  # fmt: skip
    with load(tmp_path, _model(nodes, inits, "pytorch")) as model:
        assert [(x.name, x.module, x.user_name) for x in model.layers] == [
            ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1", "layer1.0.conv1"),
            ("/layer1/layer1.1/conv1/Conv", "layer1.1.conv1", "layer1.1.conv1"),
            ("node_Conv_12", "head", "head"),
        ]


def test_a_module_shared_by_several_nodes_names_none_of_them(tmp_path):
    """``nn.MultiheadAttention`` exports as several MatMul nodes under ``/attn``: not one
    layer's module, so each keeps its node name (and export keys stay distinct)."""
    nodes = [
        _conv("/attn/Conv", "onnx::a_w", "onnx::a", "x", "a"),
        _conv("/attn/Conv_1", "onnx::b_w", "onnx::b", "a", "b"),
        _conv("/fc/Conv", "onnx::c_w", "onnx::c", "b", "c"),
    ]
    inits = _inits("onnx::a_w", "onnx::a", "onnx::b_w", "onnx::b", "onnx::c_w", "onnx::c")
    with load(tmp_path, _model(nodes, inits, "pytorch")) as model:
        assert [x.user_name for x in model.layers] == ["/attn/Conv", "/attn/Conv_1", "fc"]


def test_other_exporters_keep_node_names(tmp_path):
    nodes = [_conv("/conv1/Conv", "conv1.weight", "conv1.bias", "x", "y")]
    with load(tmp_path, _model(nodes, _inits("conv1.weight", "conv1.bias"), "tf2onnx")) as model:
        assert [(x.name, x.module) for x in model.layers] == [("/conv1/Conv", None)]


@pytest.mark.parametrize(
    ("node", "op", "expected"),
    [
        ("/conv1/Conv", "Conv", "conv1"),
        ("/features/features.3/Conv", "Conv", "features.3"),
        ("/layer1/layer1.0/downsample/downsample.0/Conv", "Conv", "layer1.0.downsample.0"),
        ("/layer1/layer1.1/layer1.1.0/Conv", "Conv", "layer1.1.0"),
        ("/attn/MatMul_2", "MatMul", "attn"),
        ("/Gemm", "Gemm", None),  # no scope: the model itself
        ("/conv1/Relu", "Conv", None),  # not this op's node
        ("conv1/Conv", "Conv", None),  # not the exporter's scope syntax
        ("//Conv", "Conv", None),
    ],
)
def test_scopes(node, op, expected):
    from weightscope.model import Layer

    layer = Layer(node, weightscope.Kind.CONV2D, [], class_name=op)
    assert module_of(layer) == expected


# ---------------------------------------------------------------------------------------------
# real exports


@pytest.mark.slow
@pytest.mark.frameworks
@pytest.mark.parametrize(("dynamo", "folding"), [(False, True), (False, False), (True, True)])
def test_real_pytorch_exports_name_their_modules(tmp_path, dynamo, folding):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.bn1(self.conv1(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.layer1 = nn.Sequential(Block(), Block())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(self.layer1(self.stem(x)).mean((2, 3)))

    path = tmp_path / "net.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.randn(1, 3, 8, 8),), path, dynamo=dynamo,
                          do_constant_folding=folding)  # fmt: skip
    with weightscope.load(path) as model:
        named = {x.user_name for x in model.layers if x.kind != "unknown"}
    convs = {"stem", "layer1.0.conv1", "layer1.1.conv1", "fc"}
    norms = {"layer1.0.bn1", "layer1.1.bn1"}
    # constant folding (eval mode) folds each batch norm into the conv before it
    assert named == (convs if folding else convs | norms)
