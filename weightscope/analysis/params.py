"""Parameter verification (``weightscope params``): each layer's count from its stored tensors
next to the count its configuration implies by formula, every disagreement with its reason, and
the totals the way Keras counts them (and the way PyTorch's ``parameters()`` does).

The formulas use what the layer's configuration gives and take the rest from the stored tensors,
saying which: a Keras config records ``filters``, ``kernel_size``, ``use_bias``, ``groups`` and
``depth_multiplier`` but never the number of input channels, so for Keras layers the input
channels come from the stored kernel and the check verifies the config's other figures against
the stored tensors. PyTorch modules (whole pickled modules, TorchScript, live) record
``in_channels``/``out_channels``/``kernel_size``/``groups`` but not whether a bias was asked
for; ONNX nodes record ``kernel_shape`` and ``group`` only. A layer whose file has no config at
all (state dicts, weights-only Keras files) is checked for internal consistency only (status
``shapes only``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from weightscope.model import NON_TRAINABLE_ROLES, Layer, Model, ParamCounts, Tensor

SCHEMA_VERSION = 1

OK = "ok"
FLAGGED = "flagged"
SHAPES_ONLY = "shapes only"
NO_FORMULA = "no formula"


@dataclass
class LayerParams:
    """One layer's parameter counts and what the check found."""

    name: str
    kind: str
    class_name: str | None
    stored: int
    """Parameters in the stored (counted) tensors: ``Layer.params``."""
    trainable: int
    non_trainable: int
    unknown: int
    formula: int | None = None
    """The count the configuration implies; None where weightscope has no formula (``unknown``
    layers) or the layer lacks what the formula needs."""
    expression: str | None = None
    """The formula with the layer's numbers, e.g. ``32 x 5x5 x 3 + 32``."""
    declared: int | None = None
    """The framework's own figure where the file declares one (no format weightscope reads
    records one today: always None)."""
    config_values: list[str] = field(default_factory=list)
    """Quantities the formula took from the configuration (``filters=32``)."""
    derived: list[str] = field(default_factory=list)
    """Quantities it took from elsewhere, with where from (``in/groups=3 from the stored
    kernel``)."""
    issues: list[str] = field(default_factory=list)
    """Disagreements between configuration, formula and stored tensors, one reason each."""

    @property
    def status(self) -> str:
        if self.issues:
            return FLAGGED
        if self.formula is None:
            return NO_FORMULA
        if not self.config_values:
            return SHAPES_ONLY
        return OK

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "class_name": self.class_name,
            "stored": self.stored,
            "formula": self.formula,
            "expression": self.expression,
            "declared": self.declared,
            "status": self.status,
            "trainable": self.trainable,
            "non_trainable": self.non_trainable,
        }
        if self.unknown:
            data["trainable_unknown"] = self.unknown
        data["config_values"] = list(self.config_values)
        data["derived"] = list(self.derived)
        data["issues"] = list(self.issues)
        return data


@dataclass
class ParamsReport:
    """The result of :func:`verify`."""

    source: str | None
    format: str
    framework: str
    framework_version: str | None
    layers: list[LayerParams]
    counts: ParamCounts
    buffers: int
    """Batch-norm moving statistics: parameters to Keras (non-trainable), buffers to PyTorch."""

    @property
    def pytorch_parameters(self) -> int:
        """What ``sum(p.numel() for p in module.parameters())`` counts: everything but buffers."""
        return self.counts.total - self.buffers

    @property
    def flagged(self) -> list[LayerParams]:
        return [layer for layer in self.layers if layer.issues]

    @property
    def formula_total(self) -> int:
        return sum(layer.formula for layer in self.layers if layer.formula is not None)

    def to_dict(self) -> dict[str, Any]:
        with_formula = [layer for layer in self.layers if layer.formula is not None]
        return {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "format": self.format,
            "framework": self.framework,
            "framework_version": self.framework_version,
            "layers": [layer.to_dict() for layer in self.layers],
            "params": self.counts.to_dict(),
            "formula_total": self.formula_total,
            "formula_layers": len(with_formula),
            "stored_in_formula_layers": sum(layer.stored for layer in with_formula),
            "pytorch_convention": {"parameters": self.pytorch_parameters, "buffers": self.buffers},
            "flagged": [layer.name for layer in self.flagged],
        }


