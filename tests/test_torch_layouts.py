"""PyTorch kernels, read back by weightscope, reproduce torch's own layer outputs.

For every layer case a one-layer model (``features.layer`` inside two ``nn.Sequential``) gets
random weights (batch norms get running statistics from a few training passes), computes its
output in float64 on a random input, and is saved in every form PyTorch users meet: a state dict
in the zip and the legacy format, a whole pickled module, a TorchScript archive, a safetensors
file, a Lightning-style checkpoint, a DataParallel state dict; and the live module itself.
weightscope must report the stored tensors bit for bit as torch reads them back, with the right
kind, roles, trainable flags and totals, and its canonical tensors must reproduce the output
through ``reference``.
"""

from __future__ import annotations

import copy
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import reference as ref  # noqa: E402  (needs torch)
from torch import nn  # noqa: E402

import weightscope  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

ATOL = RTOL = 1e-5
LAYER = "features.layer"

# ---------------------------------------------------------------------------------------------
# layer cases

Reference = Callable[[np.ndarray, dict[str, np.ndarray], int, float], np.ndarray]
"""(input, canonical tensors by role, groups, batch-norm epsilon) -> output, channels-first."""

CONV_ROLES = {"weight": "kernel", "bias": "bias"}
BN_ROLES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
    "num_batches_tracked": "num_batches_tracked",
}


def _conv(stride: Any = 1, dilation: Any = 1, padding: int = 0) -> Reference:
    def compute(x: np.ndarray, t: dict[str, np.ndarray], groups: int, eps: float) -> np.ndarray:
        dims = x.ndim - 2
        padded = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * dims)
        return ref.conv(padded, t["kernel"], t.get("bias"), stride=stride, dilation=dilation,
                        groups=groups)  # fmt: skip

    return compute


def _conv_transpose(stride: Any = 1) -> Reference:
    def compute(x: np.ndarray, t: dict[str, np.ndarray], groups: int, eps: float) -> np.ndarray:
        # torch's padding=0, output_padding=0 output is the "valid" transposed conv
        return ref.conv_transpose(x, t["kernel"], t.get("bias"), stride=stride, groups=groups)

    return compute


def _dense(x: np.ndarray, t: dict[str, np.ndarray], groups: int, eps: float) -> np.ndarray:
    return ref.dense(x, t["kernel"], t.get("bias"))


def _batch_norm(x: np.ndarray, t: dict[str, np.ndarray], groups: int, eps: float) -> np.ndarray:
    return ref.batch_norm(
        x, t["moving_mean"], t["moving_variance"], t.get("gamma"), t.get("beta"), epsilon=eps
    )


