"""Benchmark ``weightscope inspect`` on a ~553 MB (528 MiB) VGG16 exported to ONNX (138 M params),
once with its initializers inline and once saved with external data.

Goals (from the ONNX issue, "Speed and memory"), all measured in this one run, page cache warm:

* wall time <= 0.35x a process that runs ``onnx.load(path)`` and then
  ``numpy_helper.to_array`` with mean and std of every initializer (``import onnx`` included, as a
  user would pay it);
* peak resident memory <= 0.5x that baseline's (which peaks near 1.35 GB: the parsed protobuf
  plus a copy of every array);
* with the same model saved with external data (one ``.onnx.data`` file), peak RSS <= 250 MB;
* no framework imported: ``weightscope.cli.app.main(["inspect", path])`` run in a fresh interpreter,
  which then reports whether ``torch``, ``tensorflow``, ``onnxruntime``, or ``onnx`` itself (with
  the ``google.protobuf`` and ``ml_dtypes`` it would bring) is in ``sys.modules``.

Measurement as in ``bench_inspect_torch_vgg16.py`` (see ``_measure.py``): every contender is a
child process, wall time spawn..reap, peak RSS from ``os.wait4``. The benchmark process itself
imports neither torch nor onnx: a child builds VGG16 (configuration D) with ``torch.nn`` (seeded,
torchvision's module tree and weight initialisation; biases small and random rather than zero, so
that the exporter keeps all 32 initializers apart), exports it with the TorchScript exporter
(``torch.onnx.export(..., dynamo=False, opset_version=17)``) and re-saves it with onnx as external
data, once, into ``benchmarks/.cache/``.

    python benchmarks/bench_inspect_onnx_vgg16.py [--reps 5]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _measure import (
    CACHE,
    IMPORT_CHECK,
    Runs,
    measure,
    print_context,
    print_goals,
    print_table,
    run_once,
    warm_page_cache,
)

VGG16_FILE = CACHE / "vgg16.onnx"
VGG16_EXTERNAL_FILE = CACHE / "vgg16_external.onnx"
EXTERNAL_DATA_NAME = "vgg16_external.onnx.data"  # next to VGG16_EXTERNAL_FILE
VGG16_PARAMS = 138_357_544
VGG16_LAYERS = 16  # 13 convolutions, 3 dense (Gemm)

GOAL_VS_ONNX = 0.35
GOAL_RSS_VS_ONNX = 0.5
GOAL_EXTERNAL_PEAK_RSS_MB = 250.0

# Modules whose import would mean a framework was pulled in; onnx too (weightscope decodes the
# protobuf itself), and what onnx would bring: protobuf, and ml_dtypes (~0.8 s to import).
FRAMEWORKS = (
    "torch",
    "torchvision",
    "tensorflow",
    "keras",
    "onnxruntime",
    "onnx",
    "google.protobuf",
    "ml_dtypes",
)

# torchvision.models.vgg16 without torchvision (same module tree and weights init), exported
# to ONNX with initializers inline, then loaded with onnx and saved again with external data.
# argv: inline model, external-data model, its data file's location (relative to the model).
GENERATE = r"""
import os, sys, warnings
import torch
from torch import nn

torch.manual_seed(0)
CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for v in CFG_D:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 1000),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # torchvision zeroes biases; the exporter would then merge the equal ones into
                # 6 shared initializers. Small random biases, as after training, keep all 32.
                nn.init.normal_(m.bias, 0, 0.01)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


inline, external, location = sys.argv[1:4]
model = VGG()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated (on purpose here)
    torch.onnx.export(
        model.eval(), (torch.randn(1, 3, 224, 224),), inline, dynamo=False, opset_version=17
    )

import onnx

m = onnx.load(inline)
names = [t.name for t in m.graph.initializer]
convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
expected = [f"features.{i}.{r}" for i in convs for r in ("weight", "bias")]
expected += [f"classifier.{i}.{r}" for i in (0, 3, 6) for r in ("weight", "bias")]
assert sorted(names) == sorted(expected), names
params = sum(p.numel() for p in model.parameters())
stored = 0
for t in m.graph.initializer:
    count = 1
    for d in t.dims:
        count *= d
    stored += count
assert stored == params, (stored, params)
data = os.path.join(os.path.dirname(external), location)
if os.path.exists(data):
    os.remove(data)  # onnx appends to an existing data file
