package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The noisy neighbour's floods (bench scenario 9, bench/cmd/floodload):
// what one container can do to a node's egress with ordinary sockets.
const (
	// FloodTCPHold opens many TCP connections to a sink that accepts and
	// never reads (ServeHold) and writes into each until it blocks: every
	// flow holds host sockets and buffers on the way.
	FloodTCPHold = "tcp-hold"
	// FloodUDPPorts sends small datagrams to many ports of one address in
	// turn (a UDPSink): every port is a UDP flow of its own.
	FloodUDPPorts = "udp-ports"
)

// FloodConfig configures one flood. Every flood ends after Duration (or
// with ctx) and holds at most Conns connections or one socket.
type FloodConfig struct {
	Mode string
	// Addr is the sink: IP:PORT of a HoldServer (tcp-hold), or IP:PORT of
	// the first of Ports consecutive ports of a UDPSink (udp-ports).
	Addr string
	// Conns bounds the connections tcp-hold opens (attempts, failed ones
	// included); Concurrency the dials in flight.
	Conns, Concurrency int
	// Ports is the number of consecutive ports of udp-ports, PPS its
	// datagrams per second in all (0: 20 000).
	Ports, PPS int
	Duration   time.Duration
	Timeout    time.Duration // per dial; 0 means 2 s
}