def verify(model: Model) -> ParamsReport:
    """Check every layer's stored parameter count against its configuration (reads shapes and
    configs only, never tensor data)."""
    layers = [check_layer(layer) for layer in model.layers]
    buffers = sum(t.size for _, t in model.tensors() if t.counted and t.role in NON_TRAINABLE_ROLES)
    return ParamsReport(
        source=None if model.source is None else str(model.source),
        format=model.format,
        framework=model.framework,
        framework_version=model.framework_version,
        layers=layers,
        counts=model.params,
        buffers=buffers,
    )


def check_layer(layer: Layer) -> LayerParams:
    counts = layer.param_counts
    result = LayerParams(
        layer.name,
        layer.kind,
        layer.class_name,
        counts.total,
        counts.trainable,
        counts.non_trainable,
        counts.unknown,
    )
    checker = FORMULAS.get(layer.kind)
    if checker is None:
        return result
    check = _Check(layer, result)
    checker(check)
    check.finish()
    return result


# ---------------------------------------------------------------------------------------------
# reading a layer's config


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ints(value: Any, rank: int) -> tuple[int, ...] | None:
    """A per-axis value: an int for every axis, or a list of ``rank`` ints."""
    single = _int(value)
    if single is not None:
        return (single,) * rank
    if isinstance(value, (list, tuple)) and len(value) == rank:
        items = [_int(v) for v in value]
        if all(v is not None for v in items):
            return tuple(v for v in items if v is not None)
    return None


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


class _Check:
    """Collects, for one layer, what the config gave, what was taken from elsewhere, and the
    disagreements."""

    def __init__(self, layer: Layer, result: LayerParams) -> None:
        self.layer = layer
        self.result = result
        self.convention = layer.convention
        self.keys = self.convention.config_keys
        self.covered: set[str] = set()
        """Roles the formula accounts for."""

    def raw(self, name: str) -> tuple[str | None, Any]:
        key = self.keys.get(name)
        if key is None:
            return None, None
        return key, self.layer.config.get(key)

    def config_int(self, name: str) -> int | None:
        key, value = self.raw(name)
        number = _int(value)
        if number is not None:
            self.result.config_values.append(f"{key}={number}")
        return number

    def config_bool(self, name: str) -> bool | None:
        key, value = self.raw(name)
        if isinstance(value, bool):
            self.result.config_values.append(f"{key}={value}")
            return value
        return None

    def config_ints(self, name: str, rank: int) -> tuple[int, ...] | None:
        key, value = self.raw(name)
        numbers = _ints(value, rank)
        if numbers is not None:
            self.result.config_values.append(f"{key}={list(numbers)}")
        return numbers

    def config_or_stored(
        self, name: str, stored: int, derived: str, mismatch: Callable[[int], str]
    ) -> int:
        """The config's value of ``name``, with an issue (``mismatch(value)``) when it differs
        from the ``stored`` one; ``stored`` when the config does not say (``derived`` records
        where the number came from)."""
        value = self.config_int(name)
        if value is None:
            self.derive(derived)
            return stored
        if value != stored:
            self.issue(mismatch(value))
        return value

    def derive(self, text: str) -> None:
        self.result.derived.append(text)

    def issue(self, text: str) -> None:
        self.result.issues.append(text)

    def tensor(self, role: str) -> Tensor | None:
        self.covered.add(role)
        for tensor in self.layer.tensors:
            if tensor.role == role:
                return tensor
        return None

    def canonical(self, role: str) -> tuple[Tensor | None, tuple[int, ...] | None]:
        tensor = self.tensor(role)
        if tensor is None:
            self.issue(f"no {role} is stored")
            return None, None
        if tensor.canonical_shape is None:
            self.issue(f"the stored {role} {tensor.native_shape} has no canonical form")
            return tensor, None
        return tensor, tensor.canonical_shape

    def use_bias(self, out: int, what: str) -> bool:
        """Whether the formula counts a bias, and checks of the stored one against ``out``."""
        bias = self.tensor("bias")
        use_bias = self.config_bool("use_bias")
        if use_bias is None:
            use_bias = bias is not None
            self.derive(self.convention.bias_source)
        elif use_bias and bias is None:
            self.issue("use_bias=True but no bias is stored")
        elif not use_bias and bias is not None:
            self.issue("bias stored but use_bias=False")
        if bias is not None and bias.size != out:
            self.issue(f"the bias holds {bias.size} values for {out} {what}")
        return use_bias

    def set_formula(self, value: int, expression: str) -> None:
        self.result.formula = value
        self.result.expression = expression

    def finish(self) -> None:
        result = self.result
        scales = [t for t in self.layer.tensors if t.counted and t.is_quantization_parameter]
        if result.formula is not None:
            for tensor in scales:  # stored apart (ONNX): floating point, so parameters
                result.formula += tensor.size
                result.expression = f"{result.expression} + {tensor.size:,} ({tensor.role})"
        self.covered.update(t.role for t in scales)
        for tensor in self.layer.tensors:
            if tensor.counted and tensor.role not in self.covered:
                self.issue(
                    f"stored {tensor.role} ({tensor.size:,}) is not part of a {self.layer.kind}"
                )
        if result.formula is None:
            return
        shared = [t for t in self.layer.tensors if t.role in self.covered and t.shared_with]
        for tensor in shared:  # a tied tensor is counted where it first appears
            result.formula -= tensor.size
            result.expression = (
                f"{result.expression} - {tensor.size:,} ({tensor.role} shared with "
                f"{tensor.shared_with}, counted there)"
            )
        if result.formula != result.stored and not result.issues:
            self.issue(
                f"the formula gives {result.formula:,} but the stored tensors hold "
                f"{result.stored:,}"
            )


