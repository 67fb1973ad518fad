# sam_tutorial: the two README commands are `make book` and `make test`. Both create a private
# virtual environment in .venv on first use (torch pinned to the local CPU wheel, then the package
# with its extras), so a fresh machine with only Python 3 needs no other step.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The exact torch pin lives here only; the package itself states a lower bound (Colab keeps its torch).
TORCH_PIN ?= torch==2.13.0
EXTRAS ?= data,book,test,dev
STAMP := $(VENV)/.installed-$(shell echo $(TORCH_PIN) $(EXTRAS) | cksum | cut -d' ' -f1)
STAGE := tools/stage
JOBS ?= 2
# Per-cell limit for notebooks in quick mode (the whole quick notebook should take <= 60 s).
NB_CELL_TIMEOUT ?= 120
MODE ?= standard
# Standard-mode builds own _build/ (and its jupyter-cache); any other mode gets its own output folder,
# because jupyter-cache keys notebooks on their code only and would serve one mode's outputs as another's.
BOOK_OUT := $(if $(filter standard,$(MODE)),.,_build/mode-$(MODE))
CHECK_OUT := _build/check

export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
# Experiment results and checkpoints the chapters produce go under _build (cleaned by `make clean`),
# not into book/runs; data (MNIST-1D) is cached in $SAM_TUTORIAL_DATA or ~/.cache/sam_tutorial.
export SAM_TUTORIAL_RUNS ?= $(abspath _build/runs)

# The interpreter for gpu-check: a lent GPU machine has its own python3 (CUDA torch), not our .venv.
PY ?= $(BIN)/python
BENCH_JSON ?= _build/bench/bench-cpu.json
GPU_OUT ?= _build/gpu-check

.PHONY: all setup book test lint imports typecheck unit notebooks colab-check book-check browser-check bench gpu-check \
  gpu-book clean distclean help

all: test

help:
	@echo "make book       build the HTML book in _build/html (executes chapters in standard mode, cached)"
	@echo "make test       ruff, import contracts, mypy, unit tests, notebooks (quick), colab-check, -W -n book build"
	@echo "make browser-check  open every page of the built book in headless Chromium, offline; screenshots"
	@echo "make bench      step-time ratios of the SAM family on this machine (JSON: BENCH_JSON=...)"
	@echo "make gpu-check  gpu-marked tests + CUDA benchmark, <= 5 min (PY=python3 on a GPU machine)"
	@echo "make gpu-book   every chapter in standard mode on CUDA, times in GPU_BOOK_JSON (PY=python3)"
	@echo "make colab-check  every chapter from the notebook alone in a Colab-like environment (COLAB_MODE=quick)"
	@echo "make setup      only create/update the private environment in $(VENV)"
	@echo "make clean      remove build outputs and caches (keeps $(VENV)); distclean also removes $(VENV)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(STAGE) setup "virtual environment in $(VENV)" \
	  bash -c 'set -e; [ -x "$(BIN)/python" ] || $(PYTHON) -m venv "$(VENV)"; \
	    "$(BIN)/python" -m pip install --quiet --upgrade pip; \
	    "$(BIN)/python" -m pip install --quiet "$(TORCH_PIN)"; \
	    "$(BIN)/python" -m pip install --quiet -e ".[$(EXTRAS)]"; \
	    rm -f "$(VENV)"/.installed-*; touch "$@"'

book: $(STAMP)
	@# one thread per kernel: the chapters' small models run faster, and timings do not depend on load
	@OMP_NUM_THREADS=1 SAM_TUTORIAL_MODE=$(MODE) $(STAGE) book "jupyter-book build ($(MODE) mode)" \
	  "$(BIN)/jupyter-book" build . --path-output "$(BOOK_OUT)"
	@$(STAGE) book "check the HTML exists" test -f "$(BOOK_OUT)/_build/html/index.html"
	@echo "The book is in $(BOOK_OUT)/_build/html/index.html"

test: lint imports typecheck unit notebooks colab-check book-check
	@echo "make test: all stages passed"

lint: $(STAMP)
	@$(STAGE) test "ruff (package, tests, tools, notebooks)" "$(BIN)/ruff" check sam_tutorial tests tools book

# The direction of imports of ARCHITECTURE.md (contracts in pyproject.toml, [tool.importlinter]).
imports: $(STAMP)
	@$(STAGE) test "import contracts (import-linter)" "$(BIN)/lint-imports" --no-cache

typecheck: $(STAMP)
	@$(STAGE) test "mypy" "$(BIN)/mypy"

unit: $(STAMP)
	@OMP_NUM_THREADS=1 $(STAGE) test "unit tests" "$(BIN)/pytest" -n $(JOBS) -q --doctest-modules sam_tutorial tests

