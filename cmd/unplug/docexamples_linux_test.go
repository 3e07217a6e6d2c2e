package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// docFiles are the documents whose shell commands TestDocExamples runs.
var docFiles = []string{"README.md", "docs/containers.md", "docs/debugging.md", "docs/fault-rules.md",
	"docs/performance.md", "docs/report-schema.md", "docs/facts.md"}

// docCommand is one shell command shown in a document: a `$ ` line (and its
// continuation lines) of a console block, with the output the document
// shows after it, or one line of an sh block.
type docCommand struct {
	file   string
	line   int
	text   string   // the command, comment stripped
	output []string // console blocks: the lines shown after it
	block  int      // index of the block in its file
}

func (c docCommand) key() string { return c.file + ": " + c.text }

// docCase says how to run a documented command and what to check.
type docCase struct {
	skip    string        // why it cannot run in CI (the only way to leave one out)
	code    int           // expected exit status
	want    []string      // regexps the output must match (besides a console block's own lines)
	stdin   string        // what the user types
	timeout time.Duration // 0 = 90 s
	dir     string        // "repo" = the repository root instead of the work directory
	// background: the command runs until the next command of its block
	// (or the block's end) and is then interrupted, like Ctrl-C; it is
	// ready once its output matches this regexp.
	background string
	// serveFirst starts this command in the background before the block
	// ("the peer running in one shell … the client in another"); it is
	// interrupted at the block's end, and its output must then have the
	// shape of the document's plain block starting with serveOutput.
	serveFirst, serveOutput string
	// report names the document's plain block (by its first line) whose
	// shape this command's output must have.
	report string
	// setup runs before the command: what the text around it describes
	// (a server to forward to, the addresses "+ addresses, link up" stands for).
	setup string
	// cleanup runs after the command (once stopped, for a background one):
	// what "when done" in the text means.
	cleanup string
	// codes are exit statuses accepted besides code, each for a reason
	// given in the entry (a timing row outside its tolerance on a loaded
	// machine).
	codes []int
	// timingMayFail accepts exit 1 when every row marked FAIL is a timing
	// row ("name *"): on a loaded machine the application wakes late
	// (measured: sendbuf-full under 20 busy loops on 2 cores, 3 of 25
	// runs 11–174 ms past the tolerance), while the mechanism rows must
	// still pass.
	timingMayFail bool
	// keepShown, if set, chooses the lines of a console block's shown
	// output that must appear (the others vary from run to run: timing
	// rows, generated names); want then checks what they stood for.
	keepShown func(line string) bool
	// writeShown names a file the document shows with `cat FILE`: the
	// test writes the shown text there first, so the commands after it
	// run the document's own file.
	writeShown string
	// serveWant are regexps the serveFirst command's output must match
	// once interrupted, for a serve whose output the document does not show.
	serveWant []string
	// check looks at what the command left in dir (the files it made).
	check func(t *testing.T, dir string)
}

// Skip reasons shared by several entries.
const (
	byPodman    = "run by TestPodman (cmd/unplug/podman_linux_test.go)"
	noDocker    = "no Docker engine here; the Podman equivalent is run by TestPodman (cmd/unplug/podman_linux_test.go)"
	podmanBuild = "the Dockerfile's golang stage fetches from the network; TestPodman builds the same final stage offline, as the ctx commands of docs/containers.md do (imageContexts)"
)

