package reference

import (
	"strings"
	"testing"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// TestTranslate: the translatable rules become the iptables rules that
// drop the same packets, in the namespace where the packet arrives; any
// other rule is refused in one line naming it and what is supported.
func TestTranslate(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []string // Rule.String of each
		err  string
	}{
		{spec: "drop", want: []string{
			"server: iptables -A INPUT -m comment --comment unplug-1.1 -j DROP",
			"client: iptables -A INPUT -m comment --comment unplug-1.2 -j DROP"}},
		{spec: "drop dir=in port=80 after=2s for=3s", want: []string{
			"server: iptables -A INPUT -p tcp --dport 80 -m comment --comment unplug-1.1 -j DROP",
			"server: iptables -A INPUT -p udp --dport 80 -m comment --comment unplug-1.2 -j DROP"}},
		{spec: "drop dir=out port=7", want: []string{
			"client: iptables -A INPUT -p tcp --sport 7 -m comment --comment unplug-1.1 -j DROP",
			"client: iptables -A INPUT -p udp --sport 7 -m comment --comment unplug-1.2 -j DROP"}},
		{spec: "drop dir=in match=syn", want: []string{
			"server: iptables -A INPUT -p tcp --tcp-flags SYN,ACK SYN -m comment --comment unplug-1.1 -j DROP"}},
		{spec: "drop dir=out match=syn-ack,rst", want: []string{
			"client: iptables -A INPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -m comment --comment unplug-1.1 -j DROP",
			"client: iptables -A INPUT -p tcp --tcp-flags RST RST -m comment --comment unplug-1.2 -j DROP"}},
		{spec: "drop dir=in flags=fin", want: []string{
			"server: iptables -A INPUT -p tcp --tcp-flags FIN FIN -m comment --comment unplug-1.1 -j DROP"}},
		{spec: "loss 5%", err: "only drop is an iptables DROP"},
		{spec: "reject", err: "only drop is an iptables DROP"},
		{spec: "delay 100ms", err: "only drop is an iptables DROP"},
		{spec: "drop conn=2", err: "per-connection and counting selectors"},
		{spec: "drop for=rtos:2", err: "per-connection and counting selectors"},
		{spec: "drop after=established", err: "per-connection and counting selectors"},
		{spec: "drop count=3", err: "per-connection and counting selectors"},
		{spec: "drop match=data", err: "match=data needs unplug's flow tracking"},
		{spec: "drop match=retransmission", err: "match=retransmission needs unplug's flow tracking"},
		{spec: "drop flags=data", err: "flags=data needs the payload length"},
		{spec: "drop flags=syn match=syn", err: "use flags= or match=, not both"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			sp, err := fault.ParseSpec(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			rules, err := Translate([]fault.Spec{sp})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), Supported) ||
					!strings.Contains(err.Error(), sp.String()) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v: want one line naming the rule, %q and what is supported", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rules {
				got = append(got, r.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestRuleMatches: what the lab counts as dropped is what the iptables
// rule matches: direction, protocol, the peer's port, the TCP flags.
func TestRuleMatches(t *testing.T) {
	syn := packet.Packet{Dir: packet.In, Version: 4, Proto: packet.ProtoTCP, SrcPort: 40000, DstPort: 80, Flags: packet.FlagSYN}
	synAck := packet.Packet{Dir: packet.Out, Version: 4, Proto: packet.ProtoTCP, SrcPort: 80, DstPort: 40000, Flags: packet.FlagSYN | packet.FlagACK}
	data := packet.Packet{Dir: packet.In, Version: 4, Proto: packet.ProtoTCP, SrcPort: 40000, DstPort: 80, Flags: packet.FlagACK | packet.FlagPSH, PayloadLen: 10}
	udp := packet.Packet{Dir: packet.In, Version: 4, Proto: packet.ProtoUDP, SrcPort: 40000, DstPort: 80}
	icmp := packet.Packet{Dir: packet.In, Version: 4, Proto: packet.ProtoICMP}
	for _, tc := range []struct {
		spec string
		pkt  packet.Packet
		want bool
	}{
		{"drop", icmp, true},
		{"drop dir=out", icmp, false},
		{"drop port=80", udp, true},
		{"drop port=80", icmp, false},
		{"drop port=81", syn, false},
		{"drop dir=out port=80", synAck, true},
		{"drop match=syn", syn, true},
		{"drop match=syn", synAck, false},
		{"drop flags=syn", synAck, true},
		{"drop match=syn", data, false},
		{"drop dir=in port=80", data, true},
	} {
		sp, _ := fault.ParseSpec(tc.spec)
		rules, err := Translate([]fault.Spec{sp})
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, r := range rules {
			got = got || r.Matches(&tc.pkt)
		}
		if got != tc.want {
			t.Errorf("%s on %+v: %v, want %v", tc.spec, tc.pkt, got, tc.want)
		}
	}
}
