# Tether — make targets. `make test` is what CI runs (.ci/run); it installs
# what it needs on a fresh Debian machine (redis-server, systemd-analyze via
# apt-get; Go tools pinned in tools/go.mod and run with `go tool`).

SHELL     := /bin/bash
GO        ?= go
TOOL      := $(GO) tool -modfile=tools/go.mod
BIN       := bin
# VERSION / COMMIT: packaging/version.sh (1.2.3 on a v1.2.3 tag, else
# 0.0.0+git<commit time>.<hash>; ".dirty" / "-dirty" with local changes).
VERSION   ?= $(shell packaging/version.sh 2>/dev/null || echo devel)
COMMIT    ?= $(shell packaging/version.sh --commit 2>/dev/null)
LDFLAGS   := -X github.com/tetherhq/tether/internal/version.Version=$(VERSION) -X github.com/tetherhq/tether/internal/version.Commit=$(COMMIT)
PREFIX    ?= /usr/local
DESTDIR   ?=
CMDS      := tether-server tether-agent tether-gateway tether-loadgen

.PHONY: bench fuzz breaking all build generate lint fmt-check vet buf-lint check-generated test test-short deps run install clean tools

all: build

## build: compile the binaries into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -tags grpcnotrace -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

## generate: regenerate api/ from the .proto files (offline: local plugins only)
generate:
	$(TOOL) buf generate

## deps: install the system packages the tests use, when missing
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi; \
	if ! command -v chromium >/dev/null; then \
	  echo "installing: chromium (for the browser test; it skips if this fails)"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium could not be installed; the browser test will skip"; \
	fi; \
	command -v redis-server >/dev/null || { echo "redis-server still missing"; exit 1; }

## tools: build the pinned Go tools once (buf, protoc plugins, grpcurl)
tools:
	$(TOOL) -n buf >/dev/null 2>&1 || true
	$(GO) build -modfile=tools/go.mod -o /dev/null github.com/bufbuild/buf/cmd/buf

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

buf-lint:
	$(TOOL) buf lint

## breaking: check the API for breaking changes against the main branch
breaking:
	@if git rev-parse --verify -q main >/dev/null; then $(TOOL) buf breaking --against '.git#branch=main'; \
	else echo "no main branch here; skipping buf breaking"; fi

## check-generated: fail when the committed generated code is stale
check-generated:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(TOOL) buf generate -o $$tmp && \
	for f in $$(cd $$tmp && find . -type f); do \
	  cmp -s "$$tmp/$$f" "$$f" || { echo "generated file is stale: $$f (run make generate)"; exit 1; }; \
	done; echo "generated code is up to date"

lint: fmt-check vet buf-lint breaking check-generated

## test: everything CI checks
test: deps lint
	$(GO) test -race -count=1 -timeout 12m ./...
	# The randomized reboot race at full count, without -race (the -race run
	# replays fewer cases: server/session/race_on_test.go says why).
	$(GO) test -count=1 -run 'UnderRandomInterleavings' ./server/session

## fuzz: a short run of every fuzz target (FUZZTIME each; seed corpora live in testdata/fuzz; scripts/fuzz.sh)
FUZZTIME ?= 10s
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## test-short: unit tests only, no race detector
test-short:
	$(GO) test -short ./...

## run: server + embedded gateway + one demo agent, in the foreground (Ctrl-C stops all)
run: build
	@scripts/run.sh

## bench: run the benchmarks with the real binaries and rewrite docs/BENCHMARKS.md (≈10 min; BENCH=… picks scenarios)
BENCH ?= detect,floors,hold,redis,commands
bench: build deps
	$(GO) run ./bench -scenarios $(BENCH) > docs/BENCHMARKS.md.new
	@# keep the Footprint section (`make footprint` owns it) unless the new file has one
	@grep -q '<!-- footprint:begin -->' docs/BENCHMARKS.md.new || ! grep -q '<!-- footprint:begin -->' docs/BENCHMARKS.md || \
	  { echo; sed -n '/<!-- footprint:begin -->/,/<!-- footprint:end -->/p' docs/BENCHMARKS.md; } >> docs/BENCHMARKS.md.new
	mv docs/BENCHMARKS.md.new docs/BENCHMARKS.md
	@echo "docs/BENCHMARKS.md rewritten"