onnx.save_model(
    m, external, save_as_external_data=True, all_tensors_to_one_file=True, location=location
)
print(params)
"""

# The naive baseline: parse the whole protobuf with onnx (external data pulled in by onnx.load),
# then each initializer as a numpy array, its mean and std.
ONNX_BASELINE = r"""
import json, sys, time
t0 = time.perf_counter()
import onnx
from onnx import numpy_helper
t1 = time.perf_counter()
model = onnx.load(sys.argv[1])
t2 = time.perf_counter()
for initializer in model.graph.initializer:
    array = numpy_helper.to_array(initializer)
    array.mean()
    array.std()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "stats_s": t3 - t2}))
"""

# What `weightscope inspect --json` reports, to make sure the timed runs inspect the whole model.
READ_CHECK = r"""
import contextlib, io, json, sys
from weightscope.cli.app import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["inspect", "--json", sys.argv[1]])
data = json.loads(out.getvalue())
tensors = [t for layer in data["layers"] for t in layer["tensors"]]
print(json.dumps({
    "exit": code,
    "framework": data["framework"],
    "format": data["format"],
    "layers": len(data["layers"]),
    "params": data["params"]["total"],
    "tensors": len(tensors),
    "with_stats": sum(1 for t in tensors if (t.get("stats") or {}).get("mean") is not None),
    "notes": data["notes"],
}))
sys.exit(code)
"""


def generate(inline: Path, external: Path) -> None:
    """Write both seeded VGG16 ONNX files in a child process (atomic renames, data file first)."""
    inline.parent.mkdir(parents=True, exist_ok=True)
    partial_inline = inline.with_suffix(".partial.onnx")
    partial_external = external.with_suffix(".partial.onnx")
    print(
        f"generating {inline} and {external} (VGG16 configuration D with torch.nn, seed 0, "
        "torch.onnx.export opset 17, then onnx.save_model with external data) ...",
        flush=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            GENERATE,
            str(partial_inline),
            str(partial_external),
            EXTERNAL_DATA_NAME,
        ],
        check=True,
    )
    partial_external.replace(external)
    partial_inline.replace(inline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each contender")
    parser.add_argument("--file", type=Path, default=VGG16_FILE, help="ONNX model, data inline")
    parser.add_argument(
        "--external",
        type=Path,
        default=VGG16_EXTERNAL_FILE,
        help="the same model saved with external data",
    )
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    defaults = (args.file, args.external) == (VGG16_FILE, VGG16_EXTERNAL_FILE)
    cached = VGG16_FILE.exists() and VGG16_EXTERNAL_FILE.exists()
    if defaults and not (cached and (CACHE / EXTERNAL_DATA_NAME).exists()):
        generate(VGG16_FILE, VGG16_EXTERNAL_FILE)
    for path in (args.file, args.external):
        if not path.exists():
            parser.error(f"{path} does not exist")
    external_files = [args.external, *external_data_files(args.external)]
    size = args.file.stat().st_size
    external_size = sum(p.stat().st_size for p in external_files)

    def inspect(name: str, path: Path) -> Runs:
        return Runs(name, [sys.executable, "-m", "weightscope", "inspect", str(path)])

    def baseline(name: str, path: Path) -> Runs:
        return Runs(name, [sys.executable, "-c", ONNX_BASELINE, str(path)], reports_json=True)

    onnx_inline = baseline("onnx.load + to_array + mean/std", args.file)
    ws_inline = inspect("weightscope inspect", args.file)
    ws_external = inspect("weightscope inspect, external data", args.external)
    onnx_external = baseline("onnx.load + to_array + mean/std, external data", args.external)
    contenders = [onnx_inline, ws_inline, ws_external, onnx_external]

    load_before = os.getloadavg()[0]
    external_warm_s = sum(warm_page_cache(p) for p in external_files)
    warm_s = measure(args.file, [(runs, args.reps) for runs in contenders])
    load_after = os.getloadavg()[0]

    # Untimed checks, after the timed runs: what was read, and what got imported, for both files.
    checks = {}
    for label, path in (("inline", args.file), ("external", args.external)):
        read = Runs(f"read check ({label})", [sys.executable, "-c", READ_CHECK, str(path)], True)
        run_once(read)
        imported = Runs(
            f"import check ({label})",
            [sys.executable, "-c", IMPORT_CHECK, str(path), ",".join(FRAMEWORKS)],
            True,
        )
        run_once(imported)
        checks[label] = (read.extra[0], imported.extra[0])

    results = goals(onnx_inline, ws_inline, ws_external, checks)
    report(args, size, external_size, warm_s, external_warm_s, contenders, checks, results)
    print(
        f"\n1-minute load average {load_before:.2f} before, {load_after:.2f} after "
        "(other work on the machine slows every contender; runs are interleaved)"
    )
    return 0 if all(ok for *_, ok in results) else 1


def external_data_files(model: Path) -> list[Path]:
    """The data files an external-data model refers to; without importing onnx, the cached
    model's one file if it is there, else every ``*.data`` file beside it named after it."""
    named = model.parent / EXTERNAL_DATA_NAME
    if model == VGG16_EXTERNAL_FILE and named.exists():
        return [named]
    return sorted(model.parent.glob(f"{model.name}*.data"))


