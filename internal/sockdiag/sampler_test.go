package sockdiag

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// script is a fake dump function replaying one socket list per call (the
// last one repeats).
type script struct {
	polls [][]Socket
	errs  []error
	calls int
}

func (s *script) dump() ([]Socket, error) {
	i := min(s.calls, len(s.polls)-1)
	s.calls++
	var err error
	if i < len(s.errs) {
		err = s.errs[i]
	}
	return s.polls[i], err
}

var (
	srcA = netip.MustParseAddrPort("198.18.0.1:40000")
	dstA = netip.MustParseAddrPort("198.18.0.2:80")
)

// sock is a dumped socket A with cookie 1 in state st.
func sock(st string, inode uint64, edit ...func(*Socket)) Socket {
	s := Socket{Family: afInet, Src: srcA, Dst: dstA, State: st, Inode: inode, Cookie: 1, Info: &TCPInfo{Rto: 204000}}
	for _, e := range edit {
		e(&s)
	}
	return s
}

func timer(kind string, exp time.Duration, retrans int) func(*Socket) {
	return func(s *Socket) { s.Timer, s.TimerExpires, s.TimerRetrans = kind, exp, retrans }
}

func info(f func(*TCPInfo)) func(*Socket) {
	return func(s *Socket) {
		ti := *s.Info
		f(&ti)
		s.Info = &ti
	}
}

