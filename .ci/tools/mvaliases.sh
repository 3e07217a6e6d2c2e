#!/bin/sh
# Drop the alias tables that re-exported stack/packet's and flow's names
# (issue 13 item 5: `duplicates` listed them as copies): fault.In/Out/Both,
# fault.Direction, fault.Flag*, fault.Proto* -> packet.*; flow.Dir/In/Out ->
# packet.*; capture.Kind* -> flow.Kind*. Re-runnable over a branch.
set -eu
PKT=github.com/unplug-dev/unplug/stack/packet
FLOW=github.com/unplug-dev/unplug/stack/fault/flow
GOFILES=$(git ls-files --cached --others --exclude-standard '*.go' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done | grep -v '^stack/packet/')
FAULT_NAMES="Direction In Out Both FlagFIN FlagSYN FlagRST FlagPSH FlagACK FlagURG FlagECE FlagCWR ProtoICMP ProtoTCP ProtoUDP ProtoICMPv6"
KINDS="Kind KindOther KindNew KindRetransmit KindKeepaliveProbe KindZeroWindowProbe"
KEYS='In|Out|Both|Direction|Flag[A-Z]+|Proto[A-Za-z0-9]+'

# rw FILE... : gofmt -r the rules in $RULES (one "a -> b" a line) over the files using them.
rw() { # PATTERN RULE FILES...
  pat=$1; rule=$2; shift 2
  for f in $(grep -lwE "$pat" "$@" /dev/null || true); do gofmt -r "$rule" -w "$f"; done
}
# 1. Qualified uses: fault.X -> packet.X, capture.KindX -> flow.KindX.
for n in $FAULT_NAMES; do rw "fault\.$n" "fault.$n -> packet.$n" $GOFILES; done
for n in $KINDS; do rw "capture\.$n" "capture.$n -> flow.$n" $GOFILES; done
# 2. Unqualified uses inside the packages that declared the aliases.
FAULTPKG=$(ls stack/fault/*.go)
for n in $FAULT_NAMES; do rw "$n" "$n -> packet.$n" $FAULTPKG; done
CAPPKG=$(ls stack/capture/*.go)
for n in $KINDS; do rw "$n" "$n -> flow.$n" $CAPPKG; done
FLOWPKG=$(ls stack/fault/flow/*.go)
rw "In" "In -> packet.In" $FLOWPKG
rw "Out" "Out -> packet.Out" $FLOWPKG
rw "Dir" "Dir -> packet.Direction" $FLOWPKG
# gofmt -r also rewrites struct-literal keys (Stats{In: ..}, Segment{Dir: ..}); put them back
# (case clauses keep the qualified name).
sed -i -E "/^\s*case /!s/([{,(]\s*|^\s+)packet\.($KEYS):/\1\2:/g" $FAULTPKG
sed -i -E "/^\s*case /!s/([{,(]\s*|^\s+)flow\.(Kind):/\1\2:/g" $CAPPKG
sed -i -E "/^\s*case /!s/([{,(]\s*|^\s+)packet\.Direction:/\1Dir:/g; /^\s*case /!s/([{,(]\s*|^\s+)packet\.(In|Out):/\1\2:/g" $FLOWPKG
# A file importing stack/packet as pkt (capture/log.go did) gets it under its own name,
# which goimports would otherwise add a second time.
for f in $(grep -lE "^\s*pkt \"$PKT\"" $GOFILES || true); do
  sed -i -E "/^\s*pkt \"/d; s/\bpkt\.(AppendFlags|FlagString|Flag[A-Z]+|Proto[A-Za-z0-9]+|Direction|In|Out|Both)\b/packet.\1/g" "$f"
done
# 3. Imports.
addimport() { # FILE PATH
  grep -q "\"$2\"" "$1" || { awk -v path="$2" -f .ci/tools/addimport.awk "$1" >"$1.new" && mv "$1.new" "$1"; }
}
for f in $(grep -lE '^\s*[^/[:space:]].*\bpacket\.[A-Z]' $GOFILES || true); do addimport "$f" "$PKT"; done
for f in $(grep -lE '^\s*[^/[:space:]].*\bflow\.Kind' $GOFILES || true); do addimport "$f" "$FLOW"; done
go run golang.org/x/tools/cmd/goimports@v0.51.0 -w $(grep -l "\"$PKT\"\|\"$FLOW\"" $GOFILES)