def _train_batch_norm(layer: nn.Module, input_shape: tuple[int, ...], seed: int) -> None:
    """A few training-mode passes, so that the running statistics are far from 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    layer.train()
    with torch.no_grad():
        for step in range(3):
            layer(torch.randn(input_shape, generator=generator) * (2 + step) + 1.5)
    assert int(layer.num_batches_tracked) == 3


def _freeze_weight(layer: nn.Module, input_shape: tuple[int, ...], seed: int) -> None:
    layer.weight.requires_grad_(False)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    """With the batch axis, channels-first."""
    kind: str
    """As a file with classes (whole module, TorchScript, live) must report it."""
    groups: int
    reference: Reference = field(repr=False)
    roles: dict[str, str] = field(default_factory=lambda: CONV_ROLES)
    state_dict_kind: str | None = None
    """As a state dict can tell it (a depthwise conv is a conv there); default: ``kind``."""
    prepare: Callable[[nn.Module, tuple[int, ...], int], None] | None = None
    eps: float = 0.0

    @property
    def class_name(self) -> str:
        return type(self.make()).__name__


CASES = [
    Case(
        "conv1d_groups2_dilation2",
        lambda: nn.Conv1d(4, 6, 3, groups=2, dilation=2),
        (2, 4, 11),
        "conv1d",
        2,
        _conv(dilation=2),
    ),
    Case(
        "conv2d_groups2_stride2_pad1",
        lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2),
        (2, 4, 8, 7),
        "conv2d",
        2,
        _conv(stride=2, padding=1),
    ),
    Case(
        "conv3d_groups2",
        lambda: nn.Conv3d(4, 4, (2, 3, 2), stride=(1, 2, 1), groups=2),
        (2, 4, 4, 7, 5),
        "conv3d",
        2,
        _conv(stride=(1, 2, 1)),
    ),
    Case(
        "depthwise_conv2d_m2",
        lambda: nn.Conv2d(3, 6, 3, groups=3),
        (2, 3, 7, 6),
        "depthwise_conv2d",
        3,
        _conv(),
        state_dict_kind="conv2d",
    ),
    Case(
        "conv_transpose1d_groups2_stride2",
        lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
        (2, 4, 5),
        "conv_transpose1d",
        2,
        _conv_transpose(stride=2),
    ),
    Case(
        "conv_transpose2d_groups2_stride2",
        lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=2, groups=2),
        (2, 4, 4, 5),
        "conv_transpose2d",
        2,
        _conv_transpose(stride=2),
    ),
    Case("linear", lambda: nn.Linear(7, 5), (2, 7), "dense", 1, _dense),
    Case("linear_no_bias", lambda: nn.Linear(6, 4, bias=False), (3, 6), "dense", 1, _dense),
    Case(
        "linear_frozen_weight",
        lambda: nn.Linear(5, 3),
        (2, 5),
        "dense",
        1,
        _dense,
        prepare=_freeze_weight,
    ),
    Case(
        "batch_norm2d_trained",
        lambda: nn.BatchNorm2d(5, eps=1e-3, momentum=0.3),
        (2, 5, 4, 3),
        "batch_norm",
        1,
        _batch_norm,
        roles=BN_ROLES,
        prepare=_train_batch_norm,
        eps=1e-3,
    ),
]
CASES_BY_ID = {case.id: case for case in CASES}

# ---------------------------------------------------------------------------------------------
# forms


def _adam_state(module: nn.Module) -> dict[str, Any]:
    """A real optimizer state (Adam moments, one tensor per parameter) for a checkpoint."""
    shadow = copy.deepcopy(module)
    params = [p for p in shadow.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return optimizer.state_dict()


def _save_lightning(module: nn.Module, path: Path) -> None:
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "state_dict": module.state_dict(),
        "optimizer_states": [_adam_state(module)],
        "lr_schedulers": [],
    }
    torch.save(checkpoint, path)


def _save_safetensors(module: nn.Module, path: Path) -> None:
    safetensors_torch.save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path)


@dataclass(frozen=True)
class Form:
    id: str
    filename: str | None
    """None: the live module itself is given to ``weightscope.load``."""
    save: Callable[[nn.Module, Path], None]
    expected: Callable[[Path | None, nn.Module], dict[str, Any]]
    """Every tensor as torch reads it back, by its key in the file."""
    weightscope_format: str
    classes: bool
    """The form records module classes (kinds are read, not inferred)."""
    key_prefix: str = ""
    """What the file's keys have in front of the names weightscope reports."""
    note: str | None = None
    """A word weightscope's notes must contain for this form."""


def _nothing(module: nn.Module, path: Path) -> None:
    return None


FORMS = [
    Form(
        "zip",
        "sd.pt",
        lambda m, p: torch.save(m.state_dict(), p),
        lambda p, m: torch.load(p, weights_only=True),
        "pytorch-zip",
        False,
    ),
    Form(
        "legacy",
        "sd_legacy.pt",
        lambda m, p: torch.save(m.state_dict(), p, _use_new_zipfile_serialization=False),
        lambda p, m: torch.load(p, weights_only=True),
        "pytorch-legacy",
        False,
    ),
    Form(
        "whole_module",
        "whole.pt",
        lambda m, p: torch.save(m, p),
        lambda p, m: torch.load(p, weights_only=False).state_dict(),
        "pytorch-zip",
        True,
        note="nn.Module",
    ),
    Form(
        "torchscript",
        "scripted.pt",
        lambda m, p: torch.jit.save(torch.jit.script(m), p),
        lambda p, m: torch.jit.load(p).state_dict(),
        "torchscript",
        True,
        note="TorchScript",
    ),
    Form(
        "safetensors",
        "sd.safetensors",
        _save_safetensors,
        lambda p, m: safetensors_torch.load_file(p),
        "safetensors",
        False,
    ),
    Form(
        "lightning",
        "lightning.ckpt",
        _save_lightning,
        lambda p, m: torch.load(p, weights_only=True)["state_dict"],
        "pytorch-zip",
        False,
        note="optimizer_states",
    ),
    Form(
        "dataparallel",
        "dp.pth",
        lambda m, p: torch.save(nn.DataParallel(m).state_dict(), p),
        lambda p, m: torch.load(p, weights_only=True),
        "pytorch-zip",
        False,
        key_prefix="module.",
        note="module.",
    ),
    Form("live", None, _nothing, lambda p, m: m.state_dict(), "live", True),
]
FORMS_BY_ID = {form.id: form for form in FORMS}


