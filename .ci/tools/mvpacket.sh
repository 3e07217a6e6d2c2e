#!/bin/sh
# Move Packet/Parse from stack/fault into stack/packet (issue 13 item 1).
# Re-runnable over a branch: every step is a rewrite of what is still there.
set -eu
PKT=github.com/unplug-dev/unplug/stack/packet
FLOW=github.com/unplug-dev/unplug/stack/fault/flow
NAMES="Packet Parse ParsePrefix Fragment NotFragment FirstFragment LaterFragment ErrTruncated ErrVersion"
GOFILES=$(git ls-files --cached --others --exclude-standard '*.go' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done | grep -v '^stack/packet/')
# 1. Qualified uses outside the fault package: fault.X -> packet.X.
for n in $NAMES; do
  for f in $(grep -lw "fault\.$n" $GOFILES || true); do gofmt -r "fault.$n -> packet.$n" -w "$f"; done
done
# 2. Unqualified uses inside package fault (its own files and tests).
for n in $NAMES; do
  for f in $(grep -lw "$n" stack/fault/*.go || true); do gofmt -r "$n -> packet.$n" -w "$f"; done
done
# gofmt -r also rewrites composite-literal keys (Event{Packet: p}, Packet{Fragment: ...}); put them back.
sed -i -E 's/\bpacket\.(Packet|Fragment):/\1:/g' $GOFILES
# 3. Packet.Segment() (a method fault defined) becomes flow.SegmentOf(p).
for f in $(grep -l '\.Segment()' $GOFILES || true); do gofmt -r 'x.Segment() -> flow.SegmentOf(x)' -w "$f"; done
# 4. capture's test helper named packet() would shadow the package: call it parsed().
sed -i -E 's/\bpacket\(t(,| testing)/parsed(t\1/g' stack/capture/*_test.go
sed -i 's|^// packet parses data as|// parsed parses data as|' stack/capture/helpers_test.go
# 5. Imports: add stack/packet (and flow) where now used, then drop unused ones.
addimport() { # FILE PATH
  grep -q "\"$2\"" "$1" || { awk -v path="$2" -f .ci/tools/addimport.awk "$1" >"$1.new" && mv "$1.new" "$1"; }
}
for f in $(grep -lE '^\s*[^/[:space:]].*\bpacket\.[A-Z]' $GOFILES || true); do addimport "$f" "$PKT"; done
for f in $(grep -lE '^\s*[^/[:space:]].*\bflow\.SegmentOf' $GOFILES || true); do addimport "$f" "$FLOW"; done
go run golang.org/x/tools/cmd/goimports@v0.51.0 -w $(grep -l "\"$PKT\"\|\"$FLOW\"" $GOFILES)
