# Everything a fresh Debian machine needs is installed by these targets themselves.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
APT_PKGS := hostapd eapoltest tshark softhsm2 postgresql openssl libssl-dev chromium chromium-driver
STAMP   := $(VENV)/.amistack-setup
# The npm `echonet-lite` package drives our ECHONET Lite node and controller in
# tests/interop/test_echonet_npm.py, and node-echonet-lite the SKSTACK-IP emulator in
# tests/interop/test_node_echonet_wisunb.py; pinned by package.json + package-lock.json there.
NODE_DIR   := tests/interop/node
NODE_STAMP := $(NODE_DIR)/node_modules/.amistack-npm-ci
# The dashboard's front-end libraries (htmx, uPlot, cytoscape.js), pinned by web/package-lock.json;
# their built files are copied into the Python package (shipped as package data, committed too).
WEB_DIR    := web
WEB_STAMP  := $(WEB_DIR)/node_modules/.amistack-npm-ci
WEB_VENDOR := src/amistack/headend/dashboard/static/vendor
WEB_FILES  := htmx.org/dist/htmx.min.js uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css \
              cytoscape/dist/cytoscape.min.js

.PHONY: setup test demo lint typecheck clean bench

setup: $(STAMP) $(NODE_STAMP) $(WEB_STAMP)

# setup.py compiles echonet/frame.py with mypyc and crypto/_eax_prime.c (OpenSSL: libssl-dev)
# into src/ (an editable install imports the .so before the .py), so an edited frame.py or
# _eax_prime.c needs this rule again: they are prerequisites.
$(STAMP): pyproject.toml setup.py src/amistack/echonet/frame.py src/amistack/crypto/_eax_prime.c
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt packages ($(APT_PKGS)); interop tests will skip outside CI"; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "apt: installing nodejs npm"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "not root: skipping nodejs/npm; the echonet-lite interop tests will skip outside CI"; fi; \
	fi
	@if command -v npm >/dev/null; then \
	  cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.amistack-npm-ci; \
	fi

$(WEB_STAMP): $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json $(NODE_STAMP)
	@if command -v npm >/dev/null; then \
	  (cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error) && \
	  for f in $(WEB_FILES); do cp $(WEB_DIR)/node_modules/$$f $(WEB_VENDOR)/; done && \
	  touch $(WEB_STAMP); \
	fi

test: setup
	$(BIN)/ruff check src tests
	$(BIN)/mypy src
	$(BIN)/pytest -q -n 2 --dist loadfile

demo: setup
	$(BIN)/amistack demo --data-dir ./amistack-data/demo --pcap ./amistack-data/pcap

bench: setup
	$(BIN)/amistack bench auth --sessions 3000 --json

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: setup
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) amistack-data .pytest_cache .mypy_cache .ruff_cache
