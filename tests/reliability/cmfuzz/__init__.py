"""Fuzzing kit for cmhash's loaders of untrusted files, shared by tests/reliability and bench/fuzz_loaders.py.

- `artifacts`: builds the real files each loader reads (with cmhash's own writers, or from real data);
- `mutate`: byte-, JSON- and text-level mutations driven by one `random.Random`;
- `targets`: per loader, which files to mutate and how to load them;
- `runner`: runs one case and classifies its outcome (ok, typed error, crash, huge allocation).
"""
