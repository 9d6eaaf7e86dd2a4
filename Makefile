# flannelu: `make demo` shows the cluster working, `make test` runs every test.
GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
BIN      := bin/flannelu
FUZZTIME ?= 10s

# The real kube-apiserver the Kubernetes-mode tests run, built from
# testbed/kubeapi (a module of its own) at the version its go.mod pins.
KUBE_APISERVER := .cache/bin/kube-apiserver
KUBE_VERSION   := $(shell sed -n 's|^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\)$$|\1|p' testbed/kubeapi/go.mod)
KUBE_LDFLAGS   := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
                  -X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(KUBE_VERSION:v%=%))) \
                  -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION:v%=%)))

.PHONY: all build release image deps flanneld test test-race test-386 demo demo-kube bench bench-go fuzz vet clean kube-apiserver

all: build

deps:
	@./scripts/deps.sh

# flanneld v0.20.2 (the bench's flanneld-udp path, mixed clusters) and v0.28.9
# (migration, rollback, nftables, flag parity) into bin/ when missing: minutes once.
flanneld: deps
	@./scripts/flanneld.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/flannelu

# The image (Dockerfile) with docker or podman, where one is installed.
IMAGE ?= flannelu:$(VERSION)
image:
	@engine=$$(command -v docker || command -v podman) || { echo "make image: no docker or podman here" >&2; exit 1; }; \
	echo "$$engine build -t $(IMAGE) --build-arg VERSION=$(VERSION) ."; \
	$$engine build -t $(IMAGE) --build-arg VERSION=$(VERSION) .

# For hosts without containers, and the image: a static binary (no cgo),
# stripped (-s -w) and without build paths (-trimpath); --version prints
# VERSION as flanneld prints its own (make release VERSION=v1.2.3).
RELEASE_BIN ?= bin/release/flannelu
release:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(RELEASE_BIN) ./cmd/flannelu

# Other platforms: vet for 32-bit Linux (syscall structs and atomics differ)
# and for a non-Linux system (where the daemon builds and stops at start
# with a clear error), a build for 64- and 32-bit ARM.
vet:
	$(GO) vet ./...
	GOOS=linux GOARCH=386 $(GO) vet ./...
	GOOS=darwin GOARCH=amd64 $(GO) vet ./...
	GOOS=linux GOARCH=arm64 $(GO) build ./...
	GOOS=linux GOARCH=arm $(GO) build ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# Built only when missing or older than testbed/kubeapi's files. The first
# build takes 7-20 minutes on two cores (2.8 GB of memory); later ones relink
# from the Go build cache.
kube-apiserver: $(KUBE_APISERVER)

$(KUBE_APISERVER): testbed/kubeapi/go.mod testbed/kubeapi/go.sum testbed/kubeapi/cmd/kube-apiserver/main.go
	@mkdir -p $(dir $@)
	cd testbed/kubeapi && $(GO) build -trimpath -ldflags "$(KUBE_LDFLAGS)" -o $(CURDIR)/$@ ./cmd/kube-apiserver
	@$@ --version

# The whole suite: unit, fuzz seed corpora, etcd, kube-apiserver, namespace
# end-to-end tests (root), then again under the race detector, then the data
# path as a 32-bit program.
test: deps build flanneld vet kube-apiserver
	$(GO) test -count=1 -timeout 24m ./...
	$(MAKE) test-race
	$(MAKE) test-386

# Every package under the race detector but e2e, whose daemons run as
# separate, uninstrumented processes, and cmd/demo, which has no tests.
RACE_PKGS = $(shell $(GO) list ./... | grep -v -e '/e2e$$' -e '/cmd/demo$$')

test-race:
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)

# The data path built for 386 and run on this (amd64) kernel: recvmmsg,
# sendmmsg, GSO/GRO control messages and TUN writes with 32-bit structs
# (compiled and vetted only, and said so, where the kernel runs no 32-bit
# program).
test-386:
	GO=$(GO) ./scripts/test-386.sh

# Built, then run (not go run, which exits 1 whatever the demo's status):
# Ctrl-C tears the cluster down and the demo exits 130 (SIGTERM: 143).
demo: deps build
	$(GO) build -o bin/demo ./cmd/demo
	bin/demo -flannelu $(BIN)

# The same cluster in Kubernetes mode, on a real kube-apiserver.
demo-kube: deps build kube-apiserver
	$(GO) build -o bin/demo ./cmd/demo
	bin/demo -flannelu $(BIN) -store kube

# Go micro benchmarks of the data path parts, then the end-to-end harness.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300ms -count 3 ./routetable/ ./internal/packet/ ./internal/offload/ ./encap/ ./tun/ ./internal/drop/ ./internal/trace/ ./backend/udp/ | tee bench/micro.txt

# Both layouts: the hosts sharing both CPUs, then each host on a CPU of its own.
# The udp-kube path runs the udp path against a real kube-apiserver.
bench: deps build flanneld kube-apiserver
	$(GO) run ./bench -flannelu $(BIN) -write BENCHMARKS.md
	$(GO) run ./bench -flannelu $(BIN) -write BENCHMARKS.md -pin

# Each fuzz target for FUZZTIME (go test runs one target per invocation).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