# ---------------------------------------------------------------------------------------------
# one model per case, saved once in every form


@dataclass
class Built:
    case: Case
    module: nn.Module
    """``features.layer`` inside two ``nn.Sequential``, in eval mode, float32."""
    x: np.ndarray
    y: np.ndarray
    """torch's own output on ``x`` (float64 copy of the module, no grad)."""
    files: dict[str, Path]

    @property
    def layer(self) -> nn.Module:
        return self.module.features.layer

    def source(self, form: Form) -> Any:
        return self.module if form.filename is None else self.files[form.id]


def _build(case: Case, directory: Path) -> Built:
    seed = zlib.crc32(case.id.encode())
    torch.manual_seed(seed)
    layer = case.make()
    with torch.no_grad():  # every tensor random, biases and norms included
        for param in layer.parameters():
            param.copy_(torch.randn(param.shape) * 0.5 + 0.1)
    if case.prepare is not None:
        case.prepare(layer, case.input_shape, seed)
    module = nn.Sequential(OrderedDict(features=nn.Sequential(OrderedDict(layer=layer)))).eval()

    x = np.random.default_rng(seed).standard_normal(case.input_shape)
    with torch.no_grad():
        y = copy.deepcopy(module).double().eval()(torch.from_numpy(x)).numpy()

    directory.mkdir(parents=True)
    files = {}
    for form in FORMS:
        if form.filename is not None:
            files[form.id] = directory / form.filename
            form.save(module, files[form.id])
    return Built(case, module, x, y, files)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Built]:
    """``built(case_id)``: the model of one case, built and saved on first use."""
    cache: dict[str, Built] = {}
    root = tmp_path_factory.mktemp("torch_layouts")

    def get(case_id: str) -> Built:
        if case_id not in cache:
            cache[case_id] = _build(CASES_BY_ID[case_id], root / case_id)
        return cache[case_id]

    return get


PARAMS = [
    pytest.param(case.id, form, id=f"{case.id}-{form.id}") for case in CASES for form in FORMS
]


def _only_layer(model: weightscope.Model) -> weightscope.Layer:
    assert [layer.name for layer in model.layers] == [LAYER]
    return model.layers[0]


def _groups_for_reference(layer: weightscope.Layer, case: Case, form: Form) -> int:
    """The layer's groups as weightscope reports them; where a state dict cannot tell them,
    weightscope must say so, and the case's groups are used instead."""
    if layer.groups == case.groups:
        return layer.groups
    assert not form.classes, (layer.groups, case.groups)
    assert layer.note is not None and "groups are not recorded" in layer.note, layer.note
    return case.groups


def _float(value: Any) -> bool:
    return value.dtype.is_floating_point


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize(("case_id", "form"), PARAMS)
def test_layer_structure(built: Callable[[str], Built], case_id: str, form: Form) -> None:
    item = built(case_id)
    case = item.case
    with weightscope.load(item.source(form)) as model:
        assert model.framework == "pytorch"
        assert model.format == form.weightscope_format
        if form.note is not None:
            assert any(form.note in note for note in model.notes), model.notes
        layer = _only_layer(model)
        assert layer.inferred is not form.classes
        if form.classes:
            assert layer.kind == case.kind
            assert layer.class_name == case.class_name
            assert layer.groups == case.groups
            assert layer.note is None, layer.note
        else:
            assert layer.kind == (case.state_dict_kind or case.kind)
            assert layer.class_name is None
            assert layer.note, "an inferred layer says why"
            _groups_for_reference(layer, case, form)
        expected_roles = {f"{LAYER}.{attr}": role for attr, role in case.roles.items()}
        got = {tensor.name: tensor.role for tensor in layer.tensors}
        state_names = {f"{LAYER}.{name}" for name in item.layer.state_dict()}
        assert got == {name: expected_roles[name] for name in state_names}


