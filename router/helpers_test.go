package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/poll"
)

// PktOpts describes a test packet; the zero value is a small UDP packet
// without DF.
type PktOpts struct {
	Proto    uint8 // 0: UDP
	Payload  int   // transport payload bytes
	DF       bool
	FragOff  uint16 // in 8-byte units
	ICMPType header.ICMPv4Type
	ID       uint16
}

// udp4 builds a valid IPv4/UDP packet from src to dst.
func UDP4(src, dst string) []byte { return Pkt4(src, dst, PktOpts{Payload: 32}) }

// pkt4 builds a valid IPv4 packet with a UDP or ICMP payload.
func Pkt4(src, dst string, o PktOpts) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	proto := o.Proto
	if proto == 0 {
		proto = uint8(header.UDPProtocolNumber)
	}
	var l4 []byte
	switch proto {
	case uint8(header.UDPProtocolNumber):
		l4 = make([]byte, header.UDPMinimumSize+o.Payload)
		u := header.UDP(l4)
		u.Encode(&header.UDPFields{SrcPort: 4000, DstPort: 5000, Length: uint16(len(l4))})
		for i := header.UDPMinimumSize; i < len(l4); i++ {
			l4[i] = byte(i)
		}
		x := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(s), tcpip.AddrFrom4(d), uint16(len(l4)))
		x = checksum.Checksum(l4[header.UDPMinimumSize:], x)
		u.SetChecksum(^u.CalculateChecksum(x))
	case uint8(header.ICMPv4ProtocolNumber):
		l4 = make([]byte, header.ICMPv4MinimumSize+o.Payload)
		ic := header.ICMPv4(l4)
		ic.SetType(o.ICMPType)
		ic.SetIdent(77)
		ic.SetSequence(1)
		ic.SetChecksum(^checksum.Checksum(l4, 0))
	default:
		l4 = make([]byte, o.Payload)
	}
	b := make([]byte, header.IPv4MinimumSize+len(l4))
	ip := header.IPv4(b)
	var flags uint8
	if o.DF {
		flags = header.IPv4FlagDontFragment
	}
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), ID: o.ID, Flags: flags, FragmentOffset: o.FragOff * 8,
		TTL: 64, Protocol: proto, SrcAddr: tcpip.AddrFrom4(s), DstAddr: tcpip.AddrFrom4(d),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], l4)
	return b
}

// ipv6Pkt is a minimal IPv6 header (version 6), enough to be rejected.
func IPv6Pkt() []byte {
	b := make([]byte, header.IPv6MinimumSize)
	b[0] = 6 << 4
	return b
}

func NewTestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitAccounted polls until the router has read rx packets and accounted
// for each of them. Counters are folded in after a batch's Writes, so all
// effects of those packets are visible once this returns.
func WaitAccounted(t *testing.T, r *Router, rx uint64) Stats {
	t.Helper()
	var s Stats
	poll.UntilNil(t, 5*time.Second, fmt.Sprintf("the router to account for %d packets", rx), func() error {
		s = r.Stats()
		var drops uint64
		for _, v := range s.Drops {
			drops += v
		}
		if s.Counters["rx_packets"] == rx && s.Counters["forwarded"]+s.Counters["to_stack"]+drops == rx {
			return nil
		}
		return fmt.Errorf("counters %v drops %v", s.Counters, s.Drops)
	})
	return s
}

// fakePort is a Port double for direct calls of forward: Read blocks until
// Close, Write records (or fails) without copying more than it must.
type fakePort struct {
	batch    int
	writeErr error
	closed   chan struct{}
	once     sync.Once

	mu     sync.Mutex
	writes [][][]byte // copies, one entry per Write call
	record bool
	count  atomic.Int64 // packets written, also when not recording
}

func newFakePort(batch int, record bool) *fakePort {
	return &fakePort{batch: batch, record: record, closed: make(chan struct{})}
}

func (p *fakePort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-p.closed
	return 0, os.ErrClosed
}

func (p *fakePort) Write(bufs [][]byte, offset int) (int, error) {
	if p.writeErr != nil {
		return 0, p.writeErr
	}
	if p.record {
		p.mu.Lock()
		var call [][]byte
		for _, b := range bufs {
			call = append(call, append([]byte(nil), b[offset:]...))
		}
		p.writes = append(p.writes, call)
		p.mu.Unlock()
	}
	p.count.Add(int64(len(bufs)))
	return len(bufs), nil
}

