SHELL := /bin/bash
# fleetgate — two commands on a fresh machine: `make run` and `make test`.
GO        ?= go
BIN       := bin/fleetgate
PKGS      := ./...
FUZZTIME  ?= 5s
E2E_APT   := prometheus prometheus-alertmanager victoria-metrics
TELEMETRYGEN_VERSION ?= v0.161.0
# Prometheus 3.16 for the remote-write differential test, built outside the repository.
PROM3_VERSION ?= v0.316.0
PROM3_RELEASE ?= 3.16.0
PROM3_DIR     ?= $(HOME)/.cache/fleetgate/prom3
PROM3         := $(PROM3_DIR)/prometheus
# golangci-lint for `make lint`, installed outside the repository by `make lint-deps`.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT_DIR     ?= $(HOME)/.cache/fleetgate/bin
GOLANGCI_LINT         := $(GOLANGCI_LINT_DIR)/golangci-lint

.PHONY: build run test unit fuzz e2e e2e-deps bench bench-compare prom3 rw-diff lint lint-deps fmt vet clean

build:
	$(GO) build -o $(BIN) ./cmd/fleetgate

## run: start fleetgate on its embedded defaults (dev mode, data in ./data)
run: build
	./$(BIN) --storage.path=data/

## test: vet and unit tests (incl. Prometheus's PromQL corpus over fleetgate storage and every fuzz
## target's seed corpus); fuzzing itself is `make fuzz` (CI runs it after the tests)
test: vet unit

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./e2e/
	$(GO) vet -tags promdiff ./ingest/promrw/

unit:
	$(GO) test -count=1 $(PKGS)

## fuzz: each fuzz target runs FUZZTIME (default 5s); run longer by hand with FUZZTIME=5m.
## Kept out of `make test`: it compiles every fuzzed package a second time, with coverage instrumentation.
fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
	  dir=$$(dirname $$spec); \
	  for fn in $$(grep -h '^func Fuzz' $$spec | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$dir $$fn"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$dir; \
	  done; \
	done

## e2e: end-to-end tests against real Prometheus, Alertmanager and VictoriaMetrics
e2e: e2e-deps
	set -o pipefail; PATH="$$PATH:$$($(GO) env GOPATH)/bin" $(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e/ 2>&1 | tee e2e.out

e2e-deps:
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null || ! command -v victoria-metrics >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(E2E_APT); \
	fi
	@PATH="$$PATH:$$($(GO) env GOPATH)/bin" command -v telemetrygen >/dev/null || $(GO) install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$(TELEMETRYGEN_VERSION)

## bench: Go benchmarks of the hot paths (comparison runner: see bench/README.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## bench-compare: fleetgate vs Debian's Prometheus 2.42 and VictoriaMetrics 1.79.5 on the same
## load, one at a time on 127.0.0.1; e.g. make bench-compare BENCH_ARGS="-clusters 10 -series 100000"
BENCH_ARGS ?=
bench-compare:
	$(GO) run ./bench/cmd/compare $(BENCH_ARGS)

## prom3: build Prometheus 3.16 into $(PROM3_DIR) if missing (about 7 minutes on 2 cores; never committed);
## the version string is stamped as Prometheus's own release build (promu) stamps it
prom3:
	@test -x $(PROM3) || { echo "building Prometheus $(PROM3_VERSION) into $(PROM3_DIR)"; \
	  GOBIN=$(PROM3_DIR) $(GO) install -ldflags "-X github.com/prometheus/common/version.Version=$(PROM3_RELEASE)" \
	    github.com/prometheus/prometheus/cmd/prometheus@$(PROM3_VERSION); }

## rw-diff: send the remote-write partial-acceptance corpus to Prometheus 3.16 and to bin/fleetgate,
## record Prometheus's answers in ingest/promrw/testdata/prometheus-3.16-partial.json, print both;
## e.g. make rw-diff RW_DIFF_ARGS="-rwdiff.case=exemplar" (without -rwdiff.update: check, do not record)
RW_DIFF_ARGS ?= -rwdiff.update
rw-diff: prom3 build
	$(GO) test -tags promdiff -count=1 -timeout 30m -v -run '^TestPromDiff$$' ./ingest/promrw/ \
	  -args -rwdiff.prometheus=$(PROM3) -rwdiff.fleetgate=$(CURDIR)/$(BIN) $(RW_DIFF_ARGS)

## lint: golangci-lint (.golangci.yml: govet, errcheck, staticcheck, unused, ineffassign, depguard, goimports;
## with the e2e and promdiff build tags), gofmt over every file (whatever its build tags), and the import
## rules of docs/architecture.md (internal/arch); fails on any finding
lint: lint-deps
	$(GOLANGCI_LINT) run ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) test -count=1 ./internal/arch/

## lint-deps: install golangci-lint $(GOLANGCI_LINT_VERSION) into $(GOLANGCI_LINT_DIR) when it is missing or
## another version (building it takes several minutes on 2 cores; never committed)
lint-deps:
	@if [ "$$($(GOLANGCI_LINT) version --short 2>/dev/null)" != "$(patsubst v%,%,$(GOLANGCI_LINT_VERSION))" ]; then \
	  echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $(GOLANGCI_LINT_DIR)"; \
	  GOBIN=$(GOLANGCI_LINT_DIR) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	fi

## fmt: gofmt every file, then goimports (fleetgate's own imports in their own group) through golangci-lint
fmt: lint-deps
	gofmt -w $$(git ls-files '*.go')
	$(GOLANGCI_LINT) fmt ./...

clean:
	rm -rf bin data e2e.out
