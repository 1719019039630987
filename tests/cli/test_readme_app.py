"""The README's `photo_search.py`, extracted from README.md and run verbatim.

Before: it cached `photos.cmhx` whatever model and folder it was given, so a second model answered
from the first model's index (no warning), and another folder gave `IndexError`. Its cache is now
keyed to the model's identity and the folder's listing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
QUERIES = ["a cup of coffee", "a person riding a horse"]


def _app(tmp_path: Path) -> Path:
    blocks = re.findall(r"```python\n(\"\"\"photo_search\.py.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "README.md must hold one photo_search.py block"
    script = tmp_path / "photo_search.py"
    script.write_text(blocks[0], encoding="utf-8")
    return script


def _run(script: Path, cwd: Path, model: Path, photos: Path) -> str:
    cwd.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, str(script), str(model), str(photos), *QUERIES], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_readme_app_answers_with_each_models_own_index(method_export, coco_mini_dataset, tmp_path):
    script = _app(tmp_path)
    photos, other = tmp_path / "photos", tmp_path / "other"
    for folder, sources in ((photos, coco_mini_dataset.images[:8]), (other, coco_mini_dataset.images[8:11])):
        folder.mkdir()
        for src in sources:
            shutil.copy(src, folder / Path(src).name)
    a, b = method_export("dhaph"), method_export("dmsh")
    app = tmp_path / "app"
    first = _run(script, app, a, photos)
    second = _run(script, app, b, photos)  # the cache holds model A's index now
    assert second == _run(script, tmp_path / "fresh-b", b, photos)  # model B's own answers
    assert _run(script, app, a, photos) == first  # and back
    assert _run(script, app, b, other) == _run(script, tmp_path / "fresh-other", b, other)  # another folder
    assert len(first.splitlines()) == len(QUERIES)
