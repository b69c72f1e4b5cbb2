"""What the commands make of quantized weights, on a float model and its dynamically quantized
copy written by onnxruntime (``ConvInteger``, ``MatMulInteger``, ``DynamicQuantizeLSTM``):
``compare`` pairs every layer as ``quantized`` with its SQNR, ``inspect --json`` follows the
schema and says how each integer tensor stands for real values, ``export`` writes the real
values and, apart, the integers with their scales and zero points, and the table marks them."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")
jsonschema = pytest.importorskip("jsonschema")

from cli_runner import run_cli  # noqa: E402

import weightscope  # noqa: E402
from weightscope.reporters.summary import model_to_dict, write_json  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def run_weightscope(argv: list[str]) -> tuple[int, str, str]:
    done = run_cli(*argv)
    return done.returncode, done.stdout, done.stderr


SCHEMA = Path(__file__).parent.parent / "docs" / "schemas" / "inspect.schema.json"


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 6, 3)
        self.rnn = torch.nn.LSTM(6, 5, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(10, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.relu(self.conv(x)).transpose(1, 2)
        return self.fc(self.rnn(h)[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("quantized")
    torch.manual_seed(4)
    float_path, quantized_path = directory / "float.onnx", directory / "quantized.onnx"
    torch.onnx.export(
        Net().eval(), (torch.randn(2, 4, 9),), str(float_path), input_names=["x"],
        output_names=["y"], opset_version=17, dynamo=False,
    )  # fmt: skip
    quantization.quantize_dynamic(
        float_path, quantized_path, weight_type=quantization.QuantType.QInt8
    )
    ops = {n.op_type for n in onnx.load(quantized_path).graph.node}
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM"} <= ops
    return float_path, quantized_path


def test_compare_pairs_every_layer_as_quantized(files: tuple[Path, Path]) -> None:
    float_path, quantized_path = files
    result = weightscope.compare(float_path, quantized_path)
    assert not result.unmatched_a and not result.unmatched_b
    weights = [p for p in result.pairs if p.kind != "unknown"]  # not the exporter's Expand
    assert sorted(str(p.kind) for p in weights) == ["conv1d", "dense", "lstm", "lstm"]
    for pair in weights:
        assert pair.match and pair.transform == "quantized", (pair.a, pair.transform, pair.note)
        assert pair.sqnr_db is not None and 25 < pair.sqnr_db < math.inf
        assert pair.matched_by in ("shape", "value"), pair.note  # the values agree
    assert result.verdict == "quantized"
    # the SQNR is the float side's energy over the difference's, per tensor
    with weightscope.load(float_path) as a, weightscope.load(quantized_path) as b:
        pair = next(p for p in result.pairs if p.kind == "conv1d")
        signal = a.layer(pair.a).tensor("kernel").canonical().astype(np.float64)
        noisy = b.layer(pair.b).tensor("kernel").canonical().astype(np.float64)
        expected = 10 * math.log10(np.sum(signal**2) / np.sum((signal - noisy) ** 2))
        kernel = next(t for t in pair.tensors if t.role == "kernel")
        assert kernel.sqnr_db == pytest.approx(expected, rel=1e-9)


def test_compare_json_carries_the_relation_and_sqnr(files: tuple[Path, Path]) -> None:
    status, out, err = run_weightscope(["compare", *map(str, files), "--json"])
    assert status == 1, err  # not identical
    data = json.loads(out)
    assert data["verdict"] == "quantized"
    weights = [p for p in data["pairs"] if p["kind"] != "unknown"]
    assert {p["transform"] for p in weights} == {"quantized"}
    assert all(isinstance(p["sqnr_db"], float) for p in weights)
    status, out, _ = run_weightscope(["compare", *map(str, files)])
    assert "quantized" in out and " dB" in out


def test_a_quantized_layer_against_another_float_layer_differs(files: tuple[Path, Path]) -> None:
    """Quantization is no licence: a kernel changed by more than a step is no match."""
    float_path, quantized_path = files
    changed = onnx.load(float_path)
    for init in changed.graph.initializer:
        if init.name.endswith("conv.weight"):
            values = onnx.numpy_helper.to_array(init) + 0.5
            init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
    other = float_path.with_name("changed.onnx")
    onnx.save(changed, other)
    result = weightscope.compare(other, quantized_path)
    conv = next(p for p in result.pairs if p.kind == "conv1d")
    assert not conv.match and conv.transform == "none"
    assert "differs by more than a quantization step" in (conv.note or "")


def test_inspect_json_follows_the_schema_and_describes_quantization(
    files: tuple[Path, Path],
) -> None:
    _, quantized_path = files
    status, out, err = run_weightscope(["inspect", str(quantized_path), "--json"])
    assert status == 0, err
    data = json.loads(out)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(data)
    with weightscope.load(quantized_path) as model:
        quantized = [(layer, t) for layer, t in model.tensors() if t.quantization is not None]
        assert {str(layer.kind) for layer, _ in quantized} == {"conv1d", "dense", "lstm"}
        entries = {
            (layer["name"], t["role"]): t for layer in data["layers"] for t in layer["tensors"]
        }
        for layer, tensor in quantized:
            entry = entries[(layer.name, tensor.role)]
            stored = tensor.stored()
            q = tensor.quantization
            assert q is not None
            real = (stored.astype(np.float64) - q.zero_points().astype(np.float64)) * q.scales()
            assert entry["dtype"] == entry["quantization"]["stored_dtype"] == "int8"
            assert entry["quantization"]["stored_range"] == [stored.min(), stored.max()]
            assert entry["stats"]["max"] == pytest.approx(real.max(), rel=1e-6)
            assert entry["stats"]["min"] == pytest.approx(real.min(), rel=1e-6)
        parts = [t for _, t in model.tensors() if t.part is not None]
        assert parts and all(entries_have_part(data, t.part) for t in parts)
        # the streamed writer writes what json.dump writes
        streamed = io.StringIO()
        write_json(streamed, model)
        dumped = io.StringIO()
        json.dump(model_to_dict(model), dumped, indent=2)
        dumped.write("\n")
        assert streamed.getvalue() == dumped.getvalue()


def entries_have_part(data: dict, part: str) -> bool:  # type: ignore[type-arg]
    return any(t.get("part") == part for layer in data["layers"] for t in layer["tensors"])


def test_export_writes_real_values_and_the_integers_apart(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, quantized_path = files
    out = tmp_path / "q.npz"
    status, _, err = run_weightscope(["export", str(quantized_path), "-o", str(out)])
    assert status == 0, err
    assert "quantized: also their stored integers" in err
    arrays = np.load(out)
    with weightscope.load(quantized_path) as model:
        checked = 0
        for layer, tensor in model.tensors():
            if tensor.quantization is None:
                continue
            key = f"{layer.user_name}/{tensor.role}"
            stored, scale = arrays[f"{key}/stored"], arrays[f"{key}/scale"]
            zero = arrays[f"{key}/zero_point"]
            assert stored.dtype == np.int8 and stored.shape == tensor.canonical_shape
            np.testing.assert_array_equal(stored, tensor.stored_canonical())
            real = (stored.astype(np.float64) - zero.astype(np.float64)) * scale
            np.testing.assert_allclose(arrays[key], real, rtol=1e-6, atol=0)
            checked += 1
        assert checked == sum(t.quantization is not None for _, t in model.tensors())


def test_the_table_marks_quantized_tensors(files: tuple[Path, Path]) -> None:
    _, quantized_path = files
    status, out, _ = run_weightscope(["inspect", str(quantized_path)])
    assert status == 0 and "int8 (q)" in out
    with weightscope.load(quantized_path) as model:
        conv = next(layer for layer in model.layers if layer.kind == "conv1d")
    status, out, _ = run_weightscope(["inspect", str(quantized_path), "--layer", conv.name])
    assert status == 0
    assert "kernel: int8 (q), per tensor" in out and "stored -" in out


def test_plots_show_the_real_values_of_a_quantized_kernel(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A quantized conv and a quantized LSTM plot (an LSTM's kernel as each gate's (units, in)
    matrix, the gates' rows stacked in canonical order)."""
    _, quantized_path = files
    with weightscope.load(quantized_path) as model:
        conv = next(layer for layer in model.layers if layer.kind == "conv1d")
        lstm = next(layer for layer in model.layers if layer.kind == "lstm")
        figure = lstm.plot_kernels()
        kernel = lstm.tensor("kernel")
        assert figure.values is not None and figure.values.shape == (4 * 5, 6)
        np.testing.assert_array_equal(figure.values, kernel.canonical().reshape(20, 6))
        title = " ".join(t.get_text() for t in figure.texts)
        assert "gates i,f,g,o, 5 units each" in title and "int8 dequantized" in title
    for layer in (conv.name, lstm.name):
        out = tmp_path / "plot.png"
        done = run_cli("plot", quantized_path, "--layer", layer, "-o", out)
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 0


