# unplug — build, test and debug targets. `make test` is what CI runs.
GO ?= go

.PHONY: build test deps debug bench

build:
	$(GO) build -o unplug ./cmd/unplug

# Installs what the tests use (tshark to read captures back, curl and iperf3
# as real clients) when missing, vets, runs a few seconds of every fuzz
# target, then every test (go test's summary comes last). Run as root for
# the namespace tests; without root they skip.
test: deps
	$(GO) vet ./...
	GO=$(GO) .ci/fuzz
	$(GO) test -count=1 -timeout 40m ./...

deps:
	@missing=""; \
	for c in tshark curl iperf3 unshare ip iptables redis-server redis-cli psql runuser; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import requests' 2>/dev/null || missing="$$missing python3-requests"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq >/dev/null && apt-get install -y -qq tshark curl iperf3 util-linux iproute2 iptables python3-requests redis-server redis-tools postgresql postgresql-client >/dev/null; \
	fi

# A binary without optimizations or inlining, for delve (docs/debugging.md).
debug:
	$(GO) build -gcflags=all='-N -l' -o unplug-debug ./cmd/unplug

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./stack/...

# A few seconds of every fuzz target (FUZZTIME=5s each), as CI runs it.
.PHONY: fuzz-smoke
fuzz-smoke:
	GO=$(GO) .ci/fuzz