// docCases has an entry for every command in the documents (keyed
// "FILE: COMMAND"); TestDocExamples fails for a command without one, and
// for an entry whose command is no longer documented.
var docCases = map[string]docCase{
	// README: build and test.
	`README.md: go build -o unplug ./cmd/unplug && sudo ./unplug serve`: {dir: "repo", timeout: 5 * time.Minute,
		background: `unplug: peer 198\.18\.0\.2 and fd00:198:18::2 on unplug0`,
		want:       []string{`unplug: interrupt: shutting down`, `unplug: packets in \d+, out \d+, dropped 0, delayed 0`}},
	`README.md: sudo env "PATH=$PATH" make test`: {skip: "it is the CI command that runs this test: running it here would recurse"},

	// README: the first examples.
	`README.md: ./unplug run timeout`: {want: []string{`(?m)^outcome +ETIMEDOUT at \d+\.\d+ s`, `(?m)^verdict +PASS`}},
	// (also in the tour, where the outcome and verdict lines are shown)
	`README.md: ./unplug run timeout --clock virtual --retries2 15`: {want: []string{
		`(?m)^outcome +ETIMEDOUT at 1088\.000 s`, `(?m)^verdict +PASS`, `on the virtual clock`}},
	`README.md: ./unplug exec --fault 'drop after=1s for=3s' -- sh -c 'sleep 2; curl -s -o /dev/null -w "%{http_code} after %{time_total}s\n" http://198.18.0.2/'`: {
		// The SYN sent 2 s in meets the outage; connect succeeds with the
		// first SYN after it ends, about 2 s later (1 s resends: 1 to 3 s
		// on a loaded machine).
		want: []string{`(?m)^404 after [123]\.\d+s$`}},
	// The iptables reference beside the report. Its mechanism rows are
	// exact and checked; its timing rows and so its verdict may differ on
	// a loaded machine (a timestamp delayed past the tolerance), which
	// makes it exit 1: only the mechanism is asserted here, as
	// TestReference does without -reference.strict.
	`README.md: sudo ./unplug run timeout --reference`: {codes: []int{exitFail},
		keepShown: func(l string) bool {
			return !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "outcome since") && !strings.HasPrefix(l, "reference")
		},
		want: []string{
			`namespaces unplug-ref-cli-[0-9a-f]+ and unplug-ref-srv-[0-9a-f]+ on a veth pair, ` + "`" + `iptables(-nft|-legacy)? -A INPUT -p tcp --dport 8000 -j DROP` + "`",
			`(?m)^outcome +ETIMEDOUT +ETIMEDOUT +exact +ok$`, `(?m)^errnos +\[ETIMEDOUT\] +\[ETIMEDOUT\] +exact +ok$`,
			`(?m)^retransmissions and probes +5 +5 +exact: the same firing ends it +ok$`, `(?m)^kinds +retransmit ×5 +retransmit ×5 +exact +ok$`,
			`(?m)^#5 since first send +\d+\.\d+ s +\d+\.\d+ s +± \d+ ms +(ok|DIFFERS)$`,
			`(?m)^reference +(AGREES — same mechanism, every time within tolerance|DIFFERS — see the rows marked DIFFERS)$`}},
	// exec --reference: the program twice, unplug and iptables, side by
	// side. Its mechanism rows are exact and checked; a timing row may
	// miss its tolerance on a loaded machine, which makes it exit 1, so
	// the timing rows, the generated namespace names and the verdict line
	// are left to want.
	`README.md: sudo ./unplug exec --reference --retries2 4 --fault 'drop after=3s' -- python3 -c 'import socket,time; s=socket.create_connection(("198.18.0.2",7)); time.sleep(4); s.sendall(b"x"); s.recv(1)'`: {
		codes: []int{exitFail}, timeout: 2 * time.Minute,
		keepShown: func(l string) bool {
			return !strings.HasPrefix(l, "reference") && !strings.Contains(l, "± ") && !strings.Contains(l, "iptables") && !strings.Contains(l, "unplug-xref")
		},
		want: []string{
			`unplug: --reference: running python3 again in namespaces unplug-xref-cli-\d+-[0-9a-f]+ and unplug-xref-srv-\d+-[0-9a-f]+`,
			`(?m)^ +rule 1  server: iptables -A INPUT -m comment --comment unplug-1\.1 -j DROP  in place 3\.\d+ s to the end \(\d+\.\d+ s\); dropped [1-9]\d*, iptables counted [1-9]`,
			`(?m)^exit code +1 +1 +exact +ok$`, `(?m)^conn 1 ended +timeout-retries +timeout-retries +exact +ok$`,
			`(?m)^conn 1 retransmissions and probes +5 +5 +exact: the same firing ends it +ok$`,
			`(?m)^conn 1 #5 since first send +\d+\.\d+ s +\d+\.\d+ s +± \d+ ms +(ok|DIFFERS)$`,
			`(?m)^reference +(AGREES — every connection ended the same way, every time within tolerance|DIFFERS — see the rows marked DIFFERS)$`}},
	`README.md: sudo ./unplug bench`: {skip: "measures for minutes at full load on every core; bench's own tests run it with --quick"},
	`README.md: go build -o toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server`:                                      {dir: "repo", cleanup: "rm -f toxiproxy-server"},
	`README.md: sudo ./unplug bench --only bulk,bulk-down,forward-up,forward-down,forward-rtt --toxiproxy ./toxiproxy-server`: {skip: "minutes of transfers at full load; bench's TestForwardRows builds toxiproxy-server the same way and runs these rows with small sizes"},

	// README: the tour.
	`README.md: ./unplug run sendbuf-full`:             {timingMayFail: true},
	`README.md: ./unplug run brief-outage --outage 3s`: {timingMayFail: true},
	`README.md: ./unplug run idle-outage`:              {timingMayFail: true},
	`README.md: ./unplug run keepalive`:                {timingMayFail: true},
	`README.md: curl -si http://198.18.0.2/404 | head -1`: {
		serveFirst: "sudo ./unplug serve --pcap tour.pcapng", serveOutput: "unplug: interrupt: shutting down"},
	`README.md: sudo ./unplug fault add 'drop for=3s'`:                                            {},
	`README.md: curl -s -o /dev/null -w '%{http_code} after %{time_total}s\n' http://198.18.0.2/`: {},
	`README.md: python3 -c '
import socket, subprocess, time
s = socket.create_connection(("198.18.0.2", 80))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 5000)   # 5 s instead of ~15 min
time.sleep(0.2)
subprocess.run(["sudo", "./unplug", "fault", "add", "drop port=80"])
t = time.time()
s.sendall(b"GET /404 HTTP/1.0\r\n\r\n")
try:
    s.recv(100)
except OSError as e:
    print(repr(e), "after %.1f s" % (time.time() - t))'`: {},
	`README.md: sudo ./unplug fault list`:                    {},
	`README.md: sudo ./unplug fault add 'drop dir=sideways'`: {code: exitUsage},
	// Quoted in the prose after the tour; runs on the tour's capture.
	`README.md: tshark -r tour.pcapng -Y frame.comment -T fields -e frame.comment`: {
		want: []string{`(?m)^dropped by rule 1: drop for=3s$`, `(?m)^dropped by rule 2: drop port=80$`}},
	// "A whole report (`unplug run brief-outage`):"
	`README.md: unplug run brief-outage`: {report: "scenario   brief-outage"},

	// README: exec.
	`README.md: ./unplug exec -- curl -s http://198.18.0.2/404`: {want: []string{`Error code: 404`}},
	// The 3 s outage from the start meets curl's SYN; the SYN resent after
	// it gets through.
	`README.md: ./unplug exec --report --fault 'drop for=3s' -- curl -s -m 20 -o /dev/null -w '%{http_code} after %{time_total}s\n' http://198.18.0.2/`: {
		want: []string{`(?m)^404 after [3-9]\.\d+s$`, `(?m)^outcome +exit 0 at \d+\.\d+ s: the program exited with 0; 1 TCP connection: 1 closed$`,
			`(?m)^c1 +198\.18\.0\.1:\d+ → 198\.18\.0\.2:80 +upstream the peer's http service$`,
			`(?m)^ +fault +first drop \d+\.\d+ s, last \d+\.\d+ s, \d+ dropped; [1-9]\d* retransmissions`,
			`(?m)^ +ended +CLOSED at \d+\.\d+ s: the program closed it \(FIN\)`,
			// The fault met the handshake: the theory is connect()'s, from
			// the socket's TCP_SYNCNT and the namespace's linear timeouts.
			`(?m)^ +theory +connect\(\) failing with ETIMEDOUT ≈ 13\d s \(13\d s – 13\d s\) after the first SYN: 6 SYN retries \(TCP_SYNCNT, read from the socket\), tcp_syn_linear_timeouts=4, HZ \d+: SYNs resent at 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s \(10 retransmissions\)`,
			`(?m)^ +verdict +recovered \d+\.\d+ s after the first drop`}},
	// --timeout stops curl stuck in connect (SYNs dropped from 1 s on): its
	// exit status (SIGTERM) is unplug's, its connection reported hanging.
	`README.md: ./unplug exec --report --fault 'drop after=1s' --timeout 5s -- sh -c 'sleep 2; curl -s http://198.18.0.2/'`: {code: 128 + 15,
		want: []string{`(?m)^outcome +exit 143 at \d+\.\d+ s: the program exited with 143 \(--timeout 5s: SIGTERM\); 1 TCP connection: 1 hanging$`,
			`(?m)^ +opened +\d+\.\d+ s, never established`,
			`(?m)^ +ended +HANGING at \d+\.\d+ s: STILL HANGING: `,
			`(?m)^ +theory +connect\(\) failing with ETIMEDOUT ≈ 13\d s \(13\d s – 13\d s\) after the first SYN: 6 SYN retries \(TCP_SYNCNT, read from the socket\)`,
			`(?m)^ +verdict +did not notice the dead link in \d+\.\d+ s; its settings predict connect\(\) failing with ETIMEDOUT ≈ 13\d s`}},
	// "Does my program notice a dead connection?": dead.py is the
	// README's own, written from its cat block. The gate decides the exit
	// status; the timing row (and so the verdict) may miss on a loaded
	// machine, so the shape leaves them to want.
	`README.md: cat dead.py`: {writeShown: "dead.py"},
	`README.md: ./unplug exec --report --retries2 5 --fault 'drop after=1s' --expect 'detect<30s' -- python3 dead.py`: {
		timeout: 2 * time.Minute, keepShown: reportLines,
		want: []string{`(?m)^TimeoutError\(110, 'Connection timed out'\) after 1\d\.\d s$`,
			`(?m)^detect<30s +every connection a fault hit ends or recovers within 30\.0 s +c1 timeout-retries in \d+\.\d+ s +ok$`,
			`(?m)^verdict +(PASS|FAIL)`,
			`(?m)^ +ended +TIMEOUT-RETRIES at \d+\.\d+ s: retransmissions exhausted: tcp_retries2=5 after 5 RTO retransmissions \(ETIMEDOUT; theory ≈ 1\d\.\d s \(1\d\.\d s – 1\d\.\d s\)\) \[kernel\]$`,
			`(?m)^ +theory +no keepalive, no TCP_USER_TIMEOUT, tcp_retries2=5: a request in flight would wait ≈ 1\d\.\d s \(tcp_retries2: RTO #\d+\); an idle pooled connection would never notice$`,
			`(?m)^ +kernel +\d+ changes seen`}},
	// "The same for a running serve": serve --record in the background,
	// client.py written from the README's cat block, run in serve's
	// namespace (the test's), as "in another shell".
	`README.md: cat client.py`: {writeShown: "client.py",
		serveFirst: "sudo ./unplug serve --record", serveWant: []string{`unplug: interrupt: shutting down`,
			`unplug: rule 1 \(drop after=1s for=4s\): expired, matched \d+, dropped [1-9]\d*`}},
	`README.md: sudo ./unplug fault add 'drop after=1s for=4s'`: {},
	`README.md: python3 client.py`:                              {},
	`README.md: sudo ./unplug report --expect 'detect<30s' --expect reconnected`: {keepShown: reportLines,
		want: []string{`(?m)^outcome +running at \d+\.\d+ s: 2 TCP connections: 1 timeout-user, 1 closed$`,
			`(?m)^verdict +(PASS|FAIL)`,
			`(?m)^detect<30s +every connection a fault hit ends or recovers within 30\.0 s +c1 timeout-user in \d+\.\d+ s +ok$`,
			`(?m)^reconnected +a new connection to the same upstream succeeds after a fault hit one +c2 to 198\.18\.0\.2:7 after c1 was hit`,
			`(?m)^ +settings +no keepalive, TCP_USER_TIMEOUT 1\.00 s, tcp_retries2=15, RTO \d+ms, RTT [\d.]+[µm]s \(getsockopt\)$`,
			`(?m)^ +ended +TIMEOUT-USER at \d+\.\d+ s: TCP_USER_TIMEOUT 1\.00 s ran out after \d+ RTO retransmissions \(ETIMEDOUT; theory ≈ 1\.\d+ s`,
			`(?m)^ +theory +no keepalive, TCP_USER_TIMEOUT 1\.00 s, tcp_retries2=15: a request in flight would wait ≈ 1\.\d+ s \(TCP_USER_TIMEOUT: RTO #\d+\)`,
			`(?m)^ +ended +CLOSED at \d+\.\d+ s: the program closed it \(FIN\)`}},
	`README.md: ./unplug exec --forward 8080=127.0.0.1:8000 -- curl -s http://198.18.0.2:8080/`: {
		want: []string{`upstream of the doc test`}},
	`README.md: ./unplug exec --transparent --fault 'loss 5%' -- ./my-client`: {
		want: []string{`(?m)^200 from the real upstream$`}},

	// README: virtual time.
	`README.md: ./unplug run brief-outage --clock virtual --link-delay 20ms`: {
		want: []string{`(?m)^outcome +recovered at`, `(?m)^verdict +PASS`}},
	`README.md: ./unplug run timeout --clock virtual --step`: {stdin: "\nn 5\nc\n",
		want: []string{`#1 packet client→peer .* \[S\]`, `timer tcp\.\(\*sender\)\.retransmitTimerExpired`, `(?m)^outcome +ETIMEDOUT at 16\.000 s`}},

	// README: containers. The Podman lines are docs/containers.md's recipes
	// (see there); TestPodman runs them with its private TUN node, its own
	// image and container names, and this sandbox's ulimits and runtime.
	`README.md: podman build -t unplug .`: {skip: podmanBuild},
	`README.md: podman run -d --rm --name unplug --network none --cap-add NET_ADMIN --device /dev/net/tun unplug`: {
		skip: byPodman + " as recipe A (testRecipeA, image-default): these flags and the image's default serve"},
	`README.md: podman run --rm --network container:unplug my-app-image curl -s http://198.18.0.2/404`: {
		skip: byPodman + " (exercise): curl from its application image in the serve container's namespace; it adds -o /dev/null -m 30 -w to check the code"},
	`README.md: podman exec unplug /unplug fault add 'drop for=3s'`:  {skip: byPodman + " (exercise): verbatim but the container's name"},
	`README.md: sudo ip tuntap add unplug0 mode tun user "$(id -u)"`: {},
	`README.md: unplug serve --attach unplug0`: {
		// "+ addresses, link up" on the line before.
		setup:      "ip addr add 198.18.0.1/24 dev unplug0 && ip -6 addr add fd00:198:18::1/64 dev unplug0 nodad && ip link set unplug0 up",
		background: `unplug: peer 198\.18\.0\.2 and fd00:198:18::2 on unplug0`,
		want:       []string{`unplug: packets in \d+, out \d+`},
		cleanup:    "ip link del unplug0"},
	`README.md: podman run --rm --network none --security-opt unmask=/proc/sys --device /dev/net/tun unplug run timeout`: {
		skip: byPodman + " as recipe C (testRecipeC): these flags plus --user 0 and 65534 and --expect ETIMEDOUT"},
	`README.md: unplug exec -- curl -s http://198.18.0.2/404`: {want: []string{`Error code: 404`}},
	`README.md: unplug fault add 'drop dir=sideways'`:         {code: exitUsage},

	// docs/containers.md: the image.
	`docs/containers.md: podman build -t unplug .`: {skip: podmanBuild},
	// The offline build: run here for real in the repository (the test's
	// own binary is built the same way, so the go build is cached), and
	// the context it makes is the one TestPodman builds from.
	`docs/containers.md: mkdir -p ctx/out/root/tmp && chmod 1777 ctx/out/root/tmp`: {dir: "repo",
		check: func(t *testing.T, dir string) {
			if fi, err := os.Stat(filepath.Join(dir, "ctx/out/root/tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
				t.Errorf("ctx/out/root/tmp: %v %v, want a 1777 directory", fi.Mode(), err)
			}
		}},
	`docs/containers.md: CGO_ENABLED=0 go build -trimpath -o ctx/out/root/unplug ./cmd/unplug`: {dir: "repo", timeout: 5 * time.Minute,
		check: func(t *testing.T, dir string) {
			f, err := elf.Open(filepath.Join(dir, "ctx/out/root/unplug"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("ctx/out/root/unplug has an interpreter: not the static binary the image needs")
				}
			}
		}},
	`docs/containers.md: sed -n '/^FROM scratch/,$p' Dockerfile | sed 's|COPY --from=build /out/|COPY out/|' > ctx/Containerfile`: {dir: "repo",
		check: func(t *testing.T, dir string) {
			got, err := os.ReadFile(filepath.Join(dir, "ctx/Containerfile"))
			final, ferr := finalStage(filepath.Join(dir, "Dockerfile"))
			if err != nil || ferr != nil {
				t.Fatal(err, ferr)
			}
			if want := strings.ReplaceAll(final, "COPY --from=build /out/", "COPY out/"); string(got) != want {
				t.Errorf("ctx/Containerfile:\n%s\nwant what TestPodman builds from (imageContexts):\n%s", got, want)
			}
		},
		cleanup: "rm -rf ctx"},
	`docs/containers.md: podman build --network none -t unplug -f ctx/Containerfile ctx`: {
		skip: byPodman + " (build): podman build --quiet --network none -t NAME -f CTX/Containerfile CTX, on the context the three commands above make (checked here)"},

	// docs/containers.md: A.
	`docs/containers.md: podman run -d --rm --name unplug --network none --cap-add NET_ADMIN --device /dev/net/tun unplug`: {
		skip: byPodman + " as recipe A (testRecipeA, image-default): these flags and the image's default serve"},
	`docs/containers.md: docker run -d --rm --name unplug --network none --user 0 --cap-add NET_ADMIN --device /dev/net/tun unplug`: {skip: noDocker},
	`docs/containers.md: podman run --rm --network container:unplug my-app-image curl -s -o /dev/null -w '%{http_code}\n' http://198.18.0.2/404`: {
		skip: byPodman + " (exercise): curl from its application image in the serve container's namespace, with -m 30 and the time in -w"},
	`docs/containers.md: podman exec unplug /unplug fault add 'drop for=3s'`: {skip: byPodman + " (exercise): verbatim but the container's name"},
	`docs/containers.md: podman run --rm --network container:unplug my-app-image curl -s -o /dev/null -w '%{http_code} %{time_total}\n' http://198.18.0.2/404`: {
		skip: byPodman + " (exercise): through the outage, with -m 30 and no newline in -w"},
	`docs/containers.md: podman exec unplug /unplug fault list`: {skip: byPodman + " (faultList): with --json, to check the rule's drop count"},
	`docs/containers.md: podman stop unplug`:                    {skip: byPodman + " (end): podman stop -t 10, then checks nothing of the container is left"},
	`docs/containers.md: mkdir -m 0777 cap`: {check: func(t *testing.T, dir string) {
		if fi, err := os.Stat(filepath.Join(dir, "cap")); err != nil || fi.Mode().Perm() != 0o777 {
			t.Errorf("cap: %v %v, want a 0777 directory", fi.Mode(), err)
		}
	}, cleanup: "rmdir cap"},
	`docs/containers.md: podman run -d --rm --name unplug --network none --cap-add NET_ADMIN --device /dev/net/tun -v "$PWD/cap:/cap" unplug serve --pcap /cap/unplug.pcapng --fault 'drop port=9'`: {
		skip: byPodman + " as recipe A with a capture (testRecipeA, A/uid0 and A/uid65534-kill9-pcap): a 0777 private directory on /cap, /cap/a.pcapng"},
	`docs/containers.md: tshark -r cap/unplug.pcapng -T fields -e frame.number -e frame.comment`: {
		skip: byPodman + " (checkPcap): this tshark command on the recipe's capture after podman kill -s KILL (it ends that recipe with the kill, not podman stop)"},
	`docs/containers.md: podman run -d --rm --name unplug --network none --sysctl net.ipv6.conf.all.disable_ipv6=1 --sysctl net.ipv6.conf.default.disable_ipv6=1 --cap-add NET_ADMIN --device /dev/net/tun unplug`: {
		skip: byPodman + " (testIPv6Disabled): these flags"},
	`docs/containers.md: podman logs unplug`: {skip: byPodman + " (testIPv6Disabled): checks the IPv4-only line and no IPv6 address"},

	// docs/containers.md: B.
	`docs/containers.md: sudo ip tuntap add unplug0 mode tun user "$(id -u)"`:     {},
	`docs/containers.md: sudo ip addr add 198.18.0.1/24 dev unplug0`:              {},
	`docs/containers.md: sudo ip -6 addr add fd00:198:18::1/64 dev unplug0 nodad`: {},
	`docs/containers.md: sudo ip link set unplug0 up`:                             {},
	`docs/containers.md: unplug serve --attach unplug0`: {background: `unplug: peer 198\.18\.0\.2 and fd00:198:18::2 on unplug0`,
		want: []string{`unplug: packets in \d+, out \d+`}},
	`docs/containers.md: sudo ip link del unplug0`: {},
	`docs/containers.md: podman run -d --rm --name netns --network none -v /usr/bin/catatonit:/catatonit:ro --entrypoint /catatonit unplug -P`: {
		skip: byPodman + " as recipe B's holder (testRecipeB): these flags, catatonit from its LookPath"},
	`docs/containers.md: pid=$(podman inspect -f '{{.State.Pid}}' netns)`: {skip: byPodman + " (start): podman inspect -f '{{.State.Pid}}' NAME"},
	`docs/containers.md: sudo nsenter -t "$pid" -n ip tuntap add unplug0 mode tun user "$hostuid"`: {
		skip: byPodman + " (testRecipeB): nsenter -t PID -n ip …, the uid from podman's uid map (hostUID)"},
	`docs/containers.md: sudo nsenter -t "$pid" -n ip addr add 198.18.0.1/24 dev unplug0`: {skip: byPodman + " (testRecipeB): verbatim with the holder's pid"},
	`docs/containers.md: sudo nsenter -t "$pid" -n ip -6 addr add fd00:198:18::1/64 dev unplug0 nodad`: {
		skip: byPodman + " (testRecipeB): verbatim with the holder's pid"},
	`docs/containers.md: sudo nsenter -t "$pid" -n ip link set unplug0 up`: {skip: byPodman + " (testRecipeB): verbatim with the holder's pid"},
	`docs/containers.md: podman run -d --rm --name unplug --network container:netns --cap-drop ALL --user 65534 --device /dev/net/tun unplug serve --attach unplug0`: {
		skip: byPodman + " as recipe B (testRecipeB, B/uid65534; B/uid0 with --user 0)"},
	`docs/containers.md: podman run --rm --network container:netns my-app-image curl -s http://198.18.0.2/404`: {
		skip: byPodman + " (exercise): curl from its application image in the holder's namespace, with -o /dev/null -m 30 -w"},
	`docs/containers.md: podman stop unplug netns`:                                                 {skip: byPodman + " (end): podman stop -t 10 of each, serve first"},
	`docs/containers.md: docker run -d --rm --name netns --network none registry.k8s.io/pause:3.9`: {skip: noDocker},
	`docs/containers.md: pid=$(docker inspect -f '{{.State.Pid}}' netns)`:                          {skip: noDocker},
	`docs/containers.md: docker run -d --rm --name unplug --network container:netns --cap-drop ALL --user 65534 --device /dev/net/tun unplug serve --attach unplug0`: {
		skip: noDocker},
	`docs/containers.md: hostuid=$(awk -v u=65534 '$1 <= u && u < $1 + $3 { print $2 + u - $1 }' /proc/"$pid"/uid_map)`: {
		skip: "needs $pid of recipe B's holder; TestPodman computes the same host uid from podman's uid map (hostUID)"},

	// docs/containers.md: C.
	`docs/containers.md: podman run --rm --network none --security-opt unmask=/proc/sys --device /dev/net/tun unplug run timeout --expect ETIMEDOUT`: {
		skip: byPodman + " as recipe C (testRecipeC): these flags plus --user 0 and 65534"},
	`docs/containers.md: podman run --rm --network none --device /dev/net/tun my-app-image /unplug exec --fault 'drop for=2s' -- curl -s -o /dev/null -w '%{http_code} %{time_total}\n' http://198.18.0.2/404`: {
		skip: byPodman + " as recipe C (testRecipeC): in its application image, with --user, /usr/bin/curl -m 30 and no newline in -w"},
	`docs/containers.md: docker run --rm --network none --device /dev/net/tun --security-opt seccomp=unconfined --security-opt systempaths=unconfined --security-opt apparmor=unconfined unplug run timeout`: {
		skip: noDocker},
	`docs/containers.md: docker run --rm --network none --device /dev/net/tun --security-opt seccomp=unconfined my-app-image unplug exec -- ./my-client`: {
		skip: noDocker},

	// docs/debugging.md.
	`docs/debugging.md: unplug run timeout --clock virtual --step`: {},
	`docs/debugging.md: make debug`: {
		skip: "TestDelveBreakpoints builds the debug binary and drives the delve session below"},
	`docs/debugging.md: go tool dlv exec ./unplug-debug -- run timeout --clock virtual`: {
		skip: "interactive delve session: TestDelveBreakpoints drives these commands and checks what delve prints"},
}

