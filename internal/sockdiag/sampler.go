package sockdiag

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Default sampler settings.
const (
	DefaultInterval     = 20 * time.Millisecond
	DefaultOptionsEvery = time.Second
	DefaultMaxSamples   = 100_000
	DefaultFullDump     = 200 * time.Millisecond // Tracker.FullEvery
)

// Sample is one poll's view of a socket: the inet_diag header and the
// tcp_info fields that explain timeouts. Fields tcp_info provides are zero
// for entries without it (TIME_WAIT, SYN_RECV requests).
type Sample struct {
	// At is when the dump that saw this was taken; PrevAt the previous
	// poll's time (zero for a socket's first sample), so whatever changed
	// since the previous sample in the series happened in (PrevAt, At].
	At, PrevAt time.Time
	State      string
	Inode      uint64 // 0 once the program closed it
	// Timer, TimerExpires and TimerRetrans are inet_diag's idiag_timer,
	// idiag_expires and idiag_retrans (see Socket). At + TimerExpires is
	// when the timer fires, to the kernel's jiffy.
	Timer        string
	TimerExpires time.Duration
	TimerRetrans int
	// Retransmits is tcpi_retransmits (icsk_retransmits): RTO
	// retransmissions since the last forward progress. It returns to 0
	// when an ACK advances.
	Retransmits int
	// Backoff is tcpi_backoff: how many times the RTO has doubled
	// (icsk_backoff); the timer in use is RTO << Backoff, capped at 120 s.
	Backoff int
	// Probes is tcpi_probes: keepalive or zero-window probes sent without
	// an answer.
	Probes int
	// RTO is tcpi_rto, the current retransmission timeout, backoff
	// included; RTT and RTTVar the smoothed round trip and its variance.
	RTO, RTT, RTTVar time.Duration
	// Unacked and Lost are segments in flight and marked lost.
	Unacked, Lost uint32
	// TotalRetrans is tcpi_total_retrans: segments retransmitted over the
	// connection's life. TotalRTO (Linux 6.7+, else 0) counts RTO
	// firings, TotalRTOTime the time spent in RTO recovery.
	TotalRetrans uint32
	TotalRTO     int
	TotalRTOTime time.Duration
	// LastDataSent, LastDataRecv and LastAckRecv are the times since the
	// last data sent, data received and ACK received, as of At.
	LastDataSent, LastDataRecv, LastAckRecv time.Duration
	// Byte and segment counters over the connection's life.
	BytesSent, BytesRetrans, BytesAcked, BytesReceived uint64
	SegsOut, SegsIn                                    uint32
	Cwnd                                               uint32
	// SendQ and RecvQ are the bytes not acknowledged and not read.
	SendQ, RecvQ uint32
	Shutdown     uint8 // Shutdown* bits
}

// OptionsSample is one reading of a socket's options.
type OptionsSample struct {
	At      time.Time
	Options Options
}

// ConnSamples is everything a Sampler saw of one socket.
type ConnSamples struct {
	// Cookie identifies the socket (see Socket.Cookie); Inode is the first
	// non-zero inode seen (0 if the socket was already closed then).
	Cookie   uint64
	Inode    uint64
	Family   int
	Src, Dst netip.AddrPort
	UID      uint32
	// FirstSeen and LastSeen are the first and the last dump that listed
	// the socket. Gone means the last two dumps did not list it: the
	// kernel freed it (closed and fully shut, reset, timed out, TIME_WAIT
	// over). One miss is not enough: a socket entering TIME_WAIT can be
	// missing from one dump.
	FirstSeen, LastSeen time.Time
	Gone                bool
	// GoneAt is the first dump that no longer listed a Gone socket: it
	// disappeared in (LastSeen, GoneAt].
	GoneAt time.Time
	// Options are the socket's options each time they were read and
	// differed from the reading before (see Sampler.OptionsEvery).
	Options []OptionsSample
	// Samples holds the first sample and then each sample that differs
	// from the one before it in anything but the clocks that always move
	// (TimerExpires counting down, LastData*, TotalRTOTime, RTT): state,
	// timer kind or
	// re-arm, retransmits, backoff, probes, RTO, counters, queues. Last is
	// the latest poll, recorded or not.
	Samples []Sample
	Last    Sample
	// Polls counts the dumps that listed the socket; Dropped the samples
	// discarded to stay within Sampler.MaxSamples.
	Polls, Dropped int
}

// LastOptions returns the latest options read, if any were.
func (c *ConnSamples) LastOptions() (Options, bool) {
	if len(c.Options) == 0 {
		return Options{}, false
	}
	return c.Options[len(c.Options)-1].Options, true
}

