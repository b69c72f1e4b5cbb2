"""A fuzzing campaign: the settings read from the environment, the mutants of every format run
on a pool of workers, new failures saved to ``found/`` as regression cases, and the saved cases
replayed."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import mutants
from .runner import Files, Outcome, Pool, Tally
from .seeds import SEEDS

FOUND = Path(__file__).with_name("found")
CI_MUTANTS = 300


@dataclass(frozen=True)
class Settings:
    mutants: int = CI_MUTANTS
    """Mutants per format."""
    seed: int = 0
    formats: tuple[str, ...] = tuple(SEEDS)
    workers: int = 2
    found: Path | None = FOUND
    """Where new failures are saved (None: nowhere)."""

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        formats = env.get("WEIGHTSCOPE_FUZZ_FORMATS", "")
        found = env.get("WEIGHTSCOPE_FUZZ_FOUND", str(FOUND))
        return cls(
            mutants=int(env.get("WEIGHTSCOPE_FUZZ_MUTANTS", CI_MUTANTS)),
            seed=int(env.get("WEIGHTSCOPE_FUZZ_SEED", 0)),
            formats=tuple(f for f in formats.split(",") if f) or tuple(SEEDS),
            workers=int(env.get("WEIGHTSCOPE_FUZZ_WORKERS", 2)),
            found=Path(found) if found else None,
        )


# ---------------------------------------------------------------------------------------------
# saved failures: found/<format>-<n>.bin (the file weightscope is pointed at), found/<format>-
# <n>.<name> for the files beside it (ONNX external data), found/<format>-<n>.txt (what it is)

_CASE = re.compile(r"^(?P<format>[a-z0-9_]+)-(?P<n>\d+)\.bin$")


@dataclass(frozen=True)
class Case:
    name: str
    format: str
    files: Files
    signatures: tuple[str, ...]


def saved_cases(folder: Path = FOUND) -> list[Case]:
    cases = []
    for path in sorted(folder.glob("*.bin")) if folder.is_dir() else []:
        match = _CASE.match(path.name)
        if not match or match["format"] not in SEEDS:
            continue
        seed = SEEDS[match["format"]]
        stem = path.name[: -len(".bin")]
        files = {seed.filename: path.read_bytes()}
        for extra in seed.extra_files:
            beside = folder / f"{stem}.{extra}"
            if beside.is_file():
                files[extra] = beside.read_bytes()
        notes = folder / f"{stem}.txt"
        signatures = ()
        if notes.is_file():
            signatures = tuple(
                line.removeprefix("signature: ")
                for line in notes.read_text().splitlines()
                if line.startswith("signature: ")
            )
        cases.append(Case(stem, match["format"], files, signatures))
    return cases


def save_case(folder: Path, fmt: str, files: Files, note: str, outcome: Outcome) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    taken = {int(m["n"]) for p in folder.glob(f"{fmt}-*.bin") if (m := _CASE.match(p.name))}
    number = max(taken, default=0) + 1
    stem = f"{fmt}-{number}"
    seed = SEEDS[fmt]
    main = folder / f"{stem}.bin"
    main.write_bytes(files[seed.filename])
    for extra in seed.extra_files:
        if extra in files:
            (folder / f"{stem}.{extra}").write_bytes(files[extra])
    lines = [f"signature: {s}" for s, _ in outcome.failures]
    lines += [f"symptom: {d}" for _, d in outcome.failures]
    lines.append(f"mutation: {note}")
    beside = [f"{stem}.{e} as {e}" for e in seed.extra_files if e in files]
    also = f", with {', '.join(beside)} beside it" if beside else ""
    commands = "weightscope inspect --json and weightscope export -o out.npz"
    lines.append(f"replay: save {stem}.bin as {seed.filename}{also}; run {commands} on it")
    (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return main


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Campaign:
    """Mutants of some formats run on ``pool``; failures counted in ``tally`` and saved."""

    pool: Pool
    seed_files: Mapping[str, Files]
    settings: Settings
    tally: Tally

    def __post_init__(self) -> None:
        known = saved_cases(self.settings.found) if self.settings.found else []
        self.known = {(c.format, s) for c in known for s in c.signatures}
        self.saved: dict[str, list[Path]] = {}

    def run(self, formats: Iterable[str]) -> None:
        formats = list(formats)
        for fmt in formats:
            self.seed_files[fmt]  # built here, before the worker threads ask for it
        jobs = [(fmt, i) for fmt in formats for i in range(self.settings.mutants)]
        notes: dict[tuple[str, int], str] = {}

        def make(job: tuple[str, int]) -> tuple[Files, str]:
            fmt, index = job
            seed = SEEDS[fmt]
            files, note = mutants.make(seed, self.seed_files[fmt], self.settings.seed, index)
            notes[job] = note
            return files, seed.filename

        def done(job: tuple[str, int], files: Files, outcome: Outcome) -> None:
            fmt = job[0]
            note = notes.pop(job)
            new = self.tally.add(fmt, outcome)
            fresh = [s for s, _ in new if (fmt, s) not in self.known]
            if fresh and self.settings.found is not None:
                path = save_case(self.settings.found, fmt, files, note, outcome)
                self.saved.setdefault(fmt, []).append(path)
                self.known.update((fmt, s) for s, _ in outcome.failures)
            for signature, _ in new:
                self.tally.examples[(fmt, signature)] += f"  [mutant {job[1]}: {note}]"

        self.pool.map(jobs, make, done)

    def problems(self, fmt: str) -> str:
        """The failures found for ``fmt``, one paragraph, or "" when there were none."""
        if not self.tally.failed[fmt]:
            return ""
        lines = [f"{self.tally.failed[fmt]} of {self.tally.tried[fmt]} mutants of {fmt} failed:"]
        for signature, count in self.tally.signatures[fmt].most_common():
            lines.append(f"  {count} x {signature}")
            lines.append(f"      e.g. {self.tally.examples[(fmt, signature)][:600]}")
        for path in self.saved.get(fmt, []):
            lines.append(f"  saved: {path}")
        return "\n".join(lines)


def replay(pool: Pool, case: Case) -> Outcome:
    """Run one saved case (its format's file names restored)."""
    return pool.workers[0].run(case.files, SEEDS[case.format].filename)
