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

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider
	# The same numerics with Numba off: the NumPy twins must give the same bits (AIMET's included).
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" \
		tests/quant tests/ops/test_exact_math.py tests/ops/test_exact_gemm.py tests/test_sim_golden.py \
		tests/test_fp32_families.py

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info qsim_out