// FloodResult is what a flood prints (as JSON).
type FloodResult struct {
	Mode    string  `json:"mode"`
	Target  string  `json:"target"`
	Seconds float64 `json:"seconds"`
	// tcp-hold: connections attempted, established, refused (RST),
	// timed out, failed otherwise; established ones the far side reset
	// later; bytes written into all of them.
	Attempts    uint64 `json:"attempts,omitempty"`
	Established uint64 `json:"established,omitempty"`
	Refused     uint64 `json:"refused,omitempty"`
	Timeouts    uint64 `json:"timeouts,omitempty"`
	Reset       uint64 `json:"reset,omitempty"`
	Bytes       uint64 `json:"bytes,omitempty"`
	// udp-ports: datagrams sent, sends that failed.
	Datagrams  uint64 `json:"datagrams,omitempty"`
	Errors     uint64 `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// Flood runs cfg until its duration ends or ctx does.
func Flood(ctx context.Context, cfg FloodConfig) (FloodResult, error) {
	if cfg.Duration <= 0 {
		return FloodResult{}, errors.New("flood: need a positive duration")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancel()
	var r FloodResult
	var err error
	switch cfg.Mode {
	case FloodTCPHold:
		if cfg.Conns < 1 || cfg.Concurrency < 1 {
			return FloodResult{}, errors.New("flood tcp-hold: need conns ≥ 1 and concurrency ≥ 1")
		}
		r = floodTCP(ctx, cfg)
	case FloodUDPPorts:
		if cfg.Ports < 1 || cfg.PPS < 0 {
			return FloodResult{}, errors.New("flood udp-ports: need ports ≥ 1 and pps ≥ 0")
		}
		if cfg.PPS == 0 {
			cfg.PPS = 20000
		}
		r, err = floodUDP(ctx, cfg)
	default:
		return FloodResult{}, fmt.Errorf("flood: unknown mode %q (want %s or %s)", cfg.Mode, FloodTCPHold, FloodUDPPorts)
	}
	r.Mode, r.Target, r.Seconds = cfg.Mode, cfg.Addr, time.Since(start).Seconds()
	return r, err
}

// tally is a flood's counters, shared by its goroutines.
type tally struct {
	attempts, established, refused, timeouts, reset, bytes, errors atomic.Uint64

	mu       sync.Mutex
	firstErr error
}

func (t *tally) fail(err error) {
	t.errors.Add(1)
	t.mu.Lock()
	if t.firstErr == nil {
		t.firstErr = err
	}
	t.mu.Unlock()
}

func floodTCP(ctx context.Context, cfg FloodConfig) FloodResult {
	var t tally
	var wg sync.WaitGroup
	// Dialers take attempt numbers until Conns are used up; each
	// established connection gets a writer that blocks once the buffers
	// on the way are full, and is closed when the flood ends.
	var next atomic.Int64
	chunk := make([]byte, 64<<10)
	for range cfg.Concurrency {
		wg.Go(func() {
			d := net.Dialer{Timeout: cfg.Timeout}
			for ctx.Err() == nil && next.Add(1) <= int64(cfg.Conns) {
				t.attempts.Add(1)
				c, err := d.DialContext(ctx, "tcp", cfg.Addr)
				switch {
				case err == nil:
				case ctx.Err() != nil:
					return
				case errors.Is(err, syscall.ECONNREFUSED):
					t.refused.Add(1)
					continue
				case errors.Is(err, os.ErrDeadlineExceeded):
					t.timeouts.Add(1)
					continue
				default:
					t.fail(err)
					continue
				}
				t.established.Add(1)
				wg.Go(func() { holdWrite(ctx, c, chunk, &t) })
			}
		})
	}
	// Whatever the dials gave, the flood holds until its end: a storm
	// whose every attempt was refused still ends on time, not early.
	<-ctx.Done()
	wg.Wait()
	r := FloodResult{
		Attempts: t.attempts.Load(), Established: t.established.Load(), Refused: t.refused.Load(),
		Timeouts: t.timeouts.Load(), Reset: t.reset.Load(), Bytes: t.bytes.Load(), Errors: t.errors.Load(),
	}
	if t.firstErr != nil {
		r.FirstError = t.firstErr.Error()
	}
	return r
}

// holdWrite writes into c until the flood ends: the write blocks as soon
// as the sink's and every buffer on the way are full. chunk is only read.
func holdWrite(ctx context.Context, c net.Conn, chunk []byte, t *tally) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	for {
		n, err := c.Write(chunk)
		t.bytes.Add(uint64(n))
		if err != nil {
			if ctx.Err() == nil {
				t.reset.Add(1)
			}
			return
		}
	}
}

func floodUDP(ctx context.Context, cfg FloodConfig) (FloodResult, error) {
	base, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil {
		return FloodResult{}, fmt.Errorf("flood udp-ports: %w", err)
	}
	if int(base.Port())+cfg.Ports-1 > 65535 {
		return FloodResult{}, fmt.Errorf("flood udp-ports: %d ports from %d pass 65535", cfg.Ports, base.Port())
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return FloodResult{}, fmt.Errorf("flood udp-ports: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	defer pc.Close()
	var t tally
	var sent uint64
	payload := make([]byte, 32)
	// PPS in ticks of a millisecond: a burst of PPS/1000 (at least one)
	// per tick, one port after the other.
	perTick := max(cfg.PPS/1000, 1)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	i := 0
	for ctx.Err() == nil {
		for range perTick {
			dst := netip.AddrPortFrom(base.Addr(), base.Port()+uint16(i))
			i = (i + 1) % cfg.Ports
			if _, err := pc.WriteToUDPAddrPort(payload, dst); err != nil {
				if ctx.Err() != nil {
					break
				}
				t.fail(err)
				continue
			}
			sent++
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	r := FloodResult{Datagrams: sent, Errors: t.errors.Load()}
	if t.firstErr != nil {
		r.FirstError = t.firstErr.Error()
	}
	return r, nil
}

// HoldServer accepts TCP connections and never reads them: the far end of
// FloodTCPHold. Drop closes the connections held so far; Close closes
// them all and waits for its goroutines.
type HoldServer struct {
	*Server
	done chan struct{} // closed by Close
	mu   sync.Mutex
	held map[net.Conn]chan struct{} // closed by Drop: that connection ends
}

// ServeHold starts a HoldServer on ln (which it then owns).
func ServeHold(ln net.Listener) *HoldServer {
	h := &HoldServer{done: make(chan struct{}), held: make(map[net.Conn]chan struct{})}
	h.Server = Serve(ln, func(c net.Conn) {
		end := make(chan struct{})
		h.mu.Lock()
		h.held[c] = end
		h.mu.Unlock()
		select {
		case <-end:
		case <-h.done:
			h.mu.Lock()
			delete(h.held, c)
			h.mu.Unlock()
		}
	})
	return h
}

// Held is the number of connections held now.
func (h *HoldServer) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

// Drop closes every connection held now (with unread data: the peer gets
// a RST) and keeps accepting.
func (h *HoldServer) Drop() {
	h.mu.Lock()
	for c, end := range h.held {
		close(end)
		delete(h.held, c)
	}
	h.mu.Unlock()
}

// Close implements io.Closer.
func (h *HoldServer) Close() error {
	close(h.done)
	return h.Server.Close()
}

// UDPSink holds n consecutive UDP ports of one address and never reads
// them: the far end of FloodUDPPorts, so that the flood reaches only
// sockets of the bench.
type UDPSink struct {
	base  netip.AddrPort
	conns []*net.UDPConn
}

// ListenUDPRange binds n consecutive ports of addr, trying up to 50
// random bases in 20000…32767 (below Linux's ephemeral range).
func ListenUDPRange(addr netip.Addr, n int, rnd func(int) int) (*UDPSink, error) {
	const lo, hi = 20000, 32768
	if n < 1 || n > hi-lo {
		return nil, fmt.Errorf("udp sink: %d ports: want 1…%d", n, hi-lo)
	}
	var last error
	for range 50 {
		base := lo + rnd(hi-lo-n+1)
		s := &UDPSink{base: netip.AddrPortFrom(addr, uint16(base))}
		for p := base; p < base+n; p++ {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(p))))
			if err != nil {
				last = err
				break
			}
			s.conns = append(s.conns, c)
		}
		if len(s.conns) == n {
			return s, nil
		}
		s.Close()
	}
	return nil, fmt.Errorf("udp sink: no %d consecutive free ports on %s: %w", n, addr, last)
}

// Base is the address and first port.
func (s *UDPSink) Base() netip.AddrPort { return s.base }

// Close implements io.Closer.
func (s *UDPSink) Close() error {
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	s.conns = nil
	return errors.Join(errs...)
}
