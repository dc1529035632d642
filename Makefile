# The front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
NPM_DIR   := .devtools/npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed
export AZURITE_TABLE_BIN := $(CURDIR)/$(NPM_DIR)/node_modules/.bin/azurite-table

.PHONY: help
help: ## List every target
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

.PHONY: test
test: deps ## Run the whole test suite (unit, Azurite, browser, Python client, infra checks)
	$(GO) vet ./...
	$(GO) test -count=1 ./...

.PHONY: run
run: deps ## Run everything locally: Azurite, the Microsoft stand-in, the handler and a demo CMS page
	$(GO) run ./handler/cmd/devrun

# ---- infra (owned by the infra work) ----
BICEP_FILES := $(shell find infra -name '*.bicep' -o -name '*.bicepparam' 2>/dev/null | sort)

.PHONY: package
package: ## Build dist/app.zip: host.json, handler (linux/amd64, static) and the function folders
	$(GO) run ./handler/cmd/package -out dist/app.zip

.PHONY: deploy
deploy: package ## Deploy to Azure with the az CLI (infra/deploy.sh; RESOURCE_GROUP, LOCATION, DEPLOY_PARAMS)
	infra/deploy.sh

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
# ---- end browser + CMS client ----

# ---- bench (owned by the benchmark work) ----
# ---- end bench ----
