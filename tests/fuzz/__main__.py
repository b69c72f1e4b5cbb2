"""``python -m tests.fuzz``: a fuzzing campaign of any size, with its figures.

    python -m tests.fuzz --mutants 2000            # 2000 mutants of each format
    python -m tests.fuzz --formats onnx,safetensors --seed 7 --no-save

Saved failures (``tests/fuzz/found``) are replayed first. Exit status 1 when anything failed.
The same campaign runs under pytest: ``WEIGHTSCOPE_FUZZ_MUTANTS=5000 python -m pytest
tests/fuzz -q``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from .campaign import FOUND, Campaign, Settings, replay, saved_cases
from .runner import Pool, Tally, digest
from .seeds import SEEDS, SeedCache


def main(argv: list[str] | None = None) -> int:
    defaults = Settings.from_environment()
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mutants", type=int, default=defaults.mutants, help="per format")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--formats", default=",".join(defaults.formats),
                        help=f"comma-separated, of: {', '.join(SEEDS)}")  # fmt: skip
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--no-save", action="store_true", help=f"do not save failures to {FOUND}")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(SEEDS))
    if unknown:
        parser.error(f"unknown formats {unknown}; known: {', '.join(SEEDS)}")
    settings = dataclasses.replace(
        defaults,
        mutants=args.mutants,
        seed=args.seed,
        formats=tuple(formats),
        workers=args.workers,
        found=None if args.no_save else defaults.found,
    )
    started = time.monotonic()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="weightscope-fuzz-seeds-") as folder:
        seeds = SeedCache(Path(folder))
        with Pool(settings.workers) as pool:
            for case in saved_cases():
                outcome = replay(pool, case)
                if outcome.status == "fail":
                    failed += 1
                    print(f"saved case {case.name} still fails: {outcome.failures[0][0]}")
            replayed = time.monotonic()
            for fmt in formats:
                seeds[fmt]
            built = time.monotonic()
            campaign = Campaign(pool, seeds, settings, Tally())
            campaign.run(formats)
    done = time.monotonic()
    print(campaign.tally.report())
    digests = ", ".join(f"{fmt} {digest(seeds[fmt])[:12]}" for fmt in formats)
    print(f"seeds (sha256 of their files): {digests}")
    for fmt, paths in sorted(campaign.saved.items()):
        for path in paths:
            print(f"saved {fmt}: {path}")
    print(
        f"{sum(campaign.tally.tried.values())} mutants, {len(formats)} formats, "
        f"{settings.workers} workers, fuzz seed {settings.seed}: replay of saved cases "
        f"{replayed - started:.1f} s, seeds {built - replayed:.1f} s, mutants "
        f"{done - built:.1f} s, total {done - started:.1f} s"
    )
    failed += sum(campaign.tally.failed.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
