"""``compare`` recognises a batch norm folded into the layer before it: PyTorch's ONNX exporter
folds an eval-mode ``BatchNorm2d`` into the ``Conv2d`` before it, so the ``.pt`` holds conv and
batch norm where the ``.onnx`` holds one conv with other weights. The pair is named
``bn_folded`` (kernel scaled per output channel by ``gamma / sqrt(var + eps)``, bias shifted),
the batch norm is no longer unmatched, and the verdict is ``transformed``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import weightscope  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, bias=False)  # folding gives it a bias
        self.bn2 = torch.nn.BatchNorm2d(4, eps=1e-3)
        self.fc = torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.bn2(self.conv2(x)).flatten(1))


def _trained(net: Net) -> Net:
    """Batch-norm statistics and affine parameters away from their initial 0 and 1."""
    torch.manual_seed(1)
    with torch.no_grad():
        for bn in (net.bn, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return net.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("folding")
    torch.manual_seed(0)
    net = _trained(Net())
    torch.save(net.state_dict(), folder / "net.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.randn(1, 3, 8, 8),), str(folder / "net.onnx"), dynamo=False,
            opset_version=17,
        )  # fmt: skip
    return folder / "net.pt", folder / "net.onnx"


def test_torch_exporter_folding_is_named(files: tuple[Path, Path]) -> None:
    pt, onnx_path = files
    with weightscope.load(onnx_path) as model:
        assert not any(layer.kind == "batch_norm" for layer in model.layers)  # really folded
    result = weightscope.compare(pt, onnx_path)
    by_a = {pair.a: pair for pair in result.pairs}
    for conv, bn, eps in (("conv", "bn", "1e-05"), ("conv2", "bn2", "0.001")):
        pair = by_a[conv]
        assert pair.transform == "bn_folded" and pair.match, pair.note
        assert f"A's batch norm {bn!r} folded into {conv!r}" in (pair.note or "")
        assert f"eps {eps}" in (pair.note or "")
        assert pair.max_abs_diff < 1e-5
    assert by_a["fc"].transform == "identity"
    assert not result.unmatched_a and not result.unmatched_b
    assert result.verdict == "transformed"
    # the other way round: the batch norm is on B's side
    reverse = weightscope.compare(onnx_path, pt)
    assert {p.transform for p in reverse.pairs} == {"bn_folded", "identity"}
    assert not reverse.unmatched_b


def test_a_changed_batch_norm_is_not_folding(files: tuple[Path, Path], tmp_path: Path) -> None:
    pt, onnx_path = files
    state = torch.load(pt, weights_only=True)
    state["bn.running_var"] = state["bn.running_var"] * 2  # not the statistics that were folded
    changed = tmp_path / "changed.pt"
    torch.save(state, changed)
    result = weightscope.compare(changed, onnx_path)
    pair = next(p for p in result.pairs if p.a == "conv")
    assert not pair.match and pair.transform != "bn_folded"
    assert [u.name for u in result.unmatched_a] == ["bn"]
    assert result.verdict == "different"


def test_folding_arithmetic_is_the_documented_one(files: tuple[Path, Path]) -> None:
    """The folded kernel compared is ``w * gamma / sqrt(var + eps)`` per output channel."""
    from weightscope.comparison.folding import fold

    pt, _ = files
    state = torch.load(pt, weights_only=True)
    with weightscope.load(pt) as model:
        folded = fold(model.layer("conv"), model.layer("bn"), 1e-5, lambda _, t: t.canonical())
    assert folded is not None
    w = {k: v.double().numpy() for k, v in state.items() if v.is_floating_point()}
    s = w["bn.weight"] / np.sqrt(w["bn.running_var"] + 1e-5)
    np.testing.assert_allclose(folded.kernel, w["conv.weight"] * s[:, None, None, None], rtol=1e-12)
    bias = (w["conv.bias"] - w["bn.running_mean"]) * s + w["bn.bias"]
    np.testing.assert_allclose(folded.bias, bias, rtol=1e-12)
