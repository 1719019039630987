# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates what it needs. torch==2.13.0 is installed first, in its own step: an unpinned
# torch would pull ~3 GB of CUDA wheels.
PY ?= python3
VENV := .venv
RT_VENV := .venv-runtime
Q ?= -q

.PHONY: demo test test-main test-runtime venv clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install $(Q) --upgrade pip
	$(VENV)/bin/pip install $(Q) torch==2.13.0
	$(VENV)/bin/pip install $(Q) -e ".[cpu,train,export,fast,faiss,demo,ray,dev]"
	touch $@

# The runtime's own environment: the base install plus onnxruntime, and no torch at all.
$(RT_VENV)/.installed: pyproject.toml setup.py
	$(PY) -m venv $(RT_VENV)
	$(RT_VENV)/bin/pip install $(Q) --upgrade pip
	$(RT_VENV)/bin/pip install $(Q) -e ".[cpu]" pytest hypothesis
	@if $(RT_VENV)/bin/python -c "import torch" 2>/dev/null; then \
		echo "error: torch leaked into $(RT_VENV); the runtime must not depend on it" >&2; exit 1; fi
	touch $@

venv: $(VENV)/.installed $(RT_VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/cmhash demo

test: test-main test-runtime

# The main suite also needs .venv-runtime: tests/cli/test_encode_e2e.py runs the CLI there, without torch.
test-main: $(VENV)/.installed $(RT_VENV)/.installed
	$(VENV)/bin/pytest

test-runtime: $(RT_VENV)/.installed
	$(RT_VENV)/bin/pytest tests/runtime

clean:
	rm -rf $(VENV) $(RT_VENV) build dist *.egg-info
