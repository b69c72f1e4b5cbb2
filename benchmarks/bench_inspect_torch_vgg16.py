"""Benchmark ``weightscope inspect`` on a ~553 MB (528 MiB) PyTorch VGG16 state dict (138 M
params) saved with ``torch.save`` (zip format).

Goals (from issue 3, "Speed and memory"), all measured in this one run, page cache warm:

* wall time <= 0.35x a process that runs ``torch.load(path, weights_only=True)`` and then
  computes mean and std of every tensor (``import torch`` included, as a user would pay it);
* peak resident memory <= 250 MB (the baseline peaks near 790 MB);
* torch never imported: ``weightscope.cli.app.main(["inspect", path])`` run in a fresh interpreter,
  which then reports whether ``torch`` is in ``sys.modules``.

Measurement as in ``bench_inspect_vgg16.py`` (see ``_measure.py``): every contender is a child
process, wall time spawn..reap, peak RSS from ``os.wait4``. The benchmark process itself never
imports torch: the state dict is generated (once, seeded) by a child into ``benchmarks/.cache/``.
torchvision is not needed: the child builds VGG16 (configuration D) with ``torch.nn`` so that the
state-dict keys are torchvision's (``features.0.weight`` ... ``classifier.6.bias``).

    python benchmarks/bench_inspect_torch_vgg16.py [--reps 5]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _measure import CACHE, Runs, measure, print_context, print_goals, print_table, run_once

VGG16_FILE = CACHE / "vgg16_state_dict.pt"
VGG16_PARAMS = 138_357_544
VGG16_LAYERS = 16  # 13 convolutions, 3 dense

GOAL_VS_TORCH = 0.35
GOAL_PEAK_RSS_MB = 250.0

# torchvision.models.vgg16 without torchvision: same module tree, same initialisation.
GENERATE = r"""
import sys
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
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)


state = VGG().state_dict()
convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
expected = [f"features.{i}.{r}" for i in convs for r in ("weight", "bias")]
expected += [f"classifier.{i}.{r}" for i in (0, 3, 6) for r in ("weight", "bias")]
assert list(state) == expected, list(state)
torch.save(state, sys.argv[1])  # zip format, the default since torch 1.6
print(sum(t.numel() for t in state.values()))
"""

# The naive baseline: load every tensor into memory with torch, then mean and std of each.
TORCH_BASELINE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
state = torch.load(sys.argv[1], weights_only=True)
t2 = time.perf_counter()
for tensor in state.values():
    tensor.mean()
    tensor.std()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "stats_s": t3 - t2}))
"""

# weightscope's own `inspect` (with statistics), then: was torch (or another framework) imported?
TORCH_CHECK = r"""
import json, sys
from weightscope.cli.app import main
code = main(["inspect", sys.argv[1]])
frameworks = sorted(
    m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "tensorflow", "keras")
)
print(json.dumps({"exit": code, "torch": "torch" in sys.modules, "frameworks": frameworks}))
sys.exit(code)
"""

# What weightscope read, to make sure the timed runs inspect the whole model.
READ_CHECK = r"""
import json, sys
from weightscope import load
with load(sys.argv[1]) as model:
    print(json.dumps({
        "framework": model.framework,
        "format": model.format,
        "layers": len(model.layers),
        "params": model.params.total,
    }))
"""


def generate(path: Path) -> None:
    """Write the seeded VGG16 state dict with torch in a child process (atomic rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.pt")
    print(f"generating {path} (VGG16 configuration D with torch.nn, seed 0) ...", flush=True)
    subprocess.run([sys.executable, "-c", GENERATE, str(partial)], check=True)
    partial.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each contender")
    parser.add_argument("--file", type=Path, default=VGG16_FILE, help="state dict to use")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    if not args.file.exists():
        if args.file != VGG16_FILE:
            parser.error(f"{args.file} does not exist")
        generate(VGG16_FILE)
    size = args.file.stat().st_size

    weightscope = Runs(
        "weightscope inspect", [sys.executable, "-m", "weightscope", "inspect", str(args.file)]
    )
    torch_runs = Runs(
        "torch.load(weights_only=True) + mean/std",
        [sys.executable, "-c", TORCH_BASELINE, str(args.file)],
        reports_json=True,
    )
    load_before = os.getloadavg()[0]
    warm_s = measure(args.file, [(weightscope, args.reps), (torch_runs, args.reps)])
    load_after = os.getloadavg()[0]

    # Untimed checks, after the timed runs: what was read, and what got imported.
    read = Runs("read check", [sys.executable, "-c", READ_CHECK, str(args.file)], True)
    run_once(read)
    check = Runs("torch check", [sys.executable, "-c", TORCH_CHECK, str(args.file)], True)
    run_once(check)

    results = goals(weightscope, torch_runs, check.extra[0], read.extra[0])
    report(args.file, size, warm_s, weightscope, torch_runs, read.extra[0], results)
    print(
        f"\n1-minute load average {load_before:.2f} before, {load_after:.2f} after "
        "(other work on the machine slows every contender; runs are interleaved)"
    )
    return 0 if all(ok for *_, ok in results) else 1


def goals(ws: Runs, baseline: Runs, imported: dict, read: dict) -> list[tuple[str, str, bool]]:
    ratio = ws.wall_median / baseline.wall_median
    frameworks = imported["frameworks"]
    read_ok = (
        read["framework"] == "pytorch"
        and read["layers"] == VGG16_LAYERS
        and read["params"] == VGG16_PARAMS
    )
    return [
        (
            f"wall <= {GOAL_VS_TORCH}x torch.load + mean/std (process)",
            f"{ratio:.3f}x",
            ratio <= GOAL_VS_TORCH,
        ),
        (
            f"peak RSS <= {GOAL_PEAK_RSS_MB:.0f} MB",
            f"{ws.peak_rss_mb:.0f} MB",
            ws.peak_rss_mb <= GOAL_PEAK_RSS_MB,
        ),
        (
            "torch never imported (`weightscope.cli.main(['inspect', FILE])`, then sys.modules)",
            "imported: " + (", ".join(frameworks[:3]) if frameworks else "none"),
            not imported["torch"] and not frameworks,
        ),
        (
            f"(check) all read: {VGG16_LAYERS} layers, {VGG16_PARAMS:,} params",
            f"{read['layers']} layers, {read['params']:,} params",
            read_ok,
        ),
    ]


def report(
    path: Path,
    size: int,
    warm_s: float,
    ws: Runs,
    baseline: Runs,
    read: dict,
    results: list[tuple[str, str, bool]],
) -> None:
    print(
        f"## weightscope inspect on {path.name} "
        f"({size / 1e6:.0f} MB = {size / 2**20:.0f} MiB, torch.save zip format)\n"
    )
    print_context(warm_s)
    print(f"- weightscope read it as framework {read['framework']}, format {read['format']}")
    print()
    print_table([ws, baseline])
    if baseline.extra:

        def median(key: str) -> float:
            return statistics.median(e[key] for e in baseline.extra)

        print(
            f"\ntorch baseline, in-process medians (context only): `import torch` "
            f"{median('import_s'):.2f} s, `torch.load` {median('load_s'):.2f} s, "
            f"mean/std {median('stats_s'):.2f} s; its median peak RSS "
            f"{baseline.rss_median_mb:.0f} MB"
        )
    print(
        f"\nagainst the fastest baseline run instead of its median: "
        f"{ws.wall_median / min(baseline.wall):.3f}x"
    )
    print()
    print_goals(results)


if __name__ == "__main__":
    sys.exit(main())