notebooks: $(STAMP)
	@SAM_TUTORIAL_MODE=quick OMP_NUM_THREADS=1 $(STAGE) --allow-exit 5 test "notebooks (quick mode, nbmake)" \
	  "$(BIN)/pytest" -n $(JOBS) -q -p no:cacheprovider --nbmake --nbmake-timeout=$(NB_CELL_TIMEOUT) book

# Every chapter from the notebook alone, as a Colab reader runs it (tools/colab_check.py): an environment with
# only Colab's usual packages and torch (made once in $(COLAB_ENV), never holding the package), each notebook
# copied alone into an empty folder, its bootstrap cell installing the package from a copy of this checkout
# with pip offline ($$SAM_TUTORIAL_INSTALL, PIP_NO_INDEX), then executed. COLAB_MODE=standard before a release.
COLAB_ENV ?= $(VENV)-colab
COLAB_MODE ?= quick
colab-check: $(STAMP)
	@OMP_NUM_THREADS=1 $(STAGE) test "colab-check: every chapter from the notebook alone ($(COLAB_MODE) mode)" \
	  "$(BIN)/python" tools/colab_check.py --env "$(COLAB_ENV)" --out _build/colab-check --mode $(COLAB_MODE) \
	  --jobs $(JOBS) --torch "$(TORCH_PIN)"

# The notebooks were just executed by nbmake; this build checks every page, reference, citation and
# directive with execution off, in its own folder, so it neither runs them again nor touches the
# jupyter-cache that `make book` uses.
book-check: $(STAMP)
	@mkdir -p "$(CHECK_OUT)"
	@# execution off: glued values exist only in executed notebooks (make book), so glue lookups are not checked here
	@sed -e 's/^\(  execute_notebooks:\).*/\1 "off"/' \
	  -e 's/^\(    suppress_warnings: \[\)/\1"mystnb.glue", /' \
	  -e 's#^\(    mathjax_offline:\).*#\1 $(CURDIR)/tools/#' _config.yml > "$(CHECK_OUT)/_config.yml"
	@$(STAGE) test "book check build (-W -n --keep-going, execution off)" \
	  "$(BIN)/jupyter-book" build . --path-output "$(CHECK_OUT)" --config "$(CHECK_OUT)/_config.yml" \
	  -W -n --keep-going --all -q
	@$(STAGE) test "check the HTML exists" test -f "$(CHECK_OUT)/_build/html/index.html"

# Builds nothing: opens every page of an existing build ($(HTML), default the standard book) in headless
# Chromium with every non-file request blocked, fails on raw TeX, raw Markdown tables, math that MathJax
# did not typeset, or missing images, and saves one full-page screenshot per page in $(SHOTS).
# Needs Debian's chromium (installed with apt-get when missing and we are root) and the playwright
# Python package (its driver ships in the wheel; no browser download), installed into $(VENV) if missing.
HTML ?= _build/html
SHOTS ?= $(dir $(patsubst %/,%,$(HTML)))screenshots
browser-check: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    $(STAGE) browser-check "install chromium (apt-get)" \
	      bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'; \
	  else echo "browser-check: install Chromium first: sudo apt-get install -y chromium"; exit 1; fi; }
	@"$(BIN)/python" -c "import playwright" 2>/dev/null || $(STAGE) browser-check "install playwright" \
	  "$(BIN)/python" -m pip install --quiet playwright
	@$(STAGE) browser-check "open every page of $(HTML) offline" \
	  "$(BIN)/python" tools/browser_check.py --html "$(HTML)" --out "$(SHOTS)"

bench: $(STAMP)
	@$(STAGE) bench "benchmark (CPU)" "$(BIN)/python" -m sam_tutorial bench --device cpu --json "$(BENCH_JSON)"

# No dependency on .venv: runs with any interpreter that has torch (CUDA), numpy, pytest and the package
# importable from this folder (PYTHONPATH=.); mnist1d etc. are not needed by these tests.
gpu-check:
	@mkdir -p "$(GPU_OUT)"
	@PYTHONPATH=. $(STAGE) gpu-check "gpu tests" "$(PY)" -m pytest -q -m gpu -p no:cacheprovider \
	  tests/optim/test_gpu.py
	@PYTHONPATH=. $(STAGE) gpu-check "benchmark (CUDA)" "$(PY)" -m sam_tutorial bench --device cuda \
	  --rounds 10 --json "$(GPU_OUT)/bench-cuda.json"

# No .venv either: every chapter in standard mode on CUDA with the GPU machine's python3 (PY=python3), the
# package from this folder; per-chapter times, failures and provenance in $(GPU_BOOK_JSON). Aim: <= 8 min.
GPU_BOOK_JSON ?= _build/gpu-book/gpu-book.json
gpu-book:
	@$(STAGE) gpu-book "every chapter in standard mode on CUDA" "$(PY)" tools/gpu_book.py --json "$(GPU_BOOK_JSON)"

clean:
	rm -rf _build .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)" "$(COLAB_ENV)"
