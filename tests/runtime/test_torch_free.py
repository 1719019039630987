"""The runtime never imports torch, cmhash.zoo or cmhash.export (docs/ARCHITECTURE.md, rule 1).

Every cmhash.runtime module is imported in a fresh interpreter where those imports are made to fail.
The suite also runs tests/runtime in a second environment with no torch installed (see Makefile).
"""

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    BLOCKED = ("torch", "cmhash.zoo", "cmhash.export")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import cmhash.runtime
    names = [m.name for m in pkgutil.walk_packages(cmhash.runtime.__path__, "cmhash.runtime.")]
    for name in names:
        importlib.import_module(name)
    leaked = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
    print(len(names), leaked)
    """
)


def test_every_runtime_module_imports_without_torch_zoo_or_export():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    count, leaked = result.stdout.split(" ", 1)
    assert int(count) >= 5, "walk_packages found too few runtime modules: is the package mapped?"
    assert leaked.strip() == "[]"


def test_the_cli_starts_without_torch():
    probe = PROBE.split("import cmhash.runtime")[0] + "from cmhash.cli import app\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