@pytest.mark.parametrize(("case_id", "form"), [p for p in PARAMS if p.values[1].classes])
def test_config_comes_from_the_module(
    built: Callable[[str], Built], case_id: str, form: Form
) -> None:
    item = built(case_id)
    keys = (
        "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
        "in_features", "out_features", "num_features", "eps", "momentum",
    )  # fmt: skip
    expected = {}
    for key in keys:
        if hasattr(item.layer, key):
            value = getattr(item.layer, key)
            expected[key] = list(value) if isinstance(value, tuple) else value
    assert expected
    with weightscope.load(item.source(form)) as model:
        config = _only_layer(model).config
        assert {key: config.get(key) for key in expected} == expected


@pytest.mark.parametrize(("case_id", "form"), PARAMS)
def test_native_tensors_equal_torch_bit_for_bit(
    built: Callable[[str], Built], case_id: str, form: Form
) -> None:
    item = built(case_id)
    expected = form.expected(item.files.get(form.id), item.module)
    parameters = dict(item.module.named_parameters())
    with weightscope.load(item.source(form)) as model:
        layer = _only_layer(model)
        assert sorted(form.key_prefix + t.name for t in layer.tensors) == sorted(expected)
        for tensor in layer.tensors:
            value = expected[form.key_prefix + tensor.name].detach()
            assert tensor.native_shape == tuple(value.shape), tensor.name
            assert tensor.dtype == str(value.dtype).removeprefix("torch."), tensor.name
            native = tensor.numpy()
            np.testing.assert_array_equal(native, value.numpy(), err_msg=tensor.name, strict=True)
            if tensor.role == "num_batches_tracked":
                assert tensor.counted is False
                assert tensor.native_layout is None
                assert tensor.trainable in (None, False)
            else:
                assert tensor.counted is True, tensor.name
            if tensor.role in ("moving_mean", "moving_variance"):
                assert tensor.trainable is False
            elif tensor.name in parameters:
                # only forms with classes know which tensors are parameters and train
                want = parameters[tensor.name].requires_grad if form.classes else None
                assert tensor.trainable is want, tensor.name


@pytest.mark.parametrize(("case_id", "form"), PARAMS)
def test_parameter_totals(built: Callable[[str], Built], case_id: str, form: Form) -> None:
    item = built(case_id)
    module = item.module
    float_buffers = sum(b.numel() for b in module.buffers() if _float(b))
    running = sum(b.numel() for n, b in module.named_buffers() if "running_" in n)
    with weightscope.load(item.source(form)) as model:
        counts = model.params
    if form.classes:
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in module.parameters()) + float_buffers
        assert (counts.total, counts.trainable, counts.unknown) == (total, trainable, 0)
        assert counts.non_trainable == total - trainable
    else:
        total = sum(v.numel() for v in module.state_dict().values() if _float(v))
        assert (counts.total, counts.trainable) == (total, 0)
        assert (counts.non_trainable, counts.unknown) == (running, total - running)


@pytest.mark.parametrize(("case_id", "form"), PARAMS)
def test_canonical_tensors_reproduce_torch_output(
    built: Callable[[str], Built], case_id: str, form: Form
) -> None:
    item = built(case_id)
    case = item.case
    with weightscope.load(item.source(form)) as model:
        layer = _only_layer(model)
        canonical = {}
        for tensor in layer.tensors:
            if tensor.role == "num_batches_tracked":
                continue
            assert tensor.native_layout is not None, tensor.role
            array = tensor.canonical()
            assert array.shape == tensor.canonical_shape, tensor.role
            canonical[tensor.role] = array.astype(np.float64)
        groups = _groups_for_reference(layer, case, form)
        eps = layer.config.get("eps", case.eps) if form.classes else case.eps
    expected = case.reference(item.x, canonical, groups, eps)
    assert expected.shape == item.y.shape
    np.testing.assert_allclose(expected, item.y, atol=ATOL, rtol=RTOL)


def test_every_torch_layer_kind_of_the_brief_is_covered() -> None:
    kinds = {case.kind for case in CASES}
    assert kinds >= {
        "conv1d", "conv2d", "conv3d", "depthwise_conv2d", "conv_transpose1d",
        "conv_transpose2d", "dense", "batch_norm",
    }  # fmt: skip


