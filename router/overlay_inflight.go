package router

import (
	"os"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// wireguard-go queues what Overlay.Read hands it, per peer, in FIFOs of up
// to 1024 batches (device.QueueOutboundSize) on the way to encryption and
// the socket. Under a flood those fill, and a frame of a quiet network
// that the overlay queue's round-robin let through at once then waits
// behind a hundred thousand of the flood's frames inside wireguard-go,
// where nothing is fair. So Read keeps at most overlayInflight frames
// between itself and the bind's Send: beyond that it waits for wireguard-go
// to send, and the backlog stays in the overlay queue, per network, where
// the round-robin and the shares decide who goes next.
//
// The count is handed minus sent. Handshakes and keepalives are sent
// without having been read (the count never goes below 0), and wireguard-go
// drops some frames it was handed (no peer for the address, a full staged
// queue while a handshake is pending): those would stay counted for good,
// so a wait in which nothing at all is sent for overlayInflightLost ends
// with the count forgotten (overlay_inflight_lost). That is the worst
// stall a lost frame can cause other traffic.
const (
	// overlayInflight: two of wireguard-go's batches, one being encrypted
	// while the other is sent; at a single TCP stream's 120k frames/s
	// that is 2 ms of data, far more than the pipeline's own latency.
	overlayInflight = 2 * overlayBatch
)

// overlayInflightLost: see overlayInflight (a variable for tests).
var overlayInflightLost = 5 * time.Millisecond

// pacedBind is the UDP bind of the overlay's wireguard-go device: every
// packet sent counts against the Overlay's frames in flight.
type pacedBind struct {
	conn.Bind
	o *Overlay
}

func (b pacedBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.Bind.Send(bufs, ep)
	b.o.sentFrames(len(bufs))
	return err
}

// pace makes Read keep at most overlayInflight frames in wireguard-go,
// counted by the returned bind (wrapping bind). Without it (tests that
// call Read themselves) Read hands out frames as fast as it is called.
func (o *Overlay) pace(bind conn.Bind) conn.Bind {
	o.paced.Store(true)
	return pacedBind{Bind: bind, o: o}
}

// sentFrames records n packets sent by the bind; it runs on wireguard-go's
// per-peer senders and handshake workers, concurrently.
func (o *Overlay) sentFrames(n int) {
	for {
		v := o.inflight.Load()
		nv := max(0, v-int64(n))
		if o.inflight.CompareAndSwap(v, nv) {
			break
		}
	}
	select {
	case o.sent <- struct{}{}:
	default:
	}
}

// waitInflight returns when Read may hand out more frames: fewer than
// overlayInflight are in flight, or none was sent for overlayInflightLost
// (the count is then forgotten). Only Read's goroutine calls it.
func (o *Overlay) waitInflight() error {
	if !o.paced.Load() || o.inflight.Load() < overlayInflight {
		return nil
	}
	o.ctr[ctrOverlayInflightWaits].Add(1)
	if o.inflightTimer == nil {
		o.inflightTimer = time.NewTimer(overlayInflightLost)
	} else {
		o.inflightTimer.Reset(overlayInflightLost)
	}
	defer o.inflightTimer.Stop()
	for {
		select {
		case <-o.sent:
			if o.inflight.Load() < overlayInflight {
				return nil
			}
			// Progress, not enough yet: the deadline starts again.
			o.inflightTimer.Reset(overlayInflightLost)
		case <-o.inflightTimer.C:
			o.inflight.Store(0)
			o.ctr[ctrOverlayInflightLost].Add(1)
			return nil
		case <-o.closed:
			return os.ErrClosed
		}
	}
}
