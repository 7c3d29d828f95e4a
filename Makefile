# influal: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean labelstudio bench-peers test-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Label Studio for the round-trip tests (tests/labelstudio.py), in its own environment so that its pins
# never touch influal's: about 1 GB, built once and reused (the stamp holds the version; changing
# LS_VERSION reinstalls). A failed install does not fail `make test`: pip's last lines go to $(LS_FAILED)
# and the tests that need the server skip with that reason (the next `make test` tries again).
LS_VENV := .venv-labelstudio
LS_VERSION := 1.23.2
LS_STAMP := $(LS_VENV)/.installed
LS_FAILED := $(LS_VENV)/.failed

labelstudio:
	@if [ "$$(cat $(LS_STAMP) 2>/dev/null)" = "$(LS_VERSION)" ]; then exit 0; fi; \
	echo "installing label-studio==$(LS_VERSION) into $(LS_VENV) (once; a few minutes)"; \
	rm -f $(LS_STAMP) $(LS_FAILED); mkdir -p $(LS_VENV); \
	if { $(PYTHON) -m venv $(LS_VENV) && \
	     $(LS_VENV)/bin/pip install --quiet 'label-studio==$(LS_VERSION)'; } \
	     > $(LS_VENV)/.install.log 2>&1; then \
		echo $(LS_VERSION) > $(LS_STAMP); \
	else \
		grep -v '^WARNING: Location' $(LS_VENV)/.install.log | tail -n 20 > $(LS_FAILED); \
		echo "label-studio install failed (the tests that need it will skip); see $(LS_FAILED)"; \
	fi

demo: $(STAMP)
	$(BIN)/influal run --dataset mnist5k --model cnn --strategies isal,random \
		--initial 100 --budget 100 --rounds 5 --seeds 3 --out results/demo

test: $(STAMP) labelstudio
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	@# the peers benchmark's harness tests, where `make bench-peers` built its environment
	@if [ -x $(PEERS_VENV)/bin/python ] && $(PEERS_VENV)/bin/python -c "import kronfluence" 2>/dev/null; then \
		$(PEERS_VENV)/bin/python -m pytest tests/test_peers_harness.py -p no:cacheprovider -o addopts="" -q; fi

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf results/demo .pytest_cache

# The influence libraries side by side (benchmarks/peers.py, issue 15): kronfluence, dattri, captum (pyDVL does
# not import with numpy 2: see the benchmark) in their own .venv-peers, with torch pinned by
# benchmarks/peers-constraints.txt so that pip never replaces it. PEERS_ARGS picks a subset, e.g.
# `make bench-peers PEERS_ARGS="--models cnn --pools 4000 --scopes last --repeats 3"`.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_ARGS ?=

$(PEERS_STAMP): pyproject.toml benchmarks/peers-constraints.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PEERS_VENV)/bin/pip install --quiet -e '.[peers]' -c benchmarks/peers-constraints.txt
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python -m benchmarks.peers $(PEERS_ARGS)

# The harness's own tests (tests/test_peers_harness.py; they skip in the main .venv).
test-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python -m pytest tests/test_peers_harness.py -p no:cacheprovider -o addopts="" -q