# ---------------------------------------------------------------------------------------------
# formulas per kind


def _conv(check: _Check) -> None:
    """Ordinary, grouped and (outside Keras) depthwise convolutions, and transposed ones: the
    canonical kernel is ``(out, in/groups, *k)`` from the layer's point of view in both cases,
    so the count is ``out x in/groups x k (+ out)``."""
    kernel, shape = check.canonical("kernel")
    if kernel is None or shape is None:
        return
    transposed = check.layer.kind.is_transposed
    out_stored, per_group_stored, *k_stored = shape
    rank = len(k_stored)
    convention = check.convention
    filters_word = convention.out_channels_word

    def filters_differ(said: int) -> str:
        key = check.keys["out"]  # present whenever the config gave a value
        told = f"{said} filters" if key == "filters" else f"{key}={said}"
        return f"config says {told} but the kernel holds {out_stored}"

    out = check.config_or_stored(
        "out", out_stored, f"out={out_stored} from the stored kernel", filters_differ
    )

    k = check.config_ints("kernel", rank)
    if k is None:
        k = tuple(k_stored)
        check.derive(f"kernel size {_dims(k)} from the stored kernel")
    elif list(k) != k_stored:
        check.issue(
            f"config says {check.keys['kernel']}={list(k)} but the stored kernel is "
            f"{_dims(k_stored)}"
        )

    groups = check.config_int("groups")
    if groups is None:
        groups = check.layer.groups
        check.derive(f"groups={groups} (not in the config)")
    if groups < 1:
        check.issue(f"groups={groups}")
        return
    if out % groups:
        check.issue(f"{out} {filters_word} cannot be split into {groups} groups")

    in_channels = check.config_int("in")
    if in_channels is None:
        per_group = per_group_stored
        in_channels = per_group * groups
        where = "stored kernel"
        if not convention.records_input_channels:
            where += f" ({convention.display_name} configs do not record input channels)"
        check.derive(
            f"in/groups={per_group} from the {where}"
            if groups > 1
            else f"in_channels={per_group} from the {where}"
        )
    else:
        if in_channels % groups:
            check.issue(f"in_channels={in_channels} cannot be split into {groups} groups")
        per_group = in_channels // groups
        if per_group != per_group_stored:
            check.issue(
                f"config says in_channels={in_channels} in {groups} group(s) ({per_group} per "
                f"group) but the kernel holds {per_group_stored} per group"
            )

    use_bias = check.use_bias(out, filters_word)
    weights = out * per_group * math.prod(k)
    if transposed:  # PyTorch's and ONNX's own order: (in, out/groups, *k)
        per_group_out = f"{out}/{groups}" if groups > 1 else f"{out}"
        text = f"{in_channels} x {per_group_out} x {_dims(k)}"
    elif groups > 1:
        text = f"{out} x {_dims(k)} x {in_channels}/{groups}"
    else:
        text = f"{out} x {_dims(k)} x {in_channels}"
    check.set_formula(weights + (out if use_bias else 0), text + (f" + {out}" if use_bias else ""))


