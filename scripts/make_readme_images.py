"""Regenerate the pictures the docs show (docs/images/, used by the plot and init pages), from
the bundled example, with the command line.

python scripts/make_readme_images.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"

COMMANDS = [
    ["plot", "--example", "--layer", "dwconv2", "-o", "example_dwconv2.png"],
    ["plot", "--example", "--layer", "pwconv2", "-o", "example_pwconv2.png"],
    [
        "plot",
        "--example",
        "--layer",
        "dwconv2",
        "--view",
        "norms",
        "-o",
        "example_dwconv2_norms.png",
    ],
    ["init", "--example", "--layer", "logits", "-o", "example_init_logits.png"],
]


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        *args, out = command
        subprocess.run([sys.executable, "-m", "weightscope", *args, str(IMAGES / out)], check=True)


if __name__ == "__main__":
    main()