// Sampler polls a dump function (and an options function for the sockets
// it lists) every interval and keeps each socket's series of samples,
// keyed by the socket's cookie, which stays the same from SYN_SENT through
// close, FIN_WAIT and TIME_WAIT even though the inode becomes 0. A socket
// that disappears keeps its last sample.
//
// Set the exported fields before Run. Conns may be called at any time.
type Sampler struct {
	// OptionsEvery is how often options of a socket that still has an
	// inode are read again; they are also read when it is first seen and
	// when its state changes (programs often set keepalive right after
	// connect). 0 means DefaultOptionsEvery; negative means only then.
	OptionsEvery time.Duration
	// MaxSamples bounds each socket's Samples; when it is reached the
	// older half (all but the first sample) is discarded. 0 means
	// DefaultMaxSamples.
	MaxSamples int

	dump     func() ([]Socket, error)
	opts     func(inode uint64) (Options, bool)
	interval time.Duration

	mu      sync.Mutex
	conns   map[connKey]*conn
	order   []*conn
	gen     uint64
	prev    time.Time // previous poll
	want    []*conn   // scratch: conns whose options are due
	pending int       // conns missing from the last dump only
}

// connKey identifies a socket across dumps: its cookie, or (on a kernel
// that reports none) its addresses.
type connKey struct {
	cookie   uint64
	src, dst netip.AddrPort
}

// conn is a socket's state inside the Sampler.
type conn struct {
	c        ConnSamples
	gen      uint64    // last poll that listed it
	optsAt   time.Time // last options attempt
	optsDue  bool
	optsNext Options // scratch for the unlocked read
	optsOK   bool
	misses   int       // consecutive dumps that did not list it
	missedAt time.Time // the first of them
}

// NewSampler returns a Sampler that calls dump every interval (0 means
// DefaultInterval) and opts, which may be nil, to read the options of a
// socket by inode (OptionsReader.Options is one).
func NewSampler(dump func() ([]Socket, error), opts func(inode uint64) (Options, bool), interval time.Duration) *Sampler {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Sampler{dump: dump, opts: opts, interval: interval, conns: map[connKey]*conn{}}
}

// Run samples until ctx is done, then takes one final sample (two if a
// socket is missing from it) and returns nil. A failing dump ends it early with that error; what was sampled so
// far stays available from Conns.
func (s *Sampler) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if err := s.Sample(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if err := s.Sample(); err != nil || !s.missing() {
				return err
			}
			// Settle sockets the final sample missed for the first time.
			return s.Sample()
		case <-t.C:
		}
	}
}

// missing reports whether some socket was missing from the last dump
// only, so that one more dump decides whether it is gone.
func (s *Sampler) missing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending > 0
}

// Sample takes one sample now; Run calls it every interval. It must not
// run concurrently with itself or with Run.
func (s *Sampler) Sample() error {
	socks, err := s.dump()
	now := time.Now()
	interrupted := errors.Is(err, ErrDumpInterrupted)
	if err != nil && !interrupted {
		return err
	}
	s.mu.Lock()
	s.gen++
	for i := range socks {
		s.observe(now, &socks[i])
	}
	if !interrupted { // an interrupted dump may have missed live sockets
		for _, c := range s.order {
			if c.gen == s.gen || c.c.Gone {
				continue
			}
			// Gone only when missing from two dumps in a row: a socket
			// entering TIME_WAIT is briefly in neither form in the table.
			c.misses++
			if c.misses == 1 {
				c.missedAt = now
				s.pending++
			} else {
				c.c.Gone, c.c.GoneAt = true, c.missedAt
				s.pending--
			}
		}
	}
	s.prev = now
	want := s.want[:0]
	for _, c := range s.order {
		if c.optsDue {
			c.optsDue = false
			want = append(want, c)
		}
	}
	s.want = want
	s.mu.Unlock()
	if len(want) == 0 || s.opts == nil {
		return nil
	}
	// Reading options may scan /proc: do it without holding the lock.
	for _, c := range want {
		c.optsNext, c.optsOK = s.opts(c.c.Last.Inode)
	}
	s.mu.Lock()
	for _, c := range want {
		if c.optsOK {
			n := len(c.c.Options)
			if n == 0 || c.c.Options[n-1].Options != c.optsNext {
				c.c.Options = append(c.c.Options, OptionsSample{At: now, Options: c.optsNext})
			}
		}
	}
	s.mu.Unlock()
	return nil
}