def _keras_depthwise_shape(check: _Check, role: str) -> tuple[Tensor | None, int, int, int]:
    """A Keras depthwise kernel ``(*k, in, M)``: the tensor, in, M and the stored kernel size
    as the number of taps."""
    tensor = check.tensor(role)
    if tensor is None:
        check.issue(f"no {role} is stored")
        return None, 0, 0, 0
    if not (tensor.native_layout or "").endswith("IM"):
        check.issue(f"the stored {role} {tensor.native_shape} is not a depthwise kernel")
        return None, 0, 0, 0
    *k, channels, multiplier = tensor.native_shape
    return tensor, channels, multiplier, math.prod(k)


def _depthwise(check: _Check) -> None:
    if not check.convention.depthwise_has_multiplier:
        _conv(check)  # PyTorch / ONNX: a conv with groups == in_channels
        return
    kernel, channels, multiplier_stored, _ = _keras_depthwise_shape(check, "kernel")
    if kernel is None:
        return
    k_stored = list(kernel.native_shape[:-2])
    check.derive(
        f"in_channels={channels} from the stored kernel (Keras configs do not record them)"
    )
    multiplier = check.config_or_stored(
        "multiplier",
        multiplier_stored,
        f"depth_multiplier={multiplier_stored} from the stored kernel",
        lambda said: (
            f"config says depth_multiplier={said} but the kernel holds "
            f"{multiplier_stored} per input channel"
        ),
    )
    k = _kernel_size(check, k_stored)
    out = channels * multiplier
    use_bias = check.use_bias(out, "output channels")
    check.set_formula(
        out * math.prod(k) + (out if use_bias else 0),
        f"{channels} x {multiplier} x {_dims(k)}" + (f" + {out}" if use_bias else ""),
    )


def _kernel_size(check: _Check, k_stored: list[int]) -> tuple[int, ...]:
    k = check.config_ints("kernel", len(k_stored))
    if k is None:
        check.derive(f"kernel size {_dims(k_stored)} from the stored kernel")
        return tuple(k_stored)
    if list(k) != k_stored:
        check.issue(f"config says kernel_size={list(k)} but the stored kernel is {_dims(k_stored)}")
    return k


def _separable(check: _Check) -> None:
    depthwise, channels, multiplier_stored, _ = _keras_depthwise_shape(check, "depthwise_kernel")
    _, shape = check.canonical("pointwise_kernel")
    if depthwise is None or shape is None:
        return
    k_stored = list(depthwise.native_shape[:-2])
    check.derive(
        f"in_channels={channels} from the stored depthwise kernel (Keras configs do not "
        "record them)"
    )
    multiplier = check.config_or_stored(
        "multiplier",
        multiplier_stored,
        f"depth_multiplier={multiplier_stored} from the stored depthwise kernel",
        lambda said: (
            f"config says depth_multiplier={said} but the depthwise kernel holds "
            f"{multiplier_stored} per input channel"
        ),
    )
    k = _kernel_size(check, k_stored)
    filters_stored, reads = shape[0], shape[1]
    filters = check.config_or_stored(
        "out",
        filters_stored,
        f"filters={filters_stored} from the stored pointwise kernel",
        lambda said: f"config says {said} filters but the pointwise kernel holds {filters_stored}",
    )
    middle = channels * multiplier
    if reads != channels * multiplier_stored:
        check.issue(
            f"the pointwise kernel reads {reads} channels but the depthwise step makes "
            f"{channels * multiplier_stored}"
        )
    use_bias = check.use_bias(filters, "filters")
    check.set_formula(
        middle * math.prod(k) + middle * filters + (filters if use_bias else 0),
        f"{channels} x {multiplier} x {_dims(k)} + {middle} x {filters}"
        + (f" + {filters}" if use_bias else ""),
    )


