"""Only the package-dir mapping; everything else is in pyproject.toml.

Every subpackage of zoo/, export/ and runtime/ must be listed explicitly, or the wheel silently
lacks it while an editable install still works (tests/test_packaging.py guards this). The model-card
template (model_cards/) ships as data of `cmhash.model_cards`, so `cmhash publish` works from a wheel.
"""
from setuptools import find_packages, setup

ROOTS = {"cmhash": "cmhash", "cmhash.zoo": "zoo", "cmhash.export": "export", "cmhash.runtime": "runtime"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

DATA = {"cmhash.model_cards": "model_cards"}
package_dir.update(DATA)
packages += list(DATA)

PACKAGE_DATA = {
    "cmhash.model_cards": ["*.j2", "*.md"],
    "cmhash.zoo.pretrained": ["*/config.json", "*/model.safetensors", "*/manifest.json", "*/README.md"],
}

setup(packages=packages, package_dir=package_dir, package_data=PACKAGE_DATA)