// TestDocExamples runs every shell command of README.md and docs/*.md as
// the documents show it — `sudo` is a no-op (the test is root), `unplug`
// the binary under test — inside a private network namespace, each with a
// bounded time, and checks its exit status and the shape of its output:
// each line a console block shows after a command must appear, in order,
// with any number where the document has a number (samples are from
// another run); sh commands are checked by their docCases entry.
func TestDocExamples(t *testing.T) {
	if !requireNetns(t) {
		return
	}
	requireTools(t, "curl", "tshark", "ip", "python3")
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []docCommand
	plain := map[string][]string{} // plain blocks by "FILE: first line"
	for _, f := range docFiles {
		b, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			t.Fatal(err)
		}
		c, p := extractCommands(f, string(b))
		cmds = append(cmds, c...)
		for k, v := range p {
			plain[k] = v
		}
	}
	// Every command has a case; every case a command (prose commands are
	// checked against the file's text).
	seen := map[string]bool{}
	for _, c := range cmds {
		if _, ok := docCases[c.key()]; !ok {
			t.Errorf("%s:%d: no docCases entry for the documented command %q: add how to run and check it", c.file, c.line, c.text)
		}
		seen[c.key()] = true
	}
	for k := range docCases {
		if !seen[k] {
			file, text, _ := strings.Cut(k, ": ")
			b, _ := os.ReadFile(filepath.Join(repo, file))
			if !strings.Contains(string(b), "`"+text+"`") {
				t.Errorf("docCases entry %q: the command is not in %s any more", k, file)
			}
		}
	}
	checkPodmanClaims(t, cmds)
	if t.Failed() {
		return
	}
	w := newDocWorld(t, repo)
	for _, extra := range []string{ // quoted in prose, run after the blocks they follow
		`README.md: tshark -r tour.pcapng -Y frame.comment -T fields -e frame.comment`,
		`README.md: unplug run brief-outage`,
	} {
		file, text, _ := strings.Cut(extra, ": ")
		after := -1
		for i, c := range cmds {
			if c.file == file && strings.Contains(c.text, "fault add 'drop dir=sideways'") && after < 0 {
				after = i
			}
		}
		cmds = append(cmds[:after+1], append([]docCommand{{file: file, text: text, block: -1}}, cmds[after+1:]...)...)
	}
	var block []docCommand
	flush := func() {
		if len(block) > 0 {
			w.runBlock(t, block, plain)
		}
		block = nil
	}
	for _, c := range cmds {
		if len(block) > 0 && (block[0].file != c.file || block[0].block != c.block) {
			flush()
		}
		block = append(block, c)
	}
	flush()
}