// observe records one socket of the current dump.
func (s *Sampler) observe(now time.Time, so *Socket) {
	key := connKey{cookie: so.Cookie}
	if so.Cookie == 0 {
		key.src, key.dst = so.Src, so.Dst
	}
	c := s.conns[key]
	smp := sampleOf(so, now)
	if c == nil {
		c = &conn{c: ConnSamples{
			Cookie: so.Cookie, Inode: so.Inode, Family: so.Family,
			Src: so.Src, Dst: so.Dst, UID: so.UID, FirstSeen: now,
		}}
		s.conns[key] = c
		s.order = append(s.order, c)
		c.c.Samples = append(c.c.Samples, smp)
	} else {
		if c.c.Inode == 0 {
			c.c.Inode = so.Inode
		}
		smp.PrevAt = c.c.Last.At
		if significant(&c.c.Last, &smp) {
			s.record(c, smp)
		}
	}
	stateChanged := c.c.Polls == 0 || c.c.Last.State != smp.State
	c.c.Last = smp
	c.c.LastSeen = now
	if c.misses == 1 && !c.c.Gone {
		s.pending--
	}
	c.c.Gone, c.c.GoneAt, c.misses = false, time.Time{}, 0
	c.c.Polls++
	c.gen = s.gen
	if so.Inode != 0 && s.opts != nil {
		every := s.OptionsEvery
		if every == 0 {
			every = DefaultOptionsEvery
		}
		if stateChanged || (every > 0 && now.Sub(c.optsAt) >= every) {
			c.optsDue = true
			c.optsAt = now
		}
	}
}

// record appends smp to c's series within MaxSamples.
func (s *Sampler) record(c *conn, smp Sample) {
	max := s.MaxSamples
	if max <= 0 {
		max = DefaultMaxSamples
	}
	if len(c.c.Samples) >= max && max >= 2 {
		drop := (len(c.c.Samples) - 1) / 2
		n := copy(c.c.Samples[1:], c.c.Samples[1+drop:])
		c.c.Samples = c.c.Samples[:1+n]
		c.c.Dropped += drop
	}
	c.c.Samples = append(c.c.Samples, smp)
}

// significant reports whether cur differs from prev, the previous poll, in
// more than the clocks that move by themselves.
func significant(prev, cur *Sample) bool {
	if cur.Timer == prev.Timer && cur.TimerExpires > prev.TimerExpires && cur.Timer != TimerNone {
		return true // re-armed: it only counts down otherwise
	}
	a, b := *prev, *cur
	for _, x := range []*Sample{&a, &b} {
		x.At, x.PrevAt = time.Time{}, time.Time{}
		x.TimerExpires, x.LastDataSent, x.LastDataRecv, x.LastAckRecv = 0, 0, 0, 0
		x.RTT, x.RTTVar, x.TotalRTOTime = 0, 0, 0
	}
	return a != b
}

// sampleOf extracts a Sample from a dumped socket.
func sampleOf(so *Socket, now time.Time) Sample {
	smp := Sample{
		At: now, State: so.State, Inode: so.Inode,
		Timer: so.Timer, TimerExpires: so.TimerExpires, TimerRetrans: so.TimerRetrans,
		SendQ: so.SendQ, RecvQ: so.RecvQ, Shutdown: so.Shutdown,
	}
	if ti := so.Info; ti != nil {
		us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
		ms := func(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }
		smp.Retransmits = int(ti.Retransmits)
		smp.Backoff = int(ti.Backoff)
		smp.Probes = int(ti.Probes)
		smp.RTO, smp.RTT, smp.RTTVar = us(ti.Rto), us(ti.Rtt), us(ti.Rttvar)
		smp.Unacked, smp.Lost = ti.Unacked, ti.Lost
		smp.TotalRetrans = ti.Total_retrans
		smp.TotalRTO = int(ti.Total_rto)
		smp.TotalRTOTime = ms(ti.Total_rto_time)
		smp.LastDataSent, smp.LastDataRecv, smp.LastAckRecv = ms(ti.Last_data_sent), ms(ti.Last_data_recv), ms(ti.Last_ack_recv)
		smp.BytesSent, smp.BytesRetrans = ti.Bytes_sent, ti.Bytes_retrans
		smp.BytesAcked, smp.BytesReceived = ti.Bytes_acked, ti.Bytes_received
		smp.SegsOut, smp.SegsIn = ti.Segs_out, ti.Segs_in
		smp.Cwnd = ti.Snd_cwnd
	}
	return smp
}

// Conns returns a copy of every socket seen so far, in the order they
// were first seen.
func (s *Sampler) Conns() []ConnSamples {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ConnSamples, len(s.order))
	for i, c := range s.order {
		out[i] = c.c
		out[i].Samples = append([]Sample(nil), c.c.Samples...)
		out[i].Options = append([]OptionsSample(nil), c.c.Options...)
	}
	return out
}
