package tunnel

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/router"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// plainBatch is how many packets a TUN without IFF_VNET_HDR reads per
// batch (one read(2) each: the kernel has no batched TUN read).
const plainBatch = 64

// vnetBatch is how many packets a vnet_hdr TUN reads per batch. Each read
// may be a 64 KiB super-packet.
const vnetBatch = 16

// tunPort is a container's TUN as a router.Port, read and written through
// the Go poller. It replaces wireguard-go's NativeTun for container ports:
// NativeTun keeps per-device GRO tables and a 64 KiB read buffer (about
// 700 KiB per port, measured), and always splits super-packets, where the
// router wants to pass them whole between two containers of the node.
//
// Between bursts the router waits in WaitRead, which holds no buffer: an
// idle port costs its descriptor and a goroutine.
type tunPort struct {
	f    *os.File
	rc   syscall.RawConn
	name string
	mtu  int

	// Owned by the reading goroutine. drained: the queue may be empty
	// (the last read found it so, or did not look), so WaitRead must look
	// and maybe wait for the poller. waited: this WaitRead's look found
	// nothing and it waited for the poller. single: the port was idle
	// when its packet came, so the next read takes that packet and does
	// not look for a second: request/response traffic brings one packet
	// per wake-up, and the read(2) that finds the queue empty would cost
	// as much as the packet's own. WaitRead's look after the batch then
	// tells a burst, which is read to the end. The rd* fields carry
	// readOnce's arguments and results: the poller takes a func, and a
	// closure per call would allocate on the hot path.
	drained bool
	waited  bool
	single  bool
	pollFD  [1]unix.PollFd
	rdBufs  [][]byte
	rdSizes []int
	rdAt    int
	rdN     int
	rdErr   error
	readFn  func(uintptr) bool
	waitFn  func(uintptr) bool

	// The same for writers, serialised by wmu; groOut is Write's list of
	// coalesced packets.
	wmu     sync.Mutex
	groOut  [][]byte
	wrBufs  [][]byte
	wrAt    int
	wrSent  int
	wrErr   error
	writeFn func(uintptr) bool

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// vnetPort is a tunPort whose TUN has IFF_VNET_HDR and TSO: it moves
// super-packets (router.OffloadPort).
type vnetPort struct {
	tunPort

	// Read (not ReadGSO) state, owned by the reader: the super-packet
	// being segmented for a caller that takes only plain packets.
	scratch []byte
	pending int // size of the packet in scratch; 0: none
	next    int // its next segment
}

var (
	_ router.Port        = (*tunPort)(nil)
	_ router.ReadWaiter  = (*tunPort)(nil)
	_ router.OffloadPort = (*vnetPort)(nil)
	_ router.ReadWaiter  = (*vnetPort)(nil)
)

// newTUNPort takes ownership of fd, a non-blocking TUN descriptor.
func newTUNPort(fd int, info Info, mtu int) (router.Port, error) {
	if info.VnetHdr {
		// TSO only: the router segments TCP; UDP super-packets (USO)
		// would need a second segmenter for little gain.
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	}
	// The descriptor is non-blocking, so os.NewFile registers it with the
	// poller and reads park the goroutine, not a thread.
	f := os.NewFile(uintptr(fd), "tun:"+info.Name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	if info.VnetHdr {
		p := &vnetPort{}
		p.init(f, rc, info.Name, mtu)
		return p, nil
	}
	p := &tunPort{}
	p.init(f, rc, info.Name, mtu)
	return p, nil
}

func (p *tunPort) init(f *os.File, rc syscall.RawConn, name string, mtu int) {
	p.f, p.rc, p.name, p.mtu = f, rc, name, mtu
	p.readFn, p.waitFn, p.writeFn = p.readOnce, p.pollOnce, p.writeOnce
	p.drained = true // a new port waits without buffers
}

func (p *tunPort) BatchSize() int  { return plainBatch }
func (p *vnetPort) BatchSize() int { return vnetBatch }

// MTU and Name are the values of OpenPort's caller and of TUNGETIFF: the
// port never asks the kernel, whose answer would come from the wrong
// namespace.
func (p *tunPort) MTU() (int, error)     { return p.mtu, nil }
func (p *tunPort) Name() (string, error) { return p.name, nil }

// Close closes the descriptor; a blocked Read or WaitRead returns
// os.ErrClosed. It is idempotent.
func (p *tunPort) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.closeErr = p.f.Close()
	})
	return p.closeErr
}