def goals(
    baseline: Runs, ws: Runs, ws_external: Runs, checks: dict[str, tuple[dict, dict]]
) -> list[tuple[str, str, bool]]:
    ratio = ws.wall_median / baseline.wall_median
    rss_ratio = ws.peak_rss_mb / baseline.peak_rss_mb
    results = [
        (
            f"wall <= {GOAL_VS_ONNX}x onnx.load + to_array + mean/std (process)",
            f"{ratio:.3f}x",
            ratio <= GOAL_VS_ONNX,
        ),
        (
            f"peak RSS <= {GOAL_RSS_VS_ONNX}x the baseline's ({baseline.peak_rss_mb:.0f} MB)",
            f"{ws.peak_rss_mb:.0f} MB = {rss_ratio:.3f}x",
            rss_ratio <= GOAL_RSS_VS_ONNX,
        ),
        (
            f"external data: peak RSS <= {GOAL_EXTERNAL_PEAK_RSS_MB:.0f} MB",
            f"{ws_external.peak_rss_mb:.0f} MB",
            ws_external.peak_rss_mb <= GOAL_EXTERNAL_PEAK_RSS_MB,
        ),
    ]
    for label, (_, imported) in checks.items():
        frameworks = imported["frameworks"]
        results.append(
            (
                f"{label}: no framework imported (`weightscope.cli.app.main(['inspect', FILE])`, "
                f"then sys.modules: {', '.join(FRAMEWORKS)})",
                "imported: " + (", ".join(frameworks[:3]) if frameworks else "none"),
                not frameworks,
            )
        )
    for label, (read, _) in checks.items():
        read_ok = (
            read["framework"] == "onnx"
            and read["layers"] == VGG16_LAYERS
            and read["params"] == VGG16_PARAMS
            and read["with_stats"] == read["tensors"]
        )
        results.append(
            (
                f"(check) {label}: all read (`--json`): {VGG16_LAYERS} layers, "
                f"{VGG16_PARAMS:,} params, statistics for every tensor",
                f"{read['layers']} layers, {read['params']:,} params, "
                f"stats {read['with_stats']}/{read['tensors']}",
                read_ok,
            )
        )
    return results


def report(
    args: argparse.Namespace,
    size: int,
    external_size: int,
    warm_s: float,
    external_warm_s: float,
    contenders: list[Runs],
    checks: dict[str, tuple[dict, dict]],
    results: list[tuple[str, str, bool]],
) -> None:
    print(
        f"## weightscope inspect on {args.file.name} "
        f"({size / 1e6:.0f} MB = {size / 2**20:.0f} MiB, initializers inline) and "
        f"{args.external.name} (external data, {external_size / 1e6:.0f} MB in all)\n"
    )
    print_context(warm_s)
    print(
        f"- the external-data model and its data file were read once too "
        f"({external_warm_s:.2f} s), before any contender ran"
    )
    read, imported = checks["inline"]
    print(
        f"- weightscope read it as framework {read['framework']}, format {read['format']}; "
        f"`onnx` {'was' if 'onnx' in imported['frameworks'] else 'was not'} imported "
        "(weightscope decodes the protobuf itself)"
    )
    external_notes = checks["external"][0]["notes"]
    if external_notes:
        print(f"- external-data model, weightscope's notes: {'; '.join(external_notes)}")
    print()
    print_table(contenders)
    for baseline in (contenders[0], contenders[3]):
        if not baseline.extra:
            continue

        def median(key: str, runs: Runs = baseline) -> float:
            return statistics.median(e[key] for e in runs.extra)

        print(
            f"\n{baseline.name}, in-process medians (context only): `import onnx` "
            f"{median('import_s'):.2f} s, `onnx.load` {median('load_s'):.2f} s, "
            f"to_array + mean/std {median('stats_s'):.2f} s; its median peak RSS "
            f"{baseline.rss_median_mb:.0f} MB"
        )
    onnx_inline, ws_inline, ws_external, onnx_external = contenders
    print(
        f"\nagainst the fastest baseline run instead of its median: "
        f"{ws_inline.wall_median / min(onnx_inline.wall):.3f}x; external data (information "
        f"only): {ws_external.wall_median / onnx_external.wall_median:.3f}x its own baseline's "
        f"wall, {ws_external.peak_rss_mb / onnx_external.peak_rss_mb:.3f}x its peak RSS"
    )
    print()
    print_goals(results)


if __name__ == "__main__":
    sys.exit(main())