def test_batch_norm_statistics_are_not_trivial(built: Callable[[str], Built]) -> None:
    """The running statistics moved away from their initial 0 and 1 (else the test above
    could not tell gamma from moving_variance, or beta from moving_mean)."""
    layer = built("batch_norm2d_trained").layer
    assert float(layer.running_mean.abs().min()) > 0.05
    assert float((layer.running_var - 1).abs().min()) > 0.05


# ---------------------------------------------------------------------------------------------
# forms beyond the matrix: traced TorchScript, a whole module in the legacy format


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_traced_torchscript_groups_are_right_or_flagged(
    built: Callable[[str], Built], tmp_path: Path, case_id: str
) -> None:
    """``torch.jit.trace`` (the common way to make TorchScript) writes no ``Final`` constants
    for the layer classes: weightscope must still not report a grouped conv as ungrouped
    without saying so. Either its groups are right and the canonical kernel reproduces the
    output, or the layer says that its groups are unknown."""
    item = built(case_id)
    case = item.case
    path = tmp_path / "traced.pt"
    example = torch.from_numpy(item.x).float()
    torch.jit.save(torch.jit.trace(item.module, example), path)
    with weightscope.load(path) as model:
        assert model.format == "torchscript"
        layer = _only_layer(model)
        assert layer.class_name == case.class_name
        if layer.groups != case.groups:
            assert layer.note is not None and "groups" in layer.note, (
                f"traced {case.class_name} with groups={case.groups} reported with "
                f"groups={layer.groups}, kind {layer.kind}, note {layer.note!r}"
            )
            return
        canonical = {
            t.role: t.canonical().astype(np.float64)
            for t in layer.tensors
            if t.role != "num_batches_tracked"
        }
    expected = case.reference(item.x, canonical, layer.groups, case.eps)
    np.testing.assert_allclose(expected, item.y, atol=ATOL, rtol=RTOL)


def test_whole_module_in_the_legacy_format(tmp_path: Path) -> None:
    """``torch.save(model, _use_new_zipfile_serialization=False)``, the form of many older
    published checkpoints: the legacy stream names each module class through a persistent id
    ``('module', class, source file, source)`` besides the storages."""
    torch.manual_seed(13)
    module = nn.Sequential(
        nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6), nn.ConvTranspose2d(6, 4, 2, groups=2)
    ).eval()
    path = tmp_path / "whole_legacy.pt"
    torch.save(module, path, _use_new_zipfile_serialization=False)
    expected = torch.load(path, weights_only=False).state_dict()
    with weightscope.load(path) as model:
        assert model.format == "pytorch-legacy"
        got = [(layer.name, layer.kind, layer.groups, layer.inferred) for layer in model.layers]
        assert got == [
            ("0", "conv2d", 2, False),
            ("1", "batch_norm", 1, False),
            ("2", "conv_transpose2d", 2, False),
        ]
        tensors = {t.name: t for _, t in model.tensors()}
        assert sorted(tensors) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(tensors[name].numpy(), value.numpy(), strict=True)
        params = sum(p.numel() for p in module.parameters())
        assert model.params.trainable == params
        assert model.params.total == params + 12


# ---------------------------------------------------------------------------------------------
# tied weights


def _tied() -> nn.Module:
    torch.manual_seed(7)
    module = nn.Sequential(
        OrderedDict(encoder=nn.Linear(4, 4), norm=nn.BatchNorm1d(4), decoder=nn.Linear(4, 4))
    )
    module.decoder.weight = module.encoder.weight
    module.eval()
    assert module.decoder.weight is module.encoder.weight
    return module


TIED_FORMS = ["zip", "legacy", "whole_module", "torchscript", "lightning", "live"]


