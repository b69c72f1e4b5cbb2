"""``weightscope.layouts`` against PyTorch itself and against the meaning of its axis letters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)

from weightscope import layouts  # noqa: E402

SPATIAL_SIZES = {"D": 2, "H": 3, "W": 4}  # all different, so a swapped axis changes the shape


def _native_shape(layout: str, groups: int = 1) -> tuple[int, ...]:
    """A small shape for ``layout`` whose channel axes split into ``groups``."""
    sizes = {"O": 3, "I": 2 * groups, "M": 3, "C": 5, "N": 1, "V": 6, "E": 7, **SPATIAL_SIZES}
    return tuple(sizes[axis] for axis in layout)


# ---------------------------------------------------------------------------------------------
# PyTorch modules, converted to canonical, reproduce their own output through the reference


@pytest.mark.parametrize(
    ("dims", "layout", "kernel_size"),
    [(1, "IOW", 3), (2, "IOHW", (3, 2)), (3, "IODHW", (2, 3, 2))],
)
@pytest.mark.parametrize("dilation", [1, 2])
def test_torch_conv_transpose_grouped(rng, dims, layout, kernel_size, dilation) -> None:
    module_class = {
        1: torch.nn.ConvTranspose1d,
        2: torch.nn.ConvTranspose2d,
        3: torch.nn.ConvTranspose3d,
    }[dims]
    torch.manual_seed(dims * 10 + dilation)
    module = module_class(4, 6, kernel_size, stride=2, groups=2, dilation=dilation).double()
    stored = module.weight.detach().numpy()
    assert stored.shape[:2] == (4, 3)  # (in, out/groups): the layout the table claims

    canonical = layouts.to_canonical(stored, layout, groups=2)
    assert canonical.shape == layouts.canonical_shape(stored.shape, layout, groups=2)
    assert canonical.shape[:2] == (6, 2)  # (out, in/groups)

    x = rng.standard_normal((2, 4, *(5 - d for d in range(dims))))
    expected = module(torch.as_tensor(x)).detach().numpy()
    got = ref.conv_transpose(
        x,
        canonical,
        module.bias.detach().numpy(),
        stride=2,
        dilation=dilation,
        groups=2,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # and the reference's own regrouping is the exact inverse of to_canonical
    np.testing.assert_array_equal(ref.canonical_to_torch_transpose(canonical, 2), stored)


@pytest.mark.parametrize(("dims", "layout"), [(1, "OIW"), (2, "OIHW"), (3, "OIDHW")])
def test_torch_conv_grouped_is_canonical(rng, dims, layout) -> None:
    module_class = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims]
    torch.manual_seed(dims)
    module = module_class(4, 6, 3, stride=2, groups=2, padding=1).double()
    stored = module.weight.detach().numpy()
    canonical = layouts.to_canonical(stored, layout, groups=2)
    np.testing.assert_array_equal(canonical, stored)

    x = rng.standard_normal((2, 4, *(6 + d for d in range(dims))))
    padded = np.pad(x, [(0, 0), (0, 0), *([(1, 1)] * dims)])
    expected = module(torch.as_tensor(x)).detach().numpy()
    got = ref.conv(padded, canonical, module.bias.detach().numpy(), stride=2, groups=2)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_keras_and_torch_transposed_layouts_agree(rng) -> None:
    """One transposed kernel stored both ways: Keras ``(kh, kw, out, in)``, PyTorch
    ``(in, out, kh, kw)``; no spatial flip between them."""
    torch_stored = rng.standard_normal((4, 5, 3, 2))
    keras_stored = torch_stored.transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(
        layouts.to_canonical(keras_stored, "HWOI"), layouts.to_canonical(torch_stored, "IOHW")
    )


def test_keras_depthwise_matches_torch_grouped_conv(rng) -> None:
    """A Keras depthwise kernel ``(kh, kw, in, M)`` is a PyTorch conv with groups = in whose
    output channel ``c * M + m`` comes from input channel ``c``."""
    in_channels, multiplier = 3, 2
    torch.manual_seed(0)
    module = torch.nn.Conv2d(
        in_channels, in_channels * multiplier, (3, 2), groups=in_channels, bias=False
    ).double()
    weight = module.weight.detach().numpy()  # (in*M, 1, kh, kw)
    keras_stored = weight.reshape(in_channels, multiplier, 3, 2).transpose(2, 3, 0, 1)
    canonical = layouts.to_canonical(keras_stored, "HWIM")
    np.testing.assert_array_equal(canonical, weight)

    x = rng.standard_normal((1, in_channels, 6, 5))
    expected = module(torch.as_tensor(x)).detach().numpy()
    got = ref.conv(x, canonical, groups=in_channels)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# every layout in the table


def _canonical_index(layout: str, native_index: dict[str, int], dims: dict[str, int], groups: int):
    """Where a native element lands in canonical layout, from the axis letters' meaning."""
    spatial = tuple(native_index[a] for a in layouts.SPATIAL if a in layout)
    if "M" in layout:  # depthwise: output channel c * M + m, one input channel per group
        return (native_index["I"] * dims["M"] + native_index["M"], 0, *spatial)
    if "O" not in layout:  # vectors and tables stay as they are; a broadcast N axis goes
        return tuple(native_index[a] for a in layout if a != "N")
    out, inp = native_index["O"], native_index["I"]
    if layouts.LAYOUTS[layout].grouped_axis == "O" and groups > 1:
        in_per_group = dims["I"] // groups
        group, inp = divmod(inp, in_per_group)
        out += group * dims["O"]  # stored O counts outputs per group
    return (out, inp, *spatial)


