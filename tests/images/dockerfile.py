"""Reading the repository's Dockerfiles without a Docker engine: instructions by stage, a
``.dockerignore`` matcher, and a stand-in builder that runs a stage's install steps on this machine.

The stand-in is faithful only to Dockerfiles written the way this repository's are: absolute paths
appear only in ``ENV`` values and ``WORKDIR`` (both mapped under one root directory), ``RUN`` steps
use relative paths and variables, and ``COPY --from`` copies a path to the same path.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTROLLER = REPO / "Dockerfile"
JOB = REPO / "examples" / "job.Dockerfile"


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword in upper case and the rest of its (joined) line."""

    keyword: str
    args: str

    def words(self) -> list[str]:
        """The arguments as a list: JSON (exec) form when written so, else split as a shell would."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list)
            return [str(v) for v in value]
        return shlex.split(text)

    def flags(self) -> tuple[dict[str, str], list[str]]:
        """Leading ``--name=value`` flags apart from the other words."""
        found: dict[str, str] = {}
        words = shlex.split(self.args)
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            found[name] = value
        return found, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, continuation lines joined, comments and parser directives left out."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """The ``NAME=value`` pairs one ``ENV`` instruction sets."""
    return dict(word.split("=", 1) for word in shlex.split(instruction.args))


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` leaves a path out of the build context (the last matching pattern
    decides; a pattern matches the path or any folder above it)."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        if body.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], body[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, body) for p in prefixes)
        if hit:
            verdict = not negate
    return verdict


def dockerignore() -> list[str]:
    text = (REPO / ".dockerignore").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class StandIn:
    """A root directory standing in for an image's filesystem, and the environment built up in it."""

    root: Path
    env: dict[str, str]
    cwd: Path | None = None

    def inside(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _map(self, value: str) -> str:
        mapped = ":".join(str(self.inside(p)) if p.startswith("/") else p for p in value.split(":"))
        return _VAR.sub(lambda m: self.env.get(m[1], ""), mapped)

    def apply(self, stage: Stage, *, run: bool) -> None:
        """Apply a stage's ENV, WORKDIR and COPY (from the build context, the repository); run its
        RUN steps when ``run``."""
        for ins in stage.instructions:
            if ins.keyword == "ENV":
                self.env.update({k: self._map(v) for k, v in env_pairs(ins).items()})
            elif ins.keyword == "WORKDIR":
                self.cwd = self.inside(ins.args)
                self.cwd.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                self._copy(ins)
            elif ins.keyword == "RUN" and run:
                command = re.sub(r"^(--\S+\s+)*", "", ins.args)  # --mount=… belongs to the builder
                subprocess.run(["sh", "-c", command], cwd=self.cwd, env=self.env, check=True, timeout=600)

    def _copy(self, ins: Instruction) -> None:
        flags, words = ins.flags()
        *sources, dest = words
        if "from" in flags:
            # Another stage's path copied to the same path: in one root it is already there.
            assert sources == [dest], ins
            return
        assert self.cwd is not None
        target = self.inside(dest) if dest.startswith("/") else self.cwd / dest
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(
                    origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


def base_env(python_dir: Path) -> dict[str, str]:
    """A clean environment for the stand-in: this machine's PATH behind a folder whose ``python`` is
    the interpreter running the tests, and none of the project's variables."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{python_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return env
