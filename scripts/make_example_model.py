"""Train and save the bundled example model: a small CNN on scikit-learn's 8x8 digits, as a
Keras ``.h5``, and the same trained weights as a PyTorch state dict (``.pt``) and an ONNX file.

The Keras model is trained; the PyTorch module mirrors it layer for layer (read from the Keras
model: filters, kernels, padding, pooling, batch-norm epsilon), with module names equal to the
Keras layer names, gets its weights converted from the Keras layouts (HWIO -> OIHW, depthwise
HWIM -> (in*M, 1, kh, kw), dense IO -> OI), must reproduce Keras' predictions on the test set to
1e-5, and is exported to ONNX (TorchScript exporter, opset 17, batch norm kept as a node); the
ONNX file must reproduce them too, in onnxruntime.

Deterministic (fixed seeds, deterministic TensorFlow ops, one thread; no time stamps in the
files): running it again writes byte-identical files. Takes a few seconds on a CPU.

    python scripts/make_example_model.py          # weightscope/examples/digits_cnn.{h5,pt,onnx}
    python scripts/make_example_model.py OUT.h5   # OUT.h5 and, beside it, OUT.pt and OUT.onnx
    python scripts/make_example_model.py DIR/     # DIR/digits_cnn.{h5,pt,onnx}
    python scripts/make_example_model.py --export-only [OUT.h5]   # .pt and .onnx from the .h5

Needs the test dependencies (tensorflow-cpu, scikit-learn, torch, onnx, onnxruntime);
weightscope itself never does.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["PYTHONHASHSEED"] = "0"

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "weightscope" / "examples" / "digits_cnn.h5"
SEED = 0
OPSET = 17
TOLERANCE = 1e-5


def build() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="digit"),
            layers.Conv2D(8, 3, padding="same", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dwconv2"),
            layers.Conv2D(16, 1, name="pwconv2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def outputs(out: Path | None) -> tuple[Path, Path, Path]:
    """The .h5, .pt and .onnx paths: the bundled ones, ``OUT.h5`` and its siblings, or
    ``digits_cnn.*`` in a directory (one that exists, or a name without a suffix)."""
    out = out or OUT
    if out.is_dir() or not out.suffix:
        out = out / OUT.name
    return out, out.with_suffix(".pt"), out.with_suffix(".onnx")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="OUT.h5 or a directory")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="train nothing: write the .pt and .onnx from the existing .h5 (OUT or the bundled)",
    )
    args = parser.parse_args(argv)
    out, out_pt, out_onnx = outputs(args.out)
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
    )
    if args.export_only:
        model = keras.models.load_model(out, compile=False)
    else:
        model = build()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, epochs=15, batch_size=64, shuffle=True, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(out)
        checksum = sum(float(np.sum(w)) for w in model.get_weights())
        print(f"test accuracy {accuracy:.3f}; wrote {out} ({out.stat().st_size:,} bytes)")
        print(f"params {model.count_params():,}, checksum {checksum:.6f}")

    expected = model.predict(x_test, verbose=0)
    export_torch_and_onnx(model, x_test, expected, out_pt, out_onnx)
    return 0


# ---------------------------------------------------------------------------------------------
# the same weights as a PyTorch state dict and an ONNX file


def _conv_padding(layer: keras.layers.Layer) -> int:
    """PyTorch padding that equals the Keras layer's (stride 1, odd kernels)."""
    config = layer.get_config()
    kernel = tuple(config["kernel_size"])
    assert tuple(config["strides"]) == (1, 1) and tuple(config["dilation_rate"]) == (1, 1)
    assert config["data_format"] == "channels_last" and config["activation"] == "linear"
    if config["padding"] == "valid":
        return 0
    assert config["padding"] == "same" and kernel[0] == kernel[1] and kernel[0] % 2 == 1
    return kernel[0] // 2