// ioErr maps errors of the raw descriptor: after Close the poller reports
// "use of closed file", which callers know as os.ErrClosed.
func (p *tunPort) ioErr(op string, err error) error {
	if p.closed.Load() {
		return fmt.Errorf("%s %s: %w", op, p.name, os.ErrClosed)
	}
	return fmt.Errorf("%s %s: %w", op, p.name, err)
}

// WaitRead returns once the TUN has a packet queued (or right away when the
// last read did not empty the queue).
func (p *tunPort) WaitRead() error {
	if !p.drained {
		return nil
	}
	// The poller forgets readiness when a wait begins (it re-arms), so
	// look at the queue itself before waiting: a packet that arrived
	// since the last read would otherwise wait for the next one.
	p.waited = false
	err := p.rc.Read(p.waitFn)
	if err != nil {
		return p.ioErr("wait", err)
	}
	p.drained = false
	p.single = p.waited
	return nil
}

// pollOnce is WaitRead's callback: true when a packet is queued. Called
// again after the poller's wake-up it trusts the poller and does not look
// a second time; a spurious wake-up costs readOnce one empty read, not a
// wait holding buffers (see single).
func (p *tunPort) pollOnce(fd uintptr) bool {
	if p.waited {
		return true
	}
	p.pollFD[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	for {
		n, err := unix.Poll(p.pollFD[:], 0)
		if err == unix.EINTR {
			continue
		}
		ready := err != nil || n > 0
		p.waited = !ready
		return ready
	}
}

// readBatch reads packets into bufs[i][at:] until the queue is empty or
// bufs are full; it blocks (in the poller) only for the first one. Right
// after a WaitRead that waited it reads one packet only, and returns none
// (without blocking) if the wake-up brought none.
func (p *tunPort) readBatch(bufs [][]byte, sizes []int, at int) (int, error) {
	p.rdBufs, p.rdSizes, p.rdAt, p.rdN, p.rdErr = bufs, sizes, at, 0, nil
	err := p.rc.Read(p.readFn)
	n, rerr := p.rdN, p.rdErr
	p.rdBufs, p.rdSizes = nil, nil
	if err != nil {
		return n, p.ioErr("read", err)
	}
	if rerr != nil {
		return n, p.ioErr("read", rerr)
	}
	return n, nil
}

// readOnce is the poller's callback of readBatch: true when done, false to
// wait for the descriptor to become readable.
func (p *tunPort) readOnce(fd uintptr) bool {
	for p.rdN < len(p.rdBufs) {
		m, err := unix.Read(int(fd), p.rdBufs[p.rdN][p.rdAt:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			p.drained = true
			if p.single {
				// Back to WaitRead, which waits without buffers.
				p.single = false
				return true
			}
			return p.rdN > 0
		case err != nil:
			p.single = false
			p.rdErr = err
			return true
		}
		p.rdSizes[p.rdN] = m
		p.rdN++
		if p.single {
			p.single = false
			p.drained = true
			return true
		}
	}
	p.drained = false
	return true
}

// writeAll writes bufs[i][at:], one write(2) each. A failed packet does not
// stop the others; the first error is returned.
func (p *tunPort) writeAll(bufs [][]byte, at int) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.writeLocked(bufs, at)
}

func (p *tunPort) writeLocked(bufs [][]byte, at int) (int, error) {
	p.wrBufs, p.wrAt, p.wrSent, p.wrErr = bufs, at, 0, nil
	err := p.rc.Write(p.writeFn)
	sent, werr := p.wrSent, p.wrErr
	p.wrBufs = nil
	if err != nil {
		return sent, p.ioErr("write", err)
	}
	if werr != nil {
		return sent, p.ioErr("write", werr)
	}
	return sent, nil
}

func (p *tunPort) writeOnce(fd uintptr) bool {
	for _, b := range p.wrBufs {
		for {
			_, err := unix.Write(int(fd), b[p.wrAt:])
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				p.wrSent++
			} else if p.wrErr == nil {
				p.wrErr = err
			}
			break
		}
	}
	return true
}

func (p *tunPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return p.readBatch(bufs, sizes, offset)
}

func (p *tunPort) Write(bufs [][]byte, offset int) (int, error) {
	return p.writeAll(bufs, offset)
}

