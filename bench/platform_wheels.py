"""Do the runtime's dependencies have wheels for the edge platforms? `pip download --platform` per target.

For each target (manylinux aarch64, macOS arm64, and this machine's x86-64 as the control), pip
resolves the runtime install (`cmhash[cpu]`'s dependencies at the versions pyproject.toml accepts,
numba for the compiled search, `[fast]`) with `--only-binary=:all:`: a dependency without a wheel
for the target fails the resolution, and the table says which. Nothing is installed.

    .venv/bin/python bench/platform_wheels.py          # writes bench/results/platform_wheels.md (needs the network to PyPI)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGETS = {
    "manylinux aarch64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64"],
    "macOS arm64": ["macosx_11_0_arm64", "macosx_14_0_arm64"],
    "manylinux x86-64 (control)": ["manylinux2014_x86_64", "manylinux_2_28_x86_64"],
}


def requirements() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    base = project["dependencies"] + extras["cpu"]
    return {"runtime (cmhash[cpu])": base, "runtime + compiled search (cmhash[cpu,fast])": base + extras["fast"]}


def download(reqs: list[str], platforms: list[str], python: str) -> tuple[bool, list[str], str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", tmp,
               "--python-version", python, "--implementation", "cp"]
        for p in platforms:
            cmd += ["--platform", p]
        result = subprocess.run(cmd + reqs, capture_output=True, text=True, timeout=900)
        wheels = sorted(p.name for p in Path(tmp).glob("*.whl"))
    error = "" if result.returncode == 0 else (re.findall(r"ERROR: (.*)", result.stderr) or [result.stderr[-300:]])[0]
    return result.returncode == 0, wheels, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.11", help="the Python version to resolve for")
    parser.add_argument("--out", type=Path, default=RESULTS / "platform_wheels.md")
    args = parser.parse_args()
    lines = [f"`pip download --only-binary=:all: --python-version {args.python} --platform ...` of the runtime's "
             "requirements (from pyproject.toml), per target:", "",
             "| target | install | wheels for every dependency | resolved wheels / the one that failed |", "|---|---|---|---|"]
    for target, platforms in TARGETS.items():
        for install, reqs in requirements().items():
            ok, wheels, error = download(reqs, platforms, args.python)
            detail = f"{len(wheels)} wheels: " + ", ".join(" ".join(w.split("-")[:2]) for w in wheels) if ok else error
            lines.append(f"| {target} | {install} | {'yes' if ok else 'no'} | {detail} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