// TestSamplerSeries: what a Sampler records from scripted dumps.
func TestSamplerSeries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		polls   [][]Socket
		errs    []error
		conns   int
		samples []string // per recorded sample of the first conn: state/timer/retransmits
		gone    bool
		inode   uint64
		polled  int
	}{
		{
			name: "a socket that disappears keeps its last sample",
			polls: [][]Socket{
				{sock(StateEstablished, 5)},
				{sock(StateEstablished, 5, timer(TimerRetrans, 200*time.Millisecond, 1), info(func(ti *TCPInfo) { ti.Retransmits, ti.Backoff = 1, 1 }))},
				{},
			},
			conns: 1, samples: []string{"ESTABLISHED//0", "ESTABLISHED/on/1"}, gone: true, inode: 5, polled: 2,
		},
		{
			name: "the cookie follows a socket through close and TIME_WAIT",
			polls: [][]Socket{
				{sock(StateEstablished, 5)},
				{sock(StateFinWait2, 0, timer(TimerKeepalive, time.Minute, 0))},
				{sock(StateTimeWait, 0, timer(TimerTimeWait, time.Minute, 0), func(s *Socket) { s.Info = nil })},
			},
			conns: 1, samples: []string{"ESTABLISHED//0", "FIN_WAIT2/keepalive/0", "TIME_WAIT/timewait/0"}, inode: 5, polled: 4,
		},
		{
			name: "without cookies the addresses identify a socket",
			polls: [][]Socket{
				{sock(StateEstablished, 5, func(s *Socket) { s.Cookie = 0 })},
				{sock(StateFinWait1, 0, func(s *Socket) { s.Cookie = 0 })},
			},
			conns: 1, samples: []string{"ESTABLISHED//0", "FIN_WAIT1//0"}, inode: 5, polled: 3,
		},
		{
			name: "a new cookie on the same addresses is another connection",
			polls: [][]Socket{
				{sock(StateTimeWait, 0)},
				{sock(StateSynSent, 9, func(s *Socket) { s.Cookie = 2 })},
			},
			conns: 2, samples: []string{"TIME_WAIT//0"}, gone: true, polled: 1,
		},
		{
			name: "clocks that move by themselves make no new sample",
			polls: [][]Socket{
				{sock(StateEstablished, 5, timer(TimerKeepalive, 7*time.Second, 0))},
				{sock(StateEstablished, 5, timer(TimerKeepalive, 6*time.Second, 0), info(func(ti *TCPInfo) { ti.Last_data_recv, ti.Rtt, ti.Total_rto_time = 1000, 70, 5 }))},
				{sock(StateEstablished, 5, timer(TimerKeepalive, 5*time.Second, 0), info(func(ti *TCPInfo) { ti.Last_data_recv, ti.Rtt, ti.Total_rto_time = 2000, 90, 6 }))},
			},
			conns: 1, samples: []string{"ESTABLISHED/keepalive/0"}, inode: 5, polled: 4,
		},
		{
			name: "a re-armed timer is a new sample",
			polls: [][]Socket{
				{sock(StateEstablished, 5, timer(TimerKeepalive, 2*time.Second, 0))},
				{sock(StateEstablished, 5, timer(TimerKeepalive, time.Second, 0))},
				{sock(StateEstablished, 5, timer(TimerKeepalive, 7*time.Second, 0))},
			},
			conns: 1, samples: []string{"ESTABLISHED/keepalive/0", "ESTABLISHED/keepalive/0"}, inode: 5, polled: 4,
		},
		{
			name:  "a socket missing from one dump only is not gone",
			polls: [][]Socket{{sock(StateFinWait2, 0)}, {}, {sock(StateTimeWait, 0)}},
			conns: 1, samples: []string{"FIN_WAIT2//0", "TIME_WAIT//0"}, polled: 3,
		},
		{
			name:  "an interrupted dump does not make missing sockets gone",
			polls: [][]Socket{{sock(StateEstablished, 5)}, {}, {}},
			errs:  []error{nil, ErrDumpInterrupted, ErrDumpInterrupted, ErrDumpInterrupted},
			conns: 1, samples: []string{"ESTABLISHED//0"}, inode: 5, polled: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &script{polls: tc.polls, errs: tc.errs}
			s := NewSampler(sc.dump, nil, time.Millisecond)
			// One more poll than scripted (the last repeats): a socket is
			// gone once two dumps in a row miss it.
			for range len(tc.polls) + 1 {
				if err := s.Sample(); err != nil && !errors.Is(err, ErrDumpInterrupted) {
					t.Fatal(err)
				}
			}
			conns := s.Conns()
			if len(conns) != tc.conns {
				t.Fatalf("%d conns, want %d: %+v", len(conns), tc.conns, conns)
			}
			c := conns[0]
			var got []string
			for _, smp := range c.Samples {
				got = append(got, fmt.Sprintf("%s/%s/%d", smp.State, smp.Timer, smp.Retransmits))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.samples) {
				t.Errorf("samples %v, want %v", got, tc.samples)
			}
			if c.Gone != tc.gone || c.Inode != tc.inode || c.Polls != tc.polled {
				t.Errorf("gone %v inode %d polls %d, want %v %d %d", c.Gone, c.Inode, c.Polls, tc.gone, tc.inode, tc.polled)
			}
			if last := c.Samples[len(c.Samples)-1]; c.Last.State != last.State || c.LastSeen.Before(last.At) {
				t.Errorf("Last %+v does not follow the series' last %+v", c.Last, last)
			}
			for i := 1; i < len(c.Samples); i++ {
				if p := c.Samples[i].PrevAt; p.IsZero() || !p.Before(c.Samples[i].At) {
					t.Errorf("sample %d: PrevAt %v not before At %v", i, p, c.Samples[i].At)
				}
			}
		})
	}
}