// headroom checks that offset leaves room for the virtio-net header.
func (p *vnetPort) headroom(op string, offset int) error {
	if offset < offload.HdrLen {
		return fmt.Errorf("%s %s: offset %d leaves no room for the virtio-net header", op, p.name, offset)
	}
	return nil
}

// ReadGSO reads packets with their virtio-net headers in front.
func (p *vnetPort) ReadGSO(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := p.headroom("read", offset); err != nil {
		return 0, err
	}
	n, err := p.readBatch(bufs, sizes, offset-offload.HdrLen)
	for i := range n {
		// A read shorter than the header is not a packet; a negative
		// size makes the router count it as malformed.
		sizes[i] -= offload.HdrLen
	}
	return n, err
}

// WriteGSO writes packets whose virtio-net header precedes them. Runs of
// UDP datagrams of one flow are first merged into UDP super-packets
// (offload.CoalesceUDP): one write(2) per run instead of one per datagram.
// It returns len(bufs) on success.
func (p *vnetPort) WriteGSO(bufs [][]byte, offset int) (int, error) {
	if err := p.headroom("write", offset); err != nil {
		return 0, err
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.groOut = offload.CoalesceUDP(bufs, offset, p.groOut[:0])
	_, err := p.writeLocked(p.groOut, offset-offload.HdrLen)
	clear(p.groOut) // keep no reference to the caller's buffers
	if err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// Write writes plain packets (from other nodes, the netstack), with a
// virtio-net header written into the headroom in front of each. Runs of
// TCP segments of one flow are first coalesced into super-packets
// (offload.Coalesce): the container's kernel then takes one packet where
// it would take forty. A buffer absorbs the segments after it only if it
// has spare capacity (wireguard-go's buffers do). Write returns len(bufs)
// on success.
func (p *vnetPort) Write(bufs [][]byte, offset int) (int, error) {
	if err := p.headroom("write", offset); err != nil {
		return 0, err
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.groOut = offload.Coalesce(bufs, offset, p.groOut[:0])
	_, err := p.writeLocked(p.groOut, offset-offload.HdrLen)
	clear(p.groOut) // keep no reference to the caller's buffers
	if err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// Read returns plain packets only: checksums completed and super-packets
// segmented (what does not fit in bufs comes with the next Read). The
// router uses ReadGSO; Read serves callers that want finished packets.
func (p *vnetPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if p.scratch == nil {
		p.scratch = make([]byte, offload.HdrLen+router.MaxGSOPacket)
	}
	for {
		if p.pending > 0 {
			return p.segments(bufs, sizes, offset)
		}
		one, size := [][]byte{p.scratch}, []int{0}
		n, err := p.readBatch(one, size, 0)
		if n == 0 {
			if err == nil {
				continue // a wake-up without a packet (see single)
			}
			return 0, err
		}
		m := size[0] - offload.HdrLen
		if m <= 0 {
			continue // not a packet
		}
		h := offload.Decode(p.scratch)
		pkt := p.scratch[offload.HdrLen : offload.HdrLen+m]
		switch {
		case h.Plain():
		case h.GSO() == offload.GSONone:
			if !offload.CompleteChecksum(pkt, h) {
				continue
			}
		default:
			p.pending, p.next = m, 0
			continue
		}
		if len(bufs) == 0 || len(bufs[0]) < offset+m {
			return 0, fmt.Errorf("read %s: %d-byte packet does not fit the buffer", p.name, m)
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, err
	}
}

// segments hands out the next segments of the super-packet in scratch.
func (p *vnetPort) segments(bufs [][]byte, sizes []int, offset int) (int, error) {
	h := offload.Decode(p.scratch)
	pkt := header.IPv4(p.scratch[offload.HdrLen : offload.HdrLen+p.pending])
	n := -1
	total := 0
	if h.GSO() == offload.GSOTCPv4 && len(pkt) >= header.IPv4MinimumSize && pkt.IsValid(len(pkt)) {
		n, total = offload.SplitTCP(pkt, int(h.GSOSize), p.next, bufs, sizes, offset)
	}
	if n < 0 {
		p.pending = 0
		return 0, fmt.Errorf("read %s: %w", p.name, errBadSuperPacket)
	}
	p.next += n
	if p.next >= total {
		p.pending = 0
	}
	return n, nil
}

var errBadSuperPacket = errors.New("malformed or unsupported super-packet")