def test_health_checks_a_quantized_kernel_by_its_real_values(files: tuple[Path, Path]) -> None:
    from weightscope.analysis.health import model_health

    _, quantized_path = files
    with weightscope.load(quantized_path) as model:
        health = {h.layer: h for h in model_health(model)}
        for layer in model.layers:
            if layer.kind in ("conv1d", "dense"):
                kernel = layer.tensor("kernel")
                assert health[layer.name].filters == kernel.canonical_shape[0], health[layer.name]
                assert health[layer.name].init_verdict is not None


def test_explain_works_a_quantized_conv_out_with_its_real_values(files: tuple[Path, Path]) -> None:
    from weightscope.analysis.explain import explain_layer

    _, quantized_path = files
    with weightscope.load(quantized_path) as model:
        conv = next(layer for layer in model.layers if layer.kind == "conv1d")
        found = explain_layer(conv, demo=True, output_channel=2)
        real = conv.tensor("kernel").canonical().astype(np.float64)
        assert found.demo is not None
        np.testing.assert_array_equal(found.demo.kernel, real[2])  # type: ignore[attr-defined]
        assert found.quantized == ("kernel (int8, per tensor)",)
        text = conv.explain(demo=True)
    assert "Quantized: kernel (int8, per tensor); the numbers above are the real values" in text