// TestSamplerOptions: options are read when a socket is first seen and
// when its state changes, not while it has no inode, and kept only when
// they change.
func TestSamplerOptions(t *testing.T) {
	sc := &script{polls: [][]Socket{
		{sock(StateSynSent, 5)},
		{sock(StateSynSent, 5)},
		{sock(StateEstablished, 5)},
		{sock(StateEstablished, 5)},
		{sock(StateFinWait1, 0)},
	}}
	var asked []uint64
	keepalive := false
	opts := func(inode uint64) (Options, bool) {
		asked = append(asked, inode)
		o := Options{KeepAlive: keepalive, KeepIdle: 7 * time.Second, Inode: inode}
		keepalive = true // the program sets keepalive after connect
		return o, true
	}
	s := NewSampler(sc.dump, opts, time.Millisecond)
	s.OptionsEvery = -1
	for range sc.polls {
		if err := s.Sample(); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(asked) != "[5 5]" {
		t.Errorf("options read for inodes %v, want [5 5] (first sight, ESTABLISHED)", asked)
	}
	c := s.Conns()[0]
	if len(c.Options) != 2 || c.Options[0].Options.KeepAlive || !c.Options[1].Options.KeepAlive {
		t.Errorf("options %+v, want off then on", c.Options)
	}
	if o, ok := c.LastOptions(); !ok || !o.KeepAlive {
		t.Errorf("LastOptions = %+v, %v", o, ok)
	}

	// Periodic re-reads, kept only on change.
	asked = nil
	sc = &script{polls: [][]Socket{{sock(StateEstablished, 5)}}}
	s = NewSampler(sc.dump, opts, time.Millisecond)
	s.OptionsEvery = time.Nanosecond
	for range 3 {
		s.Sample()
	}
	if len(asked) != 3 || len(s.Conns()[0].Options) != 1 {
		t.Errorf("asked %v, kept %d: want 3 reads, 1 kept", asked, len(s.Conns()[0].Options))
	}
}

// TestSamplerMaxSamples: a long series keeps its first sample and the
// newest ones.
func TestSamplerMaxSamples(t *testing.T) {
	var polls [][]Socket
	for i := range 10 {
		polls = append(polls, []Socket{sock(StateEstablished, 5, info(func(ti *TCPInfo) { ti.Total_retrans = uint32(i) }))})
	}
	sc := &script{polls: polls}
	s := NewSampler(sc.dump, nil, time.Millisecond)
	s.MaxSamples = 4
	for range polls {
		s.Sample()
	}
	c := s.Conns()[0]
	if len(c.Samples) > 4 || c.Samples[0].TotalRetrans != 0 || c.Samples[len(c.Samples)-1].TotalRetrans != 9 || c.Dropped+len(c.Samples) != 10 {
		t.Errorf("%d samples (first %d, last %d), %d dropped; want ≤ 4 from 0 to 9, 10 in all",
			len(c.Samples), c.Samples[0].TotalRetrans, c.Samples[len(c.Samples)-1].TotalRetrans, c.Dropped)
	}
}

// TestSamplerRun: Run samples until cancelled, then once more; a failing
// dump ends it with the error.
func TestSamplerRun(t *testing.T) {
	sc := &script{polls: [][]Socket{{sock(StateEstablished, 5)}}}
	s := NewSampler(sc.dump, nil, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if sc.calls != 2 {
		t.Errorf("%d dumps for a cancelled context, want 2 (first and final)", sc.calls)
	}
	// A socket the final sample misses is settled by one more.
	sc = &script{polls: [][]Socket{{sock(StateEstablished, 5)}, {}}}
	s = NewSampler(sc.dump, nil, time.Millisecond)
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if c := s.Conns()[0]; sc.calls != 3 || !c.Gone || c.GoneAt.IsZero() {
		t.Errorf("%d dumps, gone %v at %v; want 3 dumps and the socket gone", sc.calls, c.Gone, c.GoneAt)
	}
	boom := errors.New("boom")
	sc = &script{polls: [][]Socket{{}, {}}, errs: []error{nil, boom}}
	s = NewSampler(sc.dump, nil, time.Millisecond)
	if err := s.Run(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Run = %v, want the dump's error", err)
	}
}

// TestSamplerAllocs: a poll of 100 steady sockets allocates next to
// nothing, so a 20 ms interval costs no garbage.
func TestSamplerAllocs(t *testing.T) {
	var socks []Socket
	for i := range 100 {
		s := sock(StateEstablished, uint64(100+i), timer(TimerKeepalive, time.Hour, 0))
		s.Cookie = uint64(100 + i)
		socks = append(socks, s)
	}
	exp := time.Hour
	dump := func() ([]Socket, error) {
		exp -= time.Millisecond // the timers count down: nothing to record
		for i := range socks {
			socks[i].TimerExpires = exp
		}
		return socks, nil
	}
	s := NewSampler(dump, nil, time.Millisecond)
	s.Sample()
	allocs := testing.AllocsPerRun(100, func() { s.Sample() })
	if allocs > 2 {
		t.Errorf("%.1f allocations per poll of 100 sockets, want at most 2", allocs)
	}
	t.Logf("%.1f allocations per poll of 100 sockets", allocs)
}
