#!/bin/sh
# Issue 13 item 6: the public surface stays in cmd/, stack/ (the peer,
# fault, control, services), tun/ and scenarios/ (plus the root package and
# bench/); implementation packages move under internal/. Run from the
# repository root, after .ci/tools/mvpacket.sh and .ci/tools/mvaliases.sh
# (they name the old paths). Re-runnable over a branch: a package already
# moved is skipped, and the path rewrite only finds old paths.
set -eu
M=github.com/unplug-dev/unplug
# old directory -> new directory (the package names do not change)
MOVES="stack/packet:internal/packet
stack/fault/flow:internal/flow
stack/units:internal/units
stack/errno:internal/errno
stack/netaddr:internal/netaddr
stack/netstack:internal/netstack
stack/capture:internal/capture
stack/vlink:internal/vlink
tun/sockdiag:internal/sockdiag
tun/tuntest:internal/tuntest
scenarios/reference:internal/reference"

mkdir -p internal
for m in $MOVES; do
  old=${m%%:*}; new=${m##*:}
  if [ -d "$old" ]; then
    # Untracked files of a branch (new tests) move too.
    git mv "$old" "$new" 2>/dev/null || { mkdir -p "$(dirname "$new")"; mv "$old" "$new"; }
  fi
done

# Every text file git knows (Go, docs, Makefile, CI scripts but this one's
# siblings, which name the old paths on purpose): rewrite import paths,
# ./old package patterns, old/ paths in prose and symbol names.
FILES=$(git ls-files --cached --others --exclude-standard | sort -u | while read -r f; do
  [ -f "$f" ] && case "$f" in .ci/tools/*|*.pcapng|*.bin|*/testdata/*) ;; *) echo "$f" ;; esac
done)
for m in $MOVES; do
  old=${m%%:*}; new=${m##*:}
  oldre=$(printf '%s' "$old" | sed 's|/|\\/|g'); newre=$(printf '%s' "$new" | sed 's|/|\\/|g')
  # module paths (imports, symbol names such as .../stack/vlink.(*Clock).FireNext)
  # and paths relative to the root (./stack/vlink, stack/vlink/doc.go, `stack/vlink`)
  grep -lE "(^|[^A-Za-z0-9_/.]|\./)$old([/\"\` .:,)]|$)|unplug/$old" $FILES 2>/dev/null | while read -r f; do
    sed -i -E "s#unplug/$oldre([\"/. ]|\$|\))#unplug/$newre\1#g; s#(^|[^A-Za-z0-9_/.])(\./)?$oldre([/\"\` .:,)]|\$)#\1\2$newre\3#g" "$f"
  done
done
# RACE_PKGS had the flow tracker through ./stack/fault/...; the benchmarks
# ran ./stack/...: the moved packages' too.
grep -q 'internal/flow' Makefile || sed -i -E 's#(RACE_PKGS = .*)\./stack/fault/\.\.\.#\1./stack/fault/... ./internal/flow#' Makefile
sed -i -E 's#(bench \. -benchmem) \./stack/\.\.\.$#\1 ./stack/... ./internal/...#' Makefile
gofmt -w $(git ls-files --cached --others --exclude-standard '*.go' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done)