// checkPodmanClaims holds the entries skipped as run by TestPodman to
// their claim: every option a documented Podman command uses (and its
// podman subcommand) is one podman_linux_test.go passes, as a Go string
// literal. A flag added to the document but not to TestPodman fails here.
func checkPodmanClaims(t *testing.T, cmds []docCommand) {
	t.Helper()
	src, err := os.ReadFile("podman_linux_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if !strings.HasPrefix(docCases[c.key()].skip, byPodman) {
			continue
		}
		words := shellWords(c.text)
		var need []string
		for i, w := range words {
			if strings.HasPrefix(w, "-") || (i > 0 && strings.HasSuffix(words[i-1], "podman")) {
				need = append(need, w)
			}
		}
		for _, w := range need {
			if !bytes.Contains(src, []byte(strconv.Quote(w))) {
				t.Errorf("%s:%d: %q uses %s, which TestPodman (podman_linux_test.go) never passes: its skip says TestPodman runs it", c.file, c.line, c.text, w)
			}
		}
	}
}

// shellWords splits a command into words as sh would, quotes removed
// (no expansion).
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
			}
			in = false
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// docWorld is the work directory and environment the commands run in.
type docWorld struct {
	repo, dir string
	env       []string
}

// newDocWorld makes the work directory: `unplug` and `./unplug` are the
// binary under test, `sudo` runs its arguments, `./my-client` is a client
// for --transparent, and a web server (the "real server" of --forward and
// --transparent) listens on port 8000 of the namespace's lo, also at
// 198.19.7.1 — an address only --transparent reaches from inside.
func newDocWorld(t *testing.T, repo string) *docWorld {
	dir := t.TempDir()
	w := &docWorld{repo: repo, dir: dir}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(unplugBinary(t), filepath.Join(dir, "unplug")))
	must(os.WriteFile(filepath.Join(dir, "sudo"), []byte("#!/bin/sh\nexec \"$@\"\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "my-client"), []byte("#!/bin/sh\n"+
		"curl -s -m 30 -o /dev/null -w '%{http_code} from the real upstream\\n' http://198.19.7.1:8000/\n"), 0o755))
	www := filepath.Join(dir, "www")
	must(os.Mkdir(www, 0o755))
	must(os.WriteFile(filepath.Join(www, "index.html"), []byte("upstream of the doc test\n"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "run"), 0o700))
	goDir := filepath.Dir(mustLookPath(t, "go"))
	w.env = []string{
		"PATH=" + dir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + goDir,
		"HOME=" + dir, "XDG_RUNTIME_DIR=" + filepath.Join(dir, "run"), "LANG=C.UTF-8",
		"GOCACHE=" + goEnv(t, "GOCACHE"), "GOMODCACHE=" + goEnv(t, "GOMODCACHE"), "GOFLAGS=" + os.Getenv("GOFLAGS"),
		"GOPROXY=" + goEnv(t, "GOPROXY"), "GOTOOLCHAIN=local",
	}
	for _, c := range [][]string{{"ip", "link", "set", "lo", "up"}, {"ip", "addr", "add", "198.19.7.1/32", "dev", "lo"}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	srv := exec.Command("/usr/bin/python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", www)
	must(srv.Start())
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for range 100 {
		if exec.Command("curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8000/").Run() == nil {
			return w
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the upstream web server did not start")
	return w
}

func mustLookPath(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s", name)
	}
	return p
}

func goEnv(t *testing.T, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// docProc is a documented command running in the background.
type docProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// start runs text in the background; it is ready once its output matches
// ready.
func (w *docWorld) start(t *testing.T, text, dir, ready string) *docProc {
	t.Helper()
	// All but the last of `a && b` run first; the last is exec'd so the
	// interrupt reaches unplug itself, as Ctrl-C would.
	parts := strings.Split(text, " && ")
	for _, p := range parts[:len(parts)-1] {
		if code, out := w.run(t, p, dir, "", 5*time.Minute); code != 0 {
			t.Fatalf("%s: exit %d\n%s", p, code, out)
		}
	}
	p := &docProc{cmd: exec.Command("sh", "-c", "exec "+parts[len(parts)-1]), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = dir, w.env, p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	re := regexp.MustCompile(ready)
	deadline := time.Now().Add(60 * time.Second)
	for !re.MatchString(p.out.String()) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready:\n%s", text, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready in 60 s:\n%s", text, p.out.String())
		}
	}
	return p
}