@pytest.mark.parametrize("form_id", TIED_FORMS)
def test_tied_weights_are_listed_twice_and_counted_once(tmp_path: Path, form_id: str) -> None:
    form = FORMS_BY_ID[form_id]
    module = _tied()
    source: Any = module
    if form.filename is not None:
        source = tmp_path / form.filename
        form.save(module, source)
    unique_params = sum(p.numel() for p in module.parameters())  # torch counts tied ones once
    float_buffers = sum(b.numel() for b in module.buffers() if _float(b))
    assert unique_params == 16 + 4 + 4 + 4 + 4
    with weightscope.load(source) as model:
        tensors = {t.name: t for _, t in model.tensors()}
        assert {"encoder.weight", "decoder.weight"} <= set(tensors)
        first, second = tensors["encoder.weight"], tensors["decoder.weight"]
        assert first.shared_with is None and first.counted is True
        assert second.shared_with == "encoder.weight"
        assert second.counted is False
        np.testing.assert_array_equal(second.numpy(), first.numpy(), strict=True)
        np.testing.assert_array_equal(
            second.numpy(), module.encoder.weight.detach().numpy(), strict=True
        )
        others = [t for name, t in tensors.items() if name != "decoder.weight"]
        assert all(t.shared_with is None for t in others)
        assert model.params.total == unique_params + float_buffers
        if form.classes:
            assert model.params.trainable == unique_params


# ---------------------------------------------------------------------------------------------
# live modules


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.depthwise = nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8)
        self.bn = nn.BatchNorm2d(16)
        self.up = nn.ConvTranspose2d(16, 4, (2, 3), stride=(2, 1), padding=(0, 1), groups=4)
        self.head = nn.Linear(4, 10)
        self.register_buffer("scale", torch.full((4,), 2.0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def test_live_module_reports_what_the_modules_say() -> None:
    torch.manual_seed(3)
    net = _Net()
    net.head.bias.requires_grad_(False)
    with weightscope.load(net) as model:
        assert (model.format, model.framework, model.source) == ("live", "pytorch", None)
        assert model.framework_version == torch.__version__
        layers = {layer.name: layer for layer in model.layers}
        assert list(layers) == ["(root)", "stem", "depthwise", "bn", "up", "head"]
        kinds = {name: (layer.kind, layer.groups, layer.inferred) for name, layer in layers.items()}
        assert kinds["stem"] == ("conv2d", 1, False)
        assert kinds["depthwise"] == ("depthwise_conv2d", 8, False)
        assert kinds["bn"] == ("batch_norm", 1, False)
        assert kinds["up"] == ("conv_transpose2d", 4, False)
        assert kinds["head"] == ("dense", 1, False)
        for name in ("stem", "depthwise", "up"):
            sub = getattr(net, name)
            config = layers[name].config
            assert layers[name].class_name == type(sub).__name__
            for key in ("stride", "padding", "dilation", "kernel_size"):
                assert config[key] == list(getattr(sub, key)), (name, key)
            assert config["groups"] == sub.groups
        assert layers["depthwise"].config["dilation"] == [2, 2]
        assert layers["up"].config["padding"] == [0, 1]
        assert layers["up"].tensor("kernel").groups == 4
        assert layers["up"].tensor("kernel").canonical_shape == (4, 4, 2, 3)
        assert layers["head"].tensor("bias").trainable is False
        assert layers["head"].tensor("kernel").trainable is True
        assert layers["(root)"].tensor("steps").counted is False
        # the live data, not a copy made at load time
        with torch.no_grad():
            net.head.weight[0, 0] = 123.0
        assert layers["head"].tensor("kernel").numpy()[0, 0] == 123.0

        counts = model.params
        params = sum(p.numel() for p in net.parameters())
        float_buffers = sum(b.numel() for b in net.buffers() if _float(b))
        assert float_buffers == 16 + 16 + 4
        assert counts.total == params + float_buffers
        assert counts.trainable == sum(p.numel() for p in net.parameters() if p.requires_grad)
        assert counts.non_trainable == float_buffers + 10
        assert counts.unknown == 0


def test_live_bfloat16_and_float16_modules_read() -> None:
    torch.manual_seed(5)
    for dtype, name in ((torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
        net = nn.Sequential(nn.Linear(3, 2)).to(dtype)
        with weightscope.load(net) as model:
            tensor = model.layer("0").tensor("kernel")
            assert tensor.dtype == name
            np.testing.assert_array_equal(tensor.numpy(), net[0].weight.detach().float().numpy())


def test_live_object_that_is_not_a_module_is_refused() -> None:
    with pytest.raises(weightscope.UnsupportedFormatError, match=r"torch\.nn\.Module"):
        weightscope.load(torch.zeros(3))
