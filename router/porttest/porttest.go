// Package porttest provides an in-memory router.Port for tests: the test
// plays the container, sending packets into the router with Send and
// receiving what the router wrote with Recv.
package porttest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/vrouter/vrouter/router"
)

// QueueLen is the capacity of each direction's queue. Like a TUN's
// txqueue, a full queue towards the container drops packets (see Dropped)
// instead of blocking the router; Send blocks when the router is behind.
const QueueLen = 4096

// Port is an in-memory router.Port. Its methods are safe for concurrent
// use.
type Port struct {
	batch, mtu int
	toRouter   chan []byte // Send → Read
	toCont     chan []byte // Write → Recv
	closed     chan struct{}
	closeOnce  sync.Once
	dropped    atomic.Uint64
}

var _ router.Port = (*Port)(nil)

// New returns a port whose Read returns up to batch packets at a time and
// that accepts packets of up to mtu bytes in Send.
func New(batch, mtu int) *Port {
	if batch < 1 || mtu < 1 {
		panic(fmt.Sprintf("porttest: batch %d and mtu %d must be positive", batch, mtu))
	}
	return &Port{
		batch:    batch,
		mtu:      mtu,
		toRouter: make(chan []byte, QueueLen),
		toCont:   make(chan []byte, QueueLen),
		closed:   make(chan struct{}),
	}
}

// Send makes the container emit pkt (copied): a later Read returns it. It
// blocks while the queue is full and fails once the port is closed or if
// pkt is larger than the MTU.
func (p *Port) Send(pkt []byte) error {
	if len(pkt) > p.mtu {
		return fmt.Errorf("porttest: packet of %d bytes exceeds MTU %d", len(pkt), p.mtu)
	}
	select {
	case <-p.closed:
		return os.ErrClosed
	default:
	}
	cp := append([]byte(nil), pkt...)
	select {
	case p.toRouter <- cp:
		return nil
	case <-p.closed:
		return os.ErrClosed
	}
}

// Recv returns the next packet the router wrote to the container. Packets
// written before Close can still be received; after that it returns
// os.ErrClosed. It fails with ctx's error when ctx is done first.
func (p *Port) Recv(ctx context.Context) ([]byte, error) {
	select {
	case pkt := <-p.toCont:
		return pkt, nil
	default:
	}
	select {
	case pkt := <-p.toCont:
		return pkt, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.closed:
		select {
		case pkt := <-p.toCont:
			return pkt, nil
		default:
			return nil, os.ErrClosed
		}
	}
}

// Read implements router.Port: it blocks until at least one packet was
// sent or the port is closed, then returns as many queued packets as fit
// in bufs.
func (p *Port) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, os.ErrClosed
	default:
	}
	var pkt []byte
	select {
	case pkt = <-p.toRouter:
	case <-p.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-p.toRouter:
		default:
			return n, nil
		}
	}
}

// Write implements router.Port: it copies each packet to the container's
// queue, dropping those that do not fit.
func (p *Port) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		cp := append([]byte(nil), b[offset:]...)
		select {
		case p.toCont <- cp:
		default:
			p.dropped.Add(1)
		}
	}
	return len(bufs), nil
}

// BatchSize implements router.Port.
func (p *Port) BatchSize() int { return p.batch }

// MTU returns the mtu given to New.
func (p *Port) MTU() int { return p.mtu }

// Dropped returns how many packets Write dropped because the container's
// queue was full.
func (p *Port) Dropped() uint64 { return p.dropped.Load() }

// Close implements router.Port: blocked and later Reads, Writes and Sends
// fail with os.ErrClosed. It is idempotent.
func (p *Port) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return nil
}

// Closed reports whether Close was called.
func (p *Port) Closed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}