def _dense(check: _Check) -> None:
    _, shape = check.canonical("kernel")
    if shape is None:
        return
    out_stored, in_stored = shape
    out = check.config_or_stored(
        "units",
        out_stored,
        f"units={out_stored} from the stored kernel",
        lambda said: f"config says {check.keys['units']}={said} but the kernel holds {out_stored}",
    )
    convention = check.convention
    where = (
        ""
        if convention.records_input_channels
        else f" ({convention.display_name} configs do not record it)"
    )
    in_features = check.config_or_stored(
        "in_features",
        in_stored,
        f"in={in_stored} from the stored kernel{where}",
        lambda said: f"config says in_features={said} but the kernel reads {in_stored}",
    )
    use_bias = check.use_bias(out, "units")
    check.set_formula(
        in_features * out + (out if use_bias else 0),
        f"{in_features} x {out}" + (f" + {out}" if use_bias else ""),
    )


def _recurrent(check: _Check) -> None:
    """One direction of one layer of an LSTM, GRU or simple RNN: per gate, a kernel row block
    ``(units, in)``, a recurrent one ``(units, state)`` and the stored biases; an LSTM's
    projection on top."""
    _, shape = check.canonical("kernel")
    _, recurrent = check.canonical("recurrent_kernel")
    if shape is None or recurrent is None:
        return
    gates, units_stored, inputs = shape
    config = check.layer.config
    key = next((k for k in ("units", "hidden_size") if k in config), None)
    units = _int(config.get(key)) if key else None
    if units is None:
        units = units_stored
        check.derive(f"units={units_stored} from the stored kernel")
    else:
        check.result.config_values.append(f"{key}={units}")
        if units != units_stored:
            check.issue(f"config says {key}={units} but the kernel holds {units_stored} units")
    if recurrent[:2] != (gates, units):
        check.issue(f"the recurrent kernel {recurrent} does not match the kernel {shape}")
    state = recurrent[2]
    biases = [role for role in ("bias", "recurrent_bias") if check.tensor(role) is not None]
    for role in biases:
        bias = check.tensor(role)
        if bias is not None and bias.size != gates * units:
            check.issue(f"the {role} holds {bias.size} values for {gates} x {units}")
    per_gate = units * (inputs + state) + units * len(biases)
    expression = f"{gates} x ({units} x ({inputs} + {state})"
    expression += f" + {len(biases)} x {units})" if biases else ")"
    total = gates * per_gate
    for role in ("projection", "peephole"):
        extra = check.tensor(role)
        if extra is not None:
            total += extra.size
            expression += f" + {_dims(extra.native_shape)} ({role})"
    check.set_formula(total, expression)


def _vectors(check: _Check, roles: Sequence[str]) -> tuple[dict[str, Tensor], int | None]:
    """The stored vectors among ``roles`` and their common size (issues where they differ)."""
    present = {role: t for role in roles if (t := check.tensor(role)) is not None}
    if not present:
        check.issue("none of " + ", ".join(roles) + " is stored")
        return present, None
    first_role, first = next(iter(present.items()))
    for role, tensor in present.items():
        if tensor.size != first.size:
            check.issue(f"{role} holds {tensor.size} values but {first_role} {first.size}")
    return present, first.size


def _optional(
    check: _Check, present: dict[str, Tensor], role: str, flag: str, default: bool = True
) -> bool:
    """Whether the formula counts the optional ``role``, from the config's ``flag``."""
    said = check.config_bool(flag)
    stored = role in present
    if said is None:
        if check.keys:
            check.derive(f"{role} {'stored' if stored else 'absent'} (not in the config)")
        return stored
    key = check.keys[flag]
    if said and not stored:
        check.issue(f"{key}=True but no {role} is stored")
    elif not said and stored:
        check.issue(f"{role} stored but {key}=False")
    return said