// stop interrupts p like Ctrl-C and returns its exit status and output.
func (p *docProc) stop(t *testing.T) (int, string) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop 30 s after SIGINT", p.cmd.Args)
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.cmd.ProcessState.ExitCode(), p.out.String()
}

// run runs text with sh to its end, bounded by timeout.
func (w *docWorld) run(t *testing.T, text, dir, stdin string, timeout time.Duration) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", text)
	cmd.Dir, cmd.Env = dir, w.env
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish in %s:\n%s", text, timeout, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// runBlock runs the commands of one block in order.
func (w *docWorld) runBlock(t *testing.T, block []docCommand, plain map[string][]string) {
	var serve *docProc
	var serveCase docCase
	var bg *docProc
	var bgCase docCase
	var bgName string
	stopBG := func() {
		if bg == nil {
			return
		}
		code, out := bg.stop(t)
		t.Run(bgName+"/stopped", func(t *testing.T) {
			if code != 0 {
				t.Errorf("exit %d after SIGINT, want 0:\n%s", code, out)
			}
			checkWant(t, bgCase.want, out)
		})
		w.cleanup(t, bgCase)
		bg = nil
	}
	for _, c := range block {
		dc := docCases[c.key()]
		name := fmt.Sprintf("%s:%d", c.file, c.line)
		if c.line == 0 {
			name = c.file + ":prose"
		}
		stopBG()
		if dc.skip != "" {
			t.Run(name, func(t *testing.T) { t.Skipf("%q: %s", c.text, dc.skip) })
			continue
		}
		dir := w.dir
		if dc.dir == "repo" {
			dir = w.repo
		}
		if dc.serveFirst != "" {
			serve, serveCase = w.start(t, dc.serveFirst, dir, `unplug: peer 198\.18\.0\.2`), dc
		}
		if dc.setup != "" {
			if code, out := w.run(t, dc.setup, dir, "", time.Minute); code != 0 {
				t.Fatalf("%s: setup %q: exit %d\n%s", name, dc.setup, code, out)
			}
		}
		if dc.background != "" {
			bg, bgCase, bgName = w.start(t, c.text, dir, dc.background), dc, name
			continue
		}
		stdin := dc.stdin
		if stdin == "" {
			stdin = typedInput(c.output)
		}
		timeout := dc.timeout
		if timeout == 0 {
			timeout = 90 * time.Second
		}
		if dc.writeShown != "" {
			text := strings.Join(c.output, "\n") + "\n"
			if err := os.WriteFile(filepath.Join(dir, dc.writeShown), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Run(name, func(t *testing.T) {
			code, out := w.run(t, c.text, dir, stdin, timeout)
			if dc.timingMayFail && code == exitFail {
				if rows := mechanismFails(out); len(rows) > 0 {
					t.Errorf("%s: mechanism rows failed: %s\n%s", c.text, strings.Join(rows, "; "), out)
				} else {
					code = dc.code // only timing rows missed their tolerance
				}
			}
			if code != dc.code && !slices.Contains(dc.codes, code) {
				t.Errorf("%s\nexit %d, want %d:\n%s", c.text, code, dc.code, out)
			}
			shown := c.output
			if dc.writeShown != "" {
				// The shown text, comments included, is the file: exact.
				if want := strings.Join(c.output, "\n") + "\n"; out != want {
					t.Errorf("%s printed\n%s\nwant the document's text\n%s", c.text, out, want)
				}
				shown = nil
			}
			if dc.keepShown != nil {
				shown = nil
				for _, l := range c.output {
					if dc.keepShown(l) {
						shown = append(shown, l)
					}
				}
			}
			checkShape(t, shown, out)
			if dc.check != nil {
				dc.check(t, dir)
			}
			if dc.report != "" {
				shown, ok := plainBlock(plain, c.file, dc.report)
				if !ok {
					t.Fatalf("no plain block starting with %q in %s", dc.report, c.file)
				}
				checkShape(t, reportShape(shown), out)
			}
			checkWant(t, dc.want, out)
		})
		w.cleanup(t, dc)
	}
	stopBG()
	if serve != nil {
		code, out := serve.stop(t)
		t.Run(serveCase.serveFirst, func(t *testing.T) {
			if code != 0 {
				t.Errorf("exit %d after SIGINT, want 0:\n%s", code, out)
			}
			checkWant(t, serveCase.serveWant, out)
			if serveCase.serveOutput == "" {
				return
			}
			shown, ok := plainBlock(plain, block[0].file, serveCase.serveOutput)
			if !ok {
				t.Fatalf("no plain block starting with %q in %s", serveCase.serveOutput, block[0].file)
			}
			checkShape(t, shown, out)
		})
	}
}

// cleanup runs dc.cleanup, if any.
func (w *docWorld) cleanup(t *testing.T, dc docCase) {
	t.Helper()
	if dc.cleanup == "" {
		return
	}
	dir := w.dir
	if dc.dir == "repo" {
		dir = w.repo
	}
	if code, out := w.run(t, dc.cleanup, dir, "", time.Minute); code != 0 {
		t.Errorf("cleanup %q: exit %d\n%s", dc.cleanup, code, out)
	}
}

// plainBlock finds the plain block of file whose first line starts with
// prefix.
func plainBlock(plain map[string][]string, file, prefix string) ([]string, bool) {
	for k, v := range plain {
		if strings.HasPrefix(k, file+": "+prefix) {
			return v, true
		}
	}
	return nil, false
}

// checkWant checks out against regexps.
func checkWant(t *testing.T, want []string, out string) {
	t.Helper()
	for _, re := range want {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
}

// mechanismFails returns the report rows marked FAIL that are not timing
// rows (a timing row's name is followed by "*").
func mechanismFails(out string) []string {
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[len(f)-1] != "FAIL" || strings.HasPrefix(l, "verdict") {
			continue
		}
		if !strings.Contains(l, " * ") {
			rows = append(rows, strings.TrimSpace(l))
		}
	}
	return rows
}

// checkShape checks that each shown line appears in out, in order, with
// any number where the document shows a number.
func checkShape(t *testing.T, shown []string, out string) {
	t.Helper()
	lines := strings.Split(strings.ReplaceAll(out, "step> ", "step>\n"), "\n")
	i := 0
	for _, s := range shown {
		s = strings.TrimSpace(trailingNote.ReplaceAllString(s, ""))
		if s == "" || s == "…" || s == "..." {
			continue
		}
		if strings.HasPrefix(s, "step>") { // the prompt; what follows was typed
			s = "step>"
		}
		re := shapeRegexp(s)
		for i < len(lines) && !re.MatchString(strings.TrimSpace(lines[i])) {
			i++
		}
		if i == len(lines) {
			t.Errorf("the documented line\n\t%s\nis not in the output (in this order):\n%s", s, out)
			return
		}
		i++
	}
}

// trailingNote is an annotation in shown output ("   # … recovered by
// retransmission"), not part of it.
var trailingNote = regexp.MustCompile(`\s{2,}#.*$`)

var numberRun = regexp.MustCompile(`\d+(?:\.\d+)?`)

// durationUnit is the unit right after a number in a duration ("204ms",
// "1.66s"), not the start of a word ("5 s" has a space; "2nd" is no unit).
var durationUnit = regexp.MustCompile(`^(ns|µs|us|ms|s|m|h)(?:$|[^\pL])`)

// shapeRegexp turns a shown line into a regexp matching the whole line with
// any numbers in place of the shown ones and any amount of space between
// words.
func shapeRegexp(s string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, f := range strings.Fields(s) {
		if b.Len() > 1 {
			b.WriteString(`\s*`)
		}
		last := 0
		for _, m := range numberRun.FindAllStringIndex(f, -1) {
			b.WriteString(regexp.QuoteMeta(f[last:m[0]]))
			b.WriteString(`\d+(?:\.\d+)?`)
			last = m[1]
			// A Go duration picks its unit by size: 450µs where the
			// document shows 2.92ms.
			if u := durationUnit.FindStringSubmatch(f[last:]); u != nil {
				b.WriteString(`(?:ns|µs|us|ms|s|m|h)`)
				last += len(u[1])
			}
		}
		b.WriteString(regexp.QuoteMeta(f[last:]))
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// reportShape keeps the lines of a shown report whose presence does not
// depend on the run: the unindented ones up to the expectation table's
// notes, and the section lines after (the tables' rows vary in number).
func reportShape(lines []string) []string {
	var out []string
	for _, l := range lines {
		if l == "" || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "*") {
			continue
		}
		if strings.HasPrefix(l, "retransmissions and probes (") || strings.HasPrefix(l, "timeline (") {
			l = numberRun.ReplaceAllString(l, "0") // counts vary; the heading stays
		}
		out = append(out, l)
	}
	return out
}

// reportLines keeps the lines of a report shown in a console block whose
// presence does not depend on the run (as reportShape), less the verdict
// and the timing rows ("c1 timeout-user *  ≈ 1.41 s …"): on a loaded
// machine a timing row may miss its tolerance and the verdict say FAIL,
// so entries check those with want.
func reportLines(l string) bool {
	if len(reportShape([]string{l})) == 0 || strings.HasPrefix(l, "verdict") {
		return false
	}
	f := strings.Fields(l)
	return !(len(f) > 2 && (f[1] == "*" || f[2] == "*"))
}

// typedInput is what a console transcript shows typed at `step>` prompts.
func typedInput(output []string) string {
	var b strings.Builder
	for _, l := range output {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "step>"); ok {
			b.WriteString(strings.TrimSpace(trailingNote.ReplaceAllString(" "+rest, "")) + "\n")
		}
	}
	return b.String()
}

// extractCommands returns the commands of a document's console and sh
// blocks, and its plain (unlabelled) blocks keyed "FILE: first line".
func extractCommands(file, text string) ([]docCommand, map[string][]string) {
	var cmds []docCommand
	plain := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	lineNo, blockNo := 0, 0
	var lang string
	inBlock := false
	var cur *docCommand
	var plainLines []string
	var pending strings.Builder // a command continued on the next line
	pendingLine := 0
	emit := func(line int, cmd string) {
		cmds = append(cmds, docCommand{file: file, line: line, text: cmd, block: blockNo})
		cur = &cmds[len(cmds)-1]
	}
	for sc.Scan() {
		lineNo++
		l := sc.Text()
		if strings.HasPrefix(l, "```") {
			if !inBlock {
				inBlock, lang, cur, plainLines = true, strings.TrimPrefix(l, "```"), nil, nil
				blockNo++
				continue
			}
			inBlock = false
			if lang == "" && len(plainLines) > 0 {
				plain[file+": "+plainLines[0]] = plainLines
			}
			continue
		}
		if !inBlock {
			continue
		}
		switch lang {
		case "":
			plainLines = append(plainLines, l)
		case "console":
			// A command continues on the next line inside an open quote
			// (the newline is part of it) or after a trailing backslash
			// (the line break is not).
			if pending.Len() > 0 {
				s := pending.String()
				if strings.HasSuffix(s, "\\") {
					pending.Reset()
					pending.WriteString(strings.TrimRight(strings.TrimSuffix(s, "\\"), " ") + " " + strings.TrimSpace(l))
				} else {
					pending.WriteString("\n" + l)
				}
				if cmd, done := consoleCommand(pending.String()); done {
					emit(pendingLine, cmd)
					pending.Reset()
				}
				continue
			}
			if rest, ok := strings.CutPrefix(l, "$ "); ok {
				if cmd, done := consoleCommand(rest); done {
					emit(lineNo, cmd)
				} else {
					pending.WriteString(rest)
					pendingLine = lineNo
				}
				continue
			}
			if cur != nil {
				cur.output = append(cur.output, l)
			}
		case "sh", "bash", "shell":
			if pending.Len() > 0 {
				pending.WriteString(" " + strings.TrimSpace(l))
			} else {
				pending.WriteString(l)
				pendingLine = lineNo
			}
			s := pending.String()
			if strings.HasSuffix(s, "\\") {
				pending.Reset()
				pending.WriteString(strings.TrimRight(strings.TrimSuffix(s, "\\"), " "))
				continue
			}
			cmd, done := shellCommand(s)
			if !done {
				continue
			}
			pending.Reset()
			if t := strings.TrimSpace(cmd); t != "" && t != "..." && t != "…" {
				emit(pendingLine, t)
			}
		}
	}
	return cmds, plain
}

// consoleCommand is shellCommand for a console block's line: a command
// ending in a backslash goes on on the next line.
func consoleCommand(s string) (string, bool) {
	cmd, done := shellCommand(s)
	return cmd, done && !strings.HasSuffix(cmd, "\\")
}

// shellCommand strips a trailing # comment from s, and reports whether s
// is complete (no quote left open).
func shellCommand(s string) (string, bool) {
	var quote rune
	escaped := false
	for i, r := range s {
		switch {
		case escaped:
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			}
		case quote == '"':
			if r == '\\' {
				escaped = true
			} else if r == '"' {
				quote = 0
			}
		case r == '\\':
			escaped = true
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return strings.TrimRight(s[:i], " \t"), true
		}
	}
	return s, quote == 0
}

// TestDocExtract checks the extraction and the shape match TestDocExamples
// relies on, without running anything.
func TestDocExtract(t *testing.T) {
	doc := "text\n```console\n$ unplug run x   # note\noutcome    ETIMEDOUT at 6.693 s: recv failed\n" +
		"$ python3 -c '\nprint(1)  # kept\n'\n1\n$ podman run -d \\\n    --x y   # z\n```\n```sh\nunplug a \\\n  --b 'c # d'   # e\n# only a comment\n...\n```\n```\nplain one\nsecond\n```\n"
	cmds, plain := extractCommands("f.md", doc)
	var got []string
	for _, c := range cmds {
		got = append(got, fmt.Sprintf("%d %s %q", c.line, c.text, c.output))
	}
	want := []string{
		`3 unplug run x ["outcome    ETIMEDOUT at 6.693 s: recv failed"]`,
		"5 python3 -c '\nprint(1)  # kept\n' [\"1\"]",
		`9 podman run -d --x y []`,
		`13 unplug a --b 'c # d' []`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p := plain["f.md: plain one"]; len(p) != 2 {
		t.Errorf("plain blocks: %q", plain)
	}
	shape := []struct {
		shown, line string
		match       bool
	}{
		{"outcome    ETIMEDOUT at 6.693 s: recv failed", "outcome ETIMEDOUT at 3.486 s: recv failed", true},
		{"outcome    ETIMEDOUT at 6.693 s: recv failed", "outcome EPIPE at 3.486 s: recv failed", false},
		{"verdict    PASS — everything as the theory predicts", "verdict    FAIL — 1 expectation not met", false},
		{"[  0.000000s] #1 packet [S] seq=24 ack=0", "[ 10.000000s] #12 packet [S] seq=99 ack=7", true},
		{"rule 1: drop for=3s", "rule 1: drop for=3s extra", false},
		{"client TCP RTT 450µs, RTO 204ms at 0.090 s", "client TCP RTT 2.92ms, RTO 1s at 0.031 s", true},
		{"interval +205ms", "interval +205 ms", false},
	}
	for _, s := range shape {
		if m := shapeRegexp(s.shown).MatchString(s.line); m != s.match {
			t.Errorf("shape %q vs %q: %t, want %t", s.shown, s.line, m, s.match)
		}
	}
	if w := shellWords(`podman run -v "$PWD/cap:/cap" unplug serve --fault 'drop port=9'`); strings.Join(w, "|") != "podman|run|-v|$PWD/cap:/cap|unplug|serve|--fault|drop port=9" {
		t.Errorf("shell words %q", w)
	}
	if in := typedInput([]string{"x", "step>            # Enter", "step> n 5   # five", "step> c"}); in != "\nn 5\nc\n" {
		t.Errorf("typed input %q", in)
	}
}
