# unplug — build, test and debug targets. `make test` is what CI runs.
GO ?= go

.PHONY: build test deps debug bench

build:
	$(GO) build -o unplug ./cmd/unplug

# Packages whose whole test suite runs again under the race detector: the
# public package (its virtual dialer serves many goroutines), the
# data path (fault layer, flow tracker, capture, virtual link, services) and
# the control socket. Measured on 2 shared cores: about 30 s of tests once
# the race build (about 2 min, mostly gVisor) is cached.
RACE_PKGS = . ./internal/packet ./internal/units ./internal/errno ./stack/fault/... ./internal/flow \
	./internal/capture ./stack/control ./internal/vlink ./stack/services ./internal/netstack
# Tests of other packages that run under the race detector too: the
# virtual-time scenarios (no namespace, about 10 s).
RACE_SCENARIOS = '^TestVirtual'

# Debian packages the tests use: tshark reads captures back; curl, iperf3
# and python3 are real clients (the README tour); iproute2 and util-linux
# make namespaces; Podman with runc, uidmap (rootless) and catatonit (the
# pause process of recipe B) runs the container suite; iptables is the seed's
# own method, run as the reference beside unplug; python3-requests,
# redis-server/redis-tools and postgresql/postgresql-client are the real
# clients (and their servers) of the exec report's tests.
DEB_PACKAGES = tshark curl iperf3 util-linux iproute2 python3 \
	podman runc uidmap catatonit iptables \
	python3-requests redis-server redis-tools postgresql postgresql-client

# Installs DEB_PACKAGES when missing (as root, with apt-get); checks
# formatting (gofmt), that go.mod and go.sum are tidy, that the tree builds
# for macOS, vet and staticcheck; runs a few seconds of every fuzz target,
# the race detector on RACE_PKGS, the virtual scenarios and the
# hostile-traffic test (malformed and fragmented packets and injected
# super-packets on an offload TUN: stack/hostile_linux_test.go), then every
# test (go test's summary comes last: CI reads it). Run as root for the
# namespace tests; without root they skip.
test: deps lint
	GO=$(GO) .ci/fuzz
	$(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)
	$(GO) test -race -count=1 -timeout 10m -run $(RACE_SCENARIOS) ./scenarios
	$(GO) test -race -count=1 -timeout 10m -run '^TestHostileTraffic$$' ./stack/
	$(GO) test -count=1 -timeout 40m ./...

# The static gates of `make test`, quick enough to run before every commit.
.PHONY: lint
lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need gofmt -w:"; echo "$$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	GOOS=darwin $(GO) build ./...
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(DEB_PACKAGES); do \
			dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing:" $$missing; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; \
		fi; \
	fi

# A binary without optimizations or inlining, for delve (docs/debugging.md).
debug:
	$(GO) build -gcflags=all='-N -l' -o unplug-debug ./cmd/unplug

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./stack/... ./internal/...

# A few seconds of every fuzz target (FUZZTIME=5s each), as CI runs it.
.PHONY: fuzz-smoke
fuzz-smoke:
	GO=$(GO) .ci/fuzz