def _batch_norm(check: _Check) -> None:
    present, size = _vectors(check, ("gamma", "beta", "moving_mean", "moving_variance"))
    if size is None:
        return
    channels = check.config_or_stored(
        "features",
        size,
        f"channels={size} from the stored vectors",
        lambda said: f"config says num_features={said} but the stored vectors hold {size}",
    )
    if check.convention.batch_norm_has_affine:
        affine = _optional(check, present, "gamma", "affine")
        scale = center = affine
        if affine and "beta" not in present:
            check.issue("affine=True but no beta is stored")
        elif not affine and "beta" in present:
            check.issue("beta stored but affine=False")
        running = check.config_bool("running")
        if running is None:
            running = "moving_mean" in present
    else:
        scale = _optional(check, present, "gamma", "scale")
        center = _optional(check, present, "beta", "center")
        running = True
    for role in ("moving_mean", "moving_variance"):
        if running and role not in present:
            check.issue(f"no {role} is stored")
        elif not running and role in present:
            check.issue(f"{role} stored but track_running_stats=False")
        if role in present and present[role].trainable is True:
            check.issue(f"{role} is marked trainable (moving statistics never are)")
    learned = int(scale) + int(center)
    stats = 2 if running else 0
    parts = []
    if learned:
        names = ", ".join(n for n, on in (("gamma", scale), ("beta", center)) if on)
        parts.append(f"{learned} x {channels} ({names})")
    if stats:
        parts.append(f"2 x {channels} (moving mean, variance)")
    check.set_formula((learned + stats) * channels, " + ".join(parts) or "0")


def _layer_norm(check: _Check) -> None:
    present, size = _vectors(check, ("gamma", "beta"))
    if size is None:
        return
    normalized: tuple[int, ...] | None = None
    key, value = check.raw("normalized")
    if isinstance(value, (list, tuple)):
        normalized = _ints(value, len(value))
    if normalized is not None:
        check.result.config_values.append(f"{key}={list(normalized)}")
        width = math.prod(normalized)
        if width != size:
            check.issue(f"config says {key}={list(normalized)} but gamma/beta hold {size}")
    else:
        width = size
        check.derive(f"width={size} from the stored vectors")
    if check.convention.layer_norm_flags:
        rms = check.config_bool("rms_scaling") or False
        scale = _optional(check, present, "gamma", "scale") or rms
        center = _optional(check, present, "beta", "center") and not rms
    else:
        scale, center = "gamma" in present, "beta" in present
        if check.convention.layer_norm_affine_unread:
            check.derive("gamma and beta from the stored tensors (elementwise_affine not read)")
    count = int(scale) + int(center)
    names = ", ".join(n for n, on in (("gamma", scale), ("beta", center)) if on)
    check.set_formula(count * width, f"{count} x {width} ({names})" if count else "0")


def _embedding(check: _Check) -> None:
    _, shape = check.canonical("embeddings")
    if shape is None:
        return
    vocab_stored, width_stored = shape
    vocab = check.config_or_stored(
        "vocab",
        vocab_stored,
        f"vocabulary={vocab_stored} from the stored table",
        lambda said: (
            f"config says {check.keys['vocab']}={said} but the table has {vocab_stored} rows"
        ),
    )
    width = check.config_or_stored(
        "width",
        width_stored,
        f"width={width_stored} from the stored table",
        lambda said: (
            f"config says {check.keys['width']}={said} but the table has {width_stored} columns"
        ),
    )
    check.set_formula(vocab * width, f"{vocab} x {width}")


FORMULAS = {
    **{f"conv{d}d": _conv for d in (1, 2, 3)},
    **{f"conv_transpose{d}d": _conv for d in (1, 2, 3)},
    **{f"depthwise_conv{d}d": _depthwise for d in (1, 2, 3)},
    "separable_conv1d": _separable,
    "separable_conv2d": _separable,
    "dense": _dense,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "embedding": _embedding,
    "lstm": _recurrent,
    "gru": _recurrent,
    "simple_rnn": _recurrent,
}