def torch_module(model: keras.Model):  # type: ignore[no-untyped-def]
    """A ``torch.nn.Module`` mirroring the Keras model, module names = Keras layer names. It
    takes NCHW input and turns to NHWC before flattening, as Keras flattens, so that the dense
    kernel ports without permuting its rows."""
    import torch
    from torch import nn

    layer = model.get_layer
    names = [layer.name for layer in model.layers]
    assert names == [
        "conv1", "bn1", "relu1", "dwconv2", "pwconv2", "relu2", "pool", "flatten", "logits"
    ], names  # fmt: skip
    conv1, bn1, dwconv2, pwconv2 = layer("conv1"), layer("bn1"), layer("dwconv2"), layer("pwconv2")
    pool, logits = layer("pool").get_config(), layer("logits")
    in_channels = model.input_shape[-1]
    multiplier = dwconv2.get_config()["depth_multiplier"]
    assert pool["padding"] == "valid" and pool["data_format"] == "channels_last"
    assert bn1.get_config()["axis"] in (-1, [3], 3) and bn1.center and bn1.scale

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(
                in_channels, conv1.filters, conv1.kernel_size, padding=_conv_padding(conv1)
            )
            self.bn1 = nn.BatchNorm2d(conv1.filters, eps=bn1.epsilon)
            self.relu1 = nn.ReLU()
            self.dwconv2 = nn.Conv2d(
                conv1.filters,
                conv1.filters * multiplier,
                dwconv2.kernel_size,
                padding=_conv_padding(dwconv2),
                groups=conv1.filters,
            )
            self.pwconv2 = nn.Conv2d(
                conv1.filters * multiplier,
                pwconv2.filters,
                pwconv2.kernel_size,
                padding=_conv_padding(pwconv2),
            )
            self.relu2 = nn.ReLU()
            self.pool = nn.MaxPool2d(tuple(pool["pool_size"]), stride=tuple(pool["strides"]))
            self.flatten = nn.Flatten()
            self.logits = nn.Linear(logits.kernel.shape[0], logits.units)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu1(self.bn1(self.conv1(x)))
            x = self.relu2(self.pwconv2(self.dwconv2(x)))
            x = self.pool(x).permute(0, 2, 3, 1)  # NHWC, the order Keras flattens in
            return self.logits(self.flatten(x))

    module = DigitsCNN()
    weights = {f"{lay.name}/{w.name}": np.asarray(w.numpy()) for lay in model.layers
               for w in lay.weights}  # fmt: skip

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    kernel = weights["dwconv2/kernel"]  # (kh, kw, in, M) -> (in*M, 1, kh, kw)
    depthwise = kernel.transpose(2, 3, 0, 1).reshape(-1, 1, *kernel.shape[:2])
    state = {
        "conv1.weight": weights["conv1/kernel"].transpose(3, 2, 0, 1),  # HWIO -> OIHW
        "conv1.bias": weights["conv1/bias"],
        "bn1.weight": weights["bn1/gamma"],
        "bn1.bias": weights["bn1/beta"],
        "bn1.running_mean": weights["bn1/moving_mean"],
        "bn1.running_var": weights["bn1/moving_variance"],
        "dwconv2.weight": depthwise,
        "dwconv2.bias": weights["dwconv2/bias"],
        "pwconv2.weight": weights["pwconv2/kernel"].transpose(3, 2, 0, 1),
        "pwconv2.bias": weights["pwconv2/bias"],
        "logits.weight": weights["logits/kernel"].T,  # IO -> OI
        "logits.bias": weights["logits/bias"],
    }
    assert len(state) == len(weights), sorted(weights)
    # strict: every parameter and buffer set, num_batches_tracked stays 0 (it is not used in eval)
    state["bn1.num_batches_tracked"] = module.bn1.num_batches_tracked
    module.load_state_dict(
        {k: tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}, strict=True
    )
    return module.eval()


def export_torch_and_onnx(
    model: keras.Model, images: np.ndarray, expected: np.ndarray, out_pt: Path, out_onnx: Path
) -> None:
    import onnx
    import onnxruntime
    import torch

    torch.manual_seed(SEED)
    module = torch_module(model)
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        got = module(nchw).numpy()
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)
    worst = float(np.max(np.abs(got - expected)))

    torch.save(module.state_dict(), out_pt)
    print(f"PyTorch matches Keras (max |diff| {worst:.1e}); wrote {out_pt} "
          f"({out_pt.stat().st_size:,} bytes)")  # fmt: skip

    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, on purpose here
        warnings.simplefilter("ignore", DeprecationWarning)
        _export_onnx(torch, module, nchw[:1], model.inputs[0].name, out_onnx)
    proto = onnx.load(out_onnx)
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    assert "BatchNormalization" in ops, ops
    session = onnxruntime.InferenceSession(str(out_onnx), providers=["CPUExecutionProvider"])
    (from_onnx,) = session.run(None, {model.inputs[0].name: nchw.numpy()})
    np.testing.assert_allclose(from_onnx, expected, rtol=TOLERANCE, atol=TOLERANCE)
    worst = float(np.max(np.abs(from_onnx - expected)))
    print(f"ONNX ({', '.join(ops)}) matches Keras (max |diff| {worst:.1e}); wrote {out_onnx} "
          f"({out_onnx.stat().st_size:,} bytes)")  # fmt: skip


def _export_onnx(torch, module, example, input_name: str, out: Path) -> None:  # type: ignore[no-untyped-def]
    torch.onnx.export(
        module,
        (example,),
        out,
        dynamo=False,
        opset_version=OPSET,
        input_names=[input_name],
        output_names=["logits"],
        dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=False,  # folding would fuse bn1 into conv1: keep it a node
        external_data=False,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