LETTER_LAYOUTS = sorted(layout for layout in layouts.LAYOUTS if layouts.gate_axis(layout) is None)
"""Layouts of one letter per axis (the recurrent ones with a gate axis: test_recurrent_layouts)."""


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", LETTER_LAYOUTS)
def test_every_layout_maps_each_element_by_its_axis_letters(layout, groups) -> None:
    shape = _native_shape(layout, groups)
    dims = dict(zip(layout, shape, strict=True))
    native = np.arange(np.prod(shape)).reshape(shape)
    canonical = layouts.to_canonical(native, layout, groups=groups)

    assert canonical.shape == layouts.canonical_shape(shape, layout, groups=groups)
    assert canonical.ndim == len(layouts.canonical_layout(layout))
    assert layouts.LAYOUTS[layout].canonical == layouts.canonical_layout(layout)
    np.testing.assert_array_equal(np.sort(canonical, axis=None), native.ravel())
    for index in itertools.product(*(range(n) for n in shape)):
        named = dict(zip(layout, index, strict=True))
        target = _canonical_index(layout, named, dims, groups)
        assert canonical[target] == native[index], (layout, index, target)


@pytest.mark.parametrize("layout", LETTER_LAYOUTS)
def test_canonical_shape_agrees_with_to_canonical(layout) -> None:
    for groups in (1, 2, 3):
        shape = _native_shape(layout, groups)
        converted = layouts.to_canonical(np.zeros(shape, dtype=np.float32), layout, groups)
        assert layouts.canonical_shape(shape, layout, groups) == converted.shape


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("HWIO", "OIHW"),
        ("DHWOI", "OIDHW"),
        ("IOW", "OIW"),
        ("IO", "OI"),
        ("HWIM", "OIHW"),
        ("WIM", "OIW"),
        ("C", "C"),
        ("NC", "C"),
        ("VE", "VE"),
    ],
)
def test_canonical_layout_strings(layout, expected) -> None:
    assert layouts.canonical_layout(layout) == expected


def test_broadcast_axis_must_have_size_one() -> None:
    with pytest.raises(ValueError, match="N axis must have size 1"):
        layouts.to_canonical(np.zeros((2, 5)), "NC")
    with pytest.raises(ValueError, match="N axis must have size 1"):
        layouts.canonical_shape((2, 5), "NC")


@pytest.mark.parametrize("layout", ["XYZ", "hwio", "WHIO", ""])
def test_unknown_layout_raises_value_error(layout) -> None:
    array = np.zeros((2,) * max(len(layout), 1))
    with pytest.raises(ValueError, match="unknown native layout"):
        layouts.to_canonical(array, layout)
    with pytest.raises(ValueError, match="unknown native layout"):
        layouts.canonical_shape(array.shape, layout)


def test_wrong_rank_raises_value_error() -> None:
    with pytest.raises(ValueError, match="4-D"):
        layouts.to_canonical(np.zeros((3, 3, 2)), "HWIO")
    with pytest.raises(ValueError, match="4-D"):
        layouts.canonical_shape((3, 3, 2), "HWIO")


def test_groups_that_do_not_divide_input_channels_raise_value_error() -> None:
    with pytest.raises(ValueError, match="groups"):
        layouts.to_canonical(np.zeros((3, 2, 3, 3)), "IOHW", groups=2)
    with pytest.raises(ValueError, match="groups"):
        layouts.canonical_shape((3, 2, 3, 3), "IOHW", groups=2)
