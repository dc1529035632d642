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
# ---- end infra ----
