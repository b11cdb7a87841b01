# idemsink: make help lists the targets.
GO ?= go
PKGS := ./...
# The version `consumer version` prints (-X main.version) and the image tag.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
IMAGE ?= localhost/idemsink/consumer
IMAGE_BASE ?= scratch
CA_ROOTS ?= /etc/ssl/certs/ca-certificates.crt

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the daemon into bin/consumer.
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/consumer ./cmd/consumer

.PHONY: image
image: ## Build the runtime image (FROM scratch: static binary built here, host CA roots), tagged with git describe and latest.
	scripts/containers setup
	@test -s $(CA_ROOTS) || { echo "image: no CA roots at $(CA_ROOTS) (apt-get install ca-certificates)" >&2; exit 1; }
	rm -rf bin/image && mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -tags timetzdata -ldflags "-s -w $(LDFLAGS)" -o bin/image/consumer ./cmd/consumer
	cp $(CA_ROOTS) bin/image/ca-certificates.crt
	podman build --pull=never --build-arg BASE=$(IMAGE_BASE) -f deploy/Containerfile -t $(IMAGE):$(VERSION) -t $(IMAGE):latest bin/image
	podman run --rm --read-only --network none $(IMAGE):$(VERSION) version
	podman image ls $(IMAGE):$(VERSION)

.PHONY: demo
demo: deps ## Run the whole pipeline on in-process Kafka and a throwaway PostgreSQL.
	$(GO) run ./cmd/consumer demo

.PHONY: deps
deps: ## Install missing test dependencies (PostgreSQL server, kcat) from Debian.
	scripts/deps

.PHONY: test
test: deps ## Run every test: unit, integration (real PostgreSQL, kfake), torture (fast).
	$(GO) test -count=1 -timeout 20m $(PKGS)

.PHONY: test-race
test-race: deps ## Run every test with the race detector.
	$(GO) test -count=1 -race $(PKGS)

.PHONY: test-kafka
test-kafka: ## Run the integration and torture suites against a real Apache Kafka broker.
	scripts/deps kafka
	scripts/test-kafka

.PHONY: test-debezium
test-debezium: ## Stream PostgreSQL and MariaDB sources through real Debezium connectors (Kafka Connect) into idemsink; compare the tables column by column.
	scripts/deps debezium
	scripts/test-debezium

.PHONY: test-containers
test-containers: ## Run the integration suite through testcontainers (podman, local images).
	scripts/test-containers

.PHONY: test-alerts
test-alerts: ## Check and unit-test the alert rules (promtool); rules and dashboard query registered metrics.
	scripts/deps deploy
	promtool check rules deploy/prometheus/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts_test.yaml
	$(GO) test -count=1 -run 'TestRulesQueryRegisteredMetrics|TestDashboardQueriesRegisteredMetrics|TestEveryAlertHasPromtoolTests|TestCheck' ./internal/metrics/

.PHONY: test-systemd
test-systemd: build ## Check deploy/systemd/idemsink.service offline (systemd-analyze verify and security).
	scripts/deps deploy
	scripts/test-systemd bin/consumer

.PHONY: stack-test
stack-test: ## Run deploy/compose.yaml on podman (local images): 2 static replicas, one killed mid-stream and timed back to work (<10s); table and Prometheus checked.
	scripts/stack-test

.PHONY: torture
torture: deps ## Run the long torture suite (100 crash cycles).
	TORTURE_LONG=1 $(GO) test -count=1 -v -timeout 60m ./internal/torture/

.PHONY: bench
bench: deps ## Run the throughput, replay and memory benchmarks (about 3 minutes on 2 cores).
	$(GO) run ./cmd/bench

.PHONY: bench-quick
bench-quick: deps ## Run a small benchmark (seconds), and the Go micro-benchmarks.
	$(GO) run ./cmd/bench -quick
	$(GO) test -run '^$$' -bench . -benchmem ./internal/record/ ./internal/decode/ ./internal/batch/ ./internal/sink/

.PHONY: fuzz
FUZZTIME ?= 20s
FUZZ_DECODE := FuzzDecode FuzzDiff FuzzNumeric FuzzCheckJSON FuzzFitNumeric FuzzAvro FuzzProtobuf FuzzDebezium

fuzz: ## Fuzz every decoder target in internal/decode for FUZZTIME each (default 20s).
	@for f in $(FUZZ_DECODE); do echo "fuzz: $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./internal/decode/ || exit 1; done

.PHONY: lint
lint: ## gofmt, go vet, and golangci-lint when installed.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) vet -tags debezium ./internal/debeziumtest/
	$(GO) vet -tags realkafka ./cmd/consumer/ ./internal/kafka/
	@if command -v golangci-lint >/dev/null; then golangci-lint run; else echo "lint: golangci-lint not installed, skipped"; fi

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin
