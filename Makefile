# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch is pinned: on CPU machines this is the wheel already on disk; a loose spec pulls CUDA.
TORCH_PIN ?= torch==2.13.0
# DeepSpeed ships as an sdist whose build imports torch: build it against the torch above.
DEEPSPEED_PIN ?= deepspeed==0.19.8

.PHONY: install test demo protos lint format gpu-check

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_PIN)"
	$(PIP) show deepspeed >/dev/null 2>&1 || { $(PIP) install -q setuptools wheel && \
		$(PIP) install -q --no-build-isolation "$(DEEPSPEED_PIN)"; }
	$(PIP) install -q -e '.[dev]'

# Two workers, each taking whole files (module fixtures are built once): about 1.6x faster
# than one on 2 cores, since many tests wait on child processes.
TEST_WORKERS ?= 2

test: install lint
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: install
	astro demo

# On a GPU machine: bf16 SFT tokens/s and MFU of a ~0.5B model (figures to $$OUT if set).
gpu-check:
	$(PYTHON) benchmarks/gpu/check.py

protos:
	$(PYTHON) scripts/gen_protos.py

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy astro_core services astro_cli

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
