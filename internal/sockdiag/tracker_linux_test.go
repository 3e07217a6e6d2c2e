package sockdiag

import (
	"net/netip"
	"testing"
	"time"
)

// TestLookup: one socket is found by its addresses and cookie, through
// close and TIME_WAIT, and not found once gone or with another cookie.
func TestLookup(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	d := newDumper(t, ns)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			l := listen(t, ns, addr)
			target := l.local(t)
			if addr == "[::]:0" { // an AF_INET6 socket talking IPv4
				target = netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), target.Port())
			}
			c := dial(t, ns, target, sockOpts{}, false)
			srv := accept(t, ns, l)
			socks, err := d.Append(nil)
			if err != nil {
				t.Fatal(err)
			}
			cs, ok := find(socks, inodeOf(t, c))
			ss, _ := find(socks, inodeOf(t, srv))
			ls, _ := find(socks, inodeOf(t, l))
			if !ok {
				t.Fatal("client not dumped")
			}
			for _, s := range []Socket{cs, ss, ls} {
				got, found, err := d.Lookup(s)
				if err != nil || !found || got.Inode != s.Inode || got.Cookie != s.Cookie || got.State != s.State || got.Info == nil {
					t.Errorf("Lookup(%s %s->%s) = %+v, %v, %v", s.State, s.Src, s.Dst, got, found, err)
				}
			}
			wrong := cs
			wrong.Cookie++
			if got, found, err := d.Lookup(wrong); err != nil || found {
				t.Errorf("Lookup with another cookie = %+v, %v, %v; want not found", got, found, err)
			}
			c.Close()
			srv.Close()
			deadline := time.Now().Add(safetyTimeout)
			for {
				got, found, err := d.Lookup(cs)
				if err != nil || !found {
					t.Fatalf("closed client: found %v, %v", found, err)
				}
				if got.State == StateTimeWait {
					if got.Inode != 0 || got.Cookie != cs.Cookie || got.Timer != TimerTimeWait {
						t.Errorf("TIME_WAIT entry %+v: want inode 0, cookie %d, timer timewait", got, cs.Cookie)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("client never reached TIME_WAIT: %+v", got)
				}
				time.Sleep(time.Millisecond)
			}
			if got, found, err := d.Lookup(ss); err != nil || found {
				t.Errorf("Lookup of the closed server side = %+v, %v, %v; want not found", got, found, err)
			}
		})
	}
}

// TestTrackerSampler: between full dumps a Tracker follows the sockets it
// knows (through close to TIME_WAIT) and sees new ones only after Rescan.
func TestTrackerSampler(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	tr := NewTracker(newDumper(t, ns))
	tr.FullEvery = time.Hour
	l := listen(t, ns, "127.0.0.1:0")
	c1 := dial(t, ns, l.local(t), sockOpts{}, false)
	srv1 := accept(t, ns, l)
	s := NewSampler(tr.Dump, nil, time.Millisecond)
	sample := func() {
		t.Helper()
		if err := s.Sample(); err != nil {
			t.Fatal(err)
		}
	}
	sample() // the full dump
	c1src := c1.local(t)
	c2 := dial(t, ns, l.local(t), sockOpts{}, false)
	accept(t, ns, l)
	c1.Close()
	srv1.Close()
	// Lookups only: c1 goes to TIME_WAIT, its server side disappears, c2
	// is not seen yet.
	deadline := time.Now().Add(safetyTimeout)
	for {
		sample()
		c, _ := connOf(s, c1src)
		if c.Last.State == StateTimeWait {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("c1 never reached TIME_WAIT: %+v", c.Last)
		}
		time.Sleep(time.Millisecond)
	}
	sample() // a socket is gone once two polls miss it
	if _, ok := connOf(s, c2.local(t)); ok {
		t.Error("a socket opened after the full dump was seen without Rescan")
	}
	for _, c := range s.Conns() {
		if c.Dst == c1src && !c.Gone {
			t.Errorf("c1's server side not gone: %+v", c.Last)
		}
	}
	tr.Rescan()
	sample()
	if c, ok := connOf(s, c2.local(t)); !ok || c.Last.State != StateEstablished {
		t.Errorf("after Rescan: %+v, %v; want c2 ESTABLISHED", c.Last, ok)
	}
}

// BenchmarkTracker polls 201 known sockets by lookup, against
// BenchmarkDump's full dumps of the same namespace.
func BenchmarkTracker(b *testing.B) {
	_, d := benchNamespace(b)
	tr := NewTracker(d)
	tr.FullEvery = time.Hour
	if socks, err := tr.Dump(); err != nil || len(socks) != 201 {
		b.Fatalf("%d sockets, %v; want 201", len(socks), err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		socks, err := tr.Dump()
		if err != nil || len(socks) != 201 {
			b.Fatalf("%d sockets, %v; want 201", len(socks), err)
		}
	}
}
