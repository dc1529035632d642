# The front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
NPM_DIR   := .devtools/npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed
export AZURITE_TABLE_BIN := $(CURDIR)/$(NPM_DIR)/node_modules/.bin/azurite-table

.PHONY: help
help: ## List every target
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(NPM_STAMP): $(NPM_DIR)/package-lock.json
	@echo "==> installing Azurite and tree-sitter-bicep from the committed lockfile"
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: deps
deps: $(NPM_STAMP) ## Install Go modules and the npm dev tools (Azurite, tree-sitter-bicep)
	$(GO) mod download

.PHONY: build
build: ## Build the custom handler binary into bin/handler
	$(GO) build -o bin/handler ./handler

# The packages with concurrency of their own (shared Key Vault reads, the
# sweep's workers, the throttle, webhook deliveries, the shared diagnostics
# computation and background lifetimes, the whole stack in app)
# run under the race detector instead of a plain run: they wait on I/O, so
# -race costs them little (README, "make test").
RACE_DIRS := tokens sweep connectflow httpapi events secrets msidentity memstore diagnostics lifetime app
RACE_PKGS := $(foreach d,$(RACE_DIRS),./handler/internal/$(d)/...)
empty :=
space := $(empty) $(empty)
RACE_RE := /handler/internal/($(subst $(space),|,$(strip $(RACE_DIRS))))(/|$$)

.PHONY: test
test: deps test-deps ## Run the whole test suite (unit, Azurite, browser, Python client, infra checks; the concurrent packages under -race)
	$(GO) vet ./...
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -E '$(RACE_RE)')
	$(GO) test -race -count=1 $(RACE_PKGS)

.PHONY: run
run: deps ## Run everything locally: Azurite, the Microsoft stand-in, the handler and a demo CMS page
	$(GO) run ./handler/cmd/devrun

.PHONY: verify
verify: ## Print GET /api/diagnostics as a table, exit non-zero on a failed check: Azure (FUNCTION_APP_NAME, KEY_VAULT_NAME, RESOURCE_GROUP) or `make run`'s stack
	$(GO) run ./handler/cmd/verify $(VERIFY_FLAGS)

# ---- infra (owned by the infra work) ----
BICEP_FILES := $(shell find infra -name '*.bicep' -o -name '*.bicepparam' 2>/dev/null | sort)

.PHONY: package
package: ## Build dist/app.zip: host.json, handler (linux/amd64, static) and the function folders
	$(GO) run ./handler/cmd/package -out dist/app.zip

.PHONY: deploy
deploy: package ## Deploy to Azure with the az CLI, then make verify (infra/deploy.sh; RESOURCE_GROUP, LOCATION, DEPLOY_PARAMS, ALERT_EMAIL)
	bash infra/deploy.sh

.PHONY: infra-check
infra-check: $(NPM_STAMP) ## Check the Bicep: syntax (tree-sitter), then bicep build + lint when the Bicep CLI is on PATH
	node infra/tools/bicepsyntax.cjs check $(BICEP_FILES)
	@if command -v bicep >/dev/null 2>&1; then \
		set -e; \
		echo "==> bicep build + lint (Bicep CLI $$(bicep --version))"; \
		bicep build infra/main.bicep --stdout >/dev/null; \
		bicep build-params infra/main.bicepparam --stdout >/dev/null; \
		bicep lint infra/main.bicep; \
		for f in infra/modules/*.bicep; do bicep lint "$$f"; done; \
	else \
		echo "==> Bicep CLI not on PATH: skipped bicep build and lint (syntax only)."; \
		echo "    Install it (https://aka.ms/bicep-install, or 'az bicep install' and use 'az bicep build') to check types and the Microsoft Graph extension."; \
	fi
# ---- end infra ----

# ---- browser + CMS client (owned by the newcomer work) ----
E2E_PKGS := ./handler/internal/browsertest/ ./handler/internal/cmsclienttest/ ./handler/internal/djangotest/

# Debian's chromium (the browser test), python3-requests (the Python CMS
# client test) and python3-django (the Django reference integration's
# tests), installed only when missing. As root (CI, a fresh machine) it runs
# apt-get; otherwise it says what to install and goes on: the tests then
# fail with the same advice unless SKIP_BROWSER=1 / SKIP_PYTHON=1 /
# SKIP_DJANGO=1. The Django tests need requests and Django in one python3.
.PHONY: test-deps
test-deps: ## Install Debian chromium, python3-requests and python3-django when missing (browser, Python client, Django tests; needs root)
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	{ python3 -c 'import requests' || /usr/bin/python3 -c 'import requests'; } >/dev/null 2>&1 || missing="$$missing python3-requests"; \
	{ python3 -c 'import django, requests' || /usr/bin/python3 -c 'import django, requests'; } >/dev/null 2>&1 || \
		missing="$$missing python3-django$$(case "$$missing" in *python3-requests*) ;; *) echo ' python3-requests';; esac)"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "==> missing:$$missing. Not installing (needs root and apt-get): run"; \
		echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends$$missing"; \
		echo "    Until then the browser / Python client / Django tests fail (SKIP_BROWSER=1 / SKIP_PYTHON=1 / SKIP_DJANGO=1 skip them)."; \
		exit 0; \
	fi; \
	echo "==> installing Debian packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q && apt-get install -y -q --no-install-recommends $$missing

.PHONY: e2e
e2e: deps test-deps ## Run only the real-browser test, the Python CMS client test and the Django tests (screenshots: testoutput/browser/)
	$(GO) test -count=1 -v $(E2E_PKGS)
# ---- end browser + CMS client ----

# ---- bench (owned by the benchmark work) ----
.PHONY: bench
bench: deps ## Benchmark the refresh sweep and token API on Azurite + the stand-in; writes docs/benchmarks.md
	BENCH_COMMAND="make bench" $(GO) run ./handler/cmd/bench -out docs/benchmarks.md $(BENCH_FLAGS)
# ---- end bench ----

# ---- fuzz + load (owned by the hardening work) ----
FUZZTIME   ?= 5m
FUZZFLAGS  ?=
DURATION   ?= 60s
LOAD_FLAGS ?=

.PHONY: fuzz
fuzz: ## Run every fuzz target under ./handler for FUZZTIME each (default 5m), one after another (FUZZFLAGS="-parallel 1" to share a machine)
	@set -eo pipefail; targets=$$(mktemp); trap 'rm -f "$$targets"' EXIT; \
	$(GO) test -run '^$$' -list '^Fuzz' ./handler/... \
		| awk '/^Fuzz/ { t[n++] = $$1 } /^ok / { for (i = 0; i < n; i++) print $$2, t[i]; n = 0 }' > "$$targets"; \
	echo "==> $$(wc -l < "$$targets") fuzz targets, $(FUZZTIME) each"; \
	while read -r pkg target; do \
		echo "==> $$target ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) "$$pkg" < /dev/null; \
	done < "$$targets"

.PHONY: load
load: deps ## Load test on loopback: 1,000 users connected, 200 CMS clients for DURATION (default 60s) while sweeps run; fails on any 5xx, lost data or memory growth
	$(GO) run ./handler/cmd/load -duration $(DURATION) $(LOAD_FLAGS)
# ---- end fuzz + load ----