## faults: the fault-injection suite (e2e TestFault*: real binaries, real Redis) at full size with the
## production liveness defaults (≈4 min on 2 CPUs); rewrites docs/RELIABILITY.md from its results, even when a
## scenario fails (its row says so; the target then fails too)
.PHONY: faults faults-quick
FAULTS_ROWS := docs/.faults-rows
faults: deps
	@rm -f $(FAULTS_ROWS); \
	echo "TETHER_FAULTS=full TETHER_FAULTS_REPORT=$(CURDIR)/$(FAULTS_ROWS) $(GO) test -count=1 -timeout 40m -run '^TestFault' -v ./e2e/"; \
	TETHER_FAULTS=full TETHER_FAULTS_REPORT=$(CURDIR)/$(FAULTS_ROWS) $(GO) test -count=1 -timeout 40m -run '^TestFault' -v ./e2e/; \
	rc=$$?; \
	{ \
	  echo '# Reliability: fault-injection results'; \
	  echo; \
	  echo 'Generated by `make faults` from its own run; do not edit by hand. Each row is one `TestFault*`'; \
	  echo 'scenario of `e2e/faults_*_test.go`, run at full size against the real binaries (`tether-server`,'; \
	  echo '`tether-agent`, `tether-loadgen`) and a real `redis-server`, with the production liveness defaults'; \
	  echo '(ping interval 10 s + ping timeout 5 s, lease TTL 15 s) unless the row says otherwise. After each fault'; \
	  echo 'the registry is read back through the JSON API (`/v1/devices`, paged): online count, node, lease and'; \
	  echo 'last disconnect of every device, and the replicas'"'"' `tether_sessions` gauges against the online count.'; \
	  echo 'Detection times are the server'"'"'s own session-end timestamps minus the moment of the fault.'; \
	  echo 'Plain `go test ./e2e/` (CI) runs the same scenarios at reduced size (`make faults-quick`).'; \
	  echo; \
	  echo "- date: $$(date -u '+%Y-%m-%d %H:%M:%S UTC')"; \
	  echo "- machine: $$(nproc) CPUs, $$(free -g 2>/dev/null | awk '/^Mem:/{print $$2 " GiB RAM, "}')Linux $$(uname -r), $$($(GO) env GOVERSION), Redis $$(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')"; \
	  echo "- command: \`TETHER_FAULTS=full TETHER_FAULTS_REPORT=$(FAULTS_ROWS) go test -count=1 -timeout 40m -run '^TestFault' -v ./e2e/\`"; \
	  echo "- result: $$(if [ $$rc = 0 ]; then echo PASS; else echo "FAIL (go test exit status $$rc)"; fi)"; \
	  echo; \
	  echo '| scenario | injected | asserted | measured result |'; \
	  echo '|---|---|---|---|'; \
	  sort $(FAULTS_ROWS) 2>/dev/null || echo '| (no scenario reported a result) | | | |'; \
	} > docs/RELIABILITY.md.new && mv docs/RELIABILITY.md.new docs/RELIABILITY.md && rm -f $(FAULTS_ROWS) && \
	echo "docs/RELIABILITY.md rewritten" || rc=1; \
	exit $$rc

## faults-quick: the same scenarios at the reduced size plain `go test ./e2e/` runs (≈2 min); prints the table
faults-quick: deps
	@rows=$$(mktemp); trap 'rm -f "$$rows"' EXIT; \
	TETHER_FAULTS= TETHER_FAULTS_REPORT=$$rows $(GO) test -count=1 -timeout 15m -run '^TestFault' -v ./e2e/; \
	rc=$$?; \
	echo; echo '| scenario | injected | asserted | measured result |'; echo '|---|---|---|---|'; sort "$$rows"; \
	exit $$rc

## install: binaries under $(DESTDIR)$(PREFIX)/bin, systemd units (ExecStart
## pointing there) and example configs under $(DESTDIR)/etc; an existing
## config is kept, never overwritten
UNITS := agent/systemd/tether-agent.service server/systemd/tether-server.service gateway/systemd/tether-gateway.service
CONFIGS := agent/systemd/agent.example.yaml:agent.yaml server/systemd/server.example.env:server.env gateway/systemd/gateway.example.env:gateway.env
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/tether
	install -m 0755 $(addprefix $(BIN)/,tether-server tether-agent tether-gateway) $(DESTDIR)$(PREFIX)/bin/
	@for u in $(UNITS); do \
	  dst=$(DESTDIR)/etc/systemd/system/$${u##*/}; echo "install $$u -> $$dst"; \
	  sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' "$$u" > "$$dst.tmp" && chmod 0644 "$$dst.tmp" && mv -f "$$dst.tmp" "$$dst" || exit 1; \
	done
	@for c in $(CONFIGS); do \
	  src=$${c%%:*}; dst=$(DESTDIR)/etc/tether/$${c##*:}; \
	  if [ -e "$$dst" ]; then echo "keep $$dst (exists; the new example is $$src)"; \
	  else echo "install $$src -> $$dst"; install -m 0640 "$$src" "$$dst" || exit 1; fi; \
	done

clean:
	rm -rf $(BIN)

## dist: every release artifact into dist/ (packaging/dist.sh): static, stripped, stamped binaries for
## linux (agent: amd64 arm64 armv7 armv6; server, gateway: amd64 arm64), tarballs, .deb/.rpm, SHA256SUMS.
## ARCHS=amd64 limits the architectures. Reproducible: `make dist-check` builds it twice and compares.
DIST  ?= dist
ARCHS ?= amd64 arm64 armv7 armv6
.PHONY: dist packages dist-check footprint
dist:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' ARCHS='$(ARCHS)' packaging/dist.sh $(DIST)

## packages: the .deb and .rpm files (and the binaries they hold) only, into dist/, with SHA256SUMS
packages:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' ARCHS='$(ARCHS)' TARBALLS=0 packaging/dist.sh $(DIST)

## dist-check: build dist twice, each with its own empty Go build cache, and compare every byte (slow: ≈2 full
## builds per architecture)
dist-check:
	@set -e; tmp=$$(mktemp -d); trap 'chmod -R u+w $$tmp; rm -rf $$tmp' EXIT; \
	for run in a b; do \
	  echo "dist-check: run $$run (GOCACHE=$$tmp/cache-$$run)"; \
	  GOCACHE=$$tmp/cache-$$run VERSION='$(VERSION)' COMMIT='$(COMMIT)' ARCHS='$(ARCHS)' packaging/dist.sh $$tmp/$$run >/dev/null; \
	done; \
	if cmp -s $$tmp/a/SHA256SUMS $$tmp/b/SHA256SUMS; then echo "dist-check: identical ($$(wc -l < $$tmp/a/SHA256SUMS) files)"; \
	else diff $$tmp/a/SHA256SUMS $$tmp/b/SHA256SUMS; echo "dist-check: NOT reproducible"; exit 1; fi

## footprint: release binary sizes per architecture and the amd64 agent's idle RSS/CPU against a local
## tether-server (10 s pings); rewrites the "Footprint" section of docs/BENCHMARKS.md in place (≈3 min)
footprint:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' packaging/footprint.sh docs/BENCHMARKS.md
