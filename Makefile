# The two commands of the README: `make demo` and `make test`. Both create or update .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m qsim quantize

# Hypothesis runs with the suite's "ci" profile (tests/conftest.py): the same examples every run
# and no example database, so a failure saved in .hypothesis/ by an earlier run is never replayed.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider --hypothesis-profile=ci

# Both halves always run and both are reported; the exit status is non-zero if either failed.
test: setup
	@jit=0; nojit=0; \
	$(PYTEST) || jit=$$?; \
	echo "# The same numerics with Numba off: the NumPy twins must give the same bits (AIMET's included)."; \
	NUMBA_DISABLE_JIT=1 $(PYTEST) -m "not slow" \
		tests/quant tests/ops/test_exact_math.py tests/ops/test_exact_gemm.py tests/test_sim_golden.py \
		tests/test_fp32_families.py \
		|| nojit=$$?; \
	echo "make test: whole suite (Numba): $$( [ $$jit = 0 ] && echo passed || echo "FAILED (pytest exit $$jit)")"; \
	echo "make test: NumPy twins (NUMBA_DISABLE_JIT=1): $$( [ $$nojit = 0 ] && echo passed || echo "FAILED (pytest exit $$nojit)")"; \
	[ $$jit = 0 ] && [ $$nojit = 0 ]

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info qsim_out