func (p *fakePort) BatchSize() int { return p.batch }

func (p *fakePort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// attachNoLoop attaches p without a read goroutine, so the test can call
// forward itself. Close works as usual.
func attachNoLoop(tb testing.TB, r *Router, p Port, network uint32, addr string, mtu int) *Attached {
	tb.Helper()
	a, err := r.attach(p, PortConfig{Network: network, PN: testPN(network), Addr: netip.MustParseAddr(addr), MTU: mtu, Name: addr})
	if err != nil {
		tb.Fatalf("attach %s: %v", addr, err)
	}
	close(a.done)
	tb.Cleanup(func() { a.Close() })
	return a
}

// testBatches holds the read batch of each port a test drives by hand
// (no read goroutine), so that loading and forwarding see the same one.
var testBatches sync.Map // *Attached → *readBatch

// batchOf returns the read batch tests use for a.
func batchOf(a *Attached) *readBatch {
	if b, ok := testBatches.Load(a); ok {
		return b.(*readBatch)
	}
	b, _ := testBatches.LoadOrStore(a, a.pool.get())
	return b.(*readBatch)
}

// load puts pkts into a's test batch as a Read would and returns it.
func load(a *Attached, pkts ...[]byte) *readBatch {
	b := batchOf(a)
	for i, p := range pkts {
		b.sizes[i] = copy(b.bufs[i][Headroom:], p)
	}
	b.n = len(pkts)
	return b
}

// errPort is a Port whose Read returns the queued errors (one per call)
// and then blocks until Close.
type errPort struct {
	errs   chan error
	closed chan struct{}
	once   sync.Once
}

func newErrPort(errs ...error) *errPort {
	p := &errPort{errs: make(chan error, len(errs)), closed: make(chan struct{})}
	for _, e := range errs {
		p.errs <- e
	}
	return p
}

func (p *errPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case err := <-p.errs:
		return 0, err
	default:
	}
	<-p.closed
	return 0, os.ErrClosed
}

func (p *errPort) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (p *errPort) BatchSize() int                               { return 1 }
func (p *errPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

var errTransient = errors.New("read len 1600 overflows bufs element len 1500")

// checkICMPUnreachable validates an ICMP error the router sent to `to`
// about orig, and returns its ICMP header.
func CheckICMPUnreachable(t *testing.T, b []byte, to string, code header.ICMPv4Code, orig []byte) header.ICMPv4 {
	t.Helper()
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || !ip.IsChecksumValid() {
		t.Fatalf("ICMP error has a bad IPv4 header: % x", b)
	}
	if got := ip.SourceAddress(); got != tcpip.AddrFrom4(DefaultResolver.As4()) {
		t.Errorf("ICMP source = %s, want %s", got, DefaultResolver)
	}
	if got, want := ip.DestinationAddress(), tcpip.AddrFrom4(netip.MustParseAddr(to).As4()); got != want {
		t.Errorf("ICMP destination = %s, want %s", got, want)
	}
	if ip.TransportProtocol() != header.ICMPv4ProtocolNumber {
		t.Fatalf("protocol = %d, want ICMP", ip.Protocol())
	}
	ic := header.ICMPv4(ip.Payload())
	if checksum.Checksum(ic, 0) != 0xffff {
		t.Errorf("ICMP checksum invalid")
	}
	if ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != code {
		t.Errorf("ICMP type/code = %d/%d, want 3/%d", ic.Type(), ic.Code(), code)
	}
	quoted := ic.Payload()
	want := orig
	if len(want) > icmpMaxSize-icmpHeaderSize {
		want = want[:icmpMaxSize-icmpHeaderSize]
	}
	if string(quoted) != string(want) {
		t.Errorf("quoted packet differs:\n got % x\nwant % x", quoted, want)
	}
	if binary.BigEndian.Uint16(ic[4:]) != 0 {
		t.Errorf("unused ICMP field not zero")
	}
	return ic
}

// testPN is the network id tests give the table of VNI vni.
func testPN(vni uint32) string { return fmt.Sprintf("pn-%d", vni) }
