package router

import (
	"sync"
	"time"
)

// The overlay queue towards wireguard-go is shared by every network of the
// node, so it is fair per network: each VNI (a PN's, an app's egress VNI,
// the probes') has its own FIFO sub-queue, wireguard-go's reader drains the
// sub-queues round-robin one frame at a time, and a network may hold at
// most its share of the buffers, overlayQueueLen divided by the number of
// active networks (those with frames queued or a sender waiting). Alone, a
// network may use every buffer but overlayReserve, which stays free so that
// a network that starts sending finds buffers at once instead of waiting
// for the flood in front of it to drain; it then gets the buffers the
// reader frees until the flooding network is back under its share.
//
// A sender that finds no buffer within its share waits (see overlayWait),
// registered in the queue's waiter list; the reader wakes the waiters whose
// network may take a buffer when it frees some. Senders without a port
// (Locals' writers, probes) never wait.
//
// Locking: overlayQueue.mu guards everything in the queue, the classes and
// the waiter fields of Attached (overlayNext, overlayClass). The buffers
// belong to whoever took them off the free list or a sub-queue.
const (
	// overlayReserve is the part of the queue a network alone cannot take:
	// room for the first packets of a network that starts sending (and for
	// probes) while another floods.
	overlayReserve = overlayQueueLen / 16
	// overlayNetworkMax is the most buffers one network can hold.
	overlayNetworkMax = overlayQueueLen - overlayReserve
	// overlayClassesKept: above this many sub-queues, idle ones are
	// forgotten when a new one is made (the map would otherwise remember
	// every VNI the node ever sent in).
	overlayClassesKept = 256
)

// overlayClass is one network's sub-queue.
type overlayClass struct {
	vni        uint32
	head, tail *overlayBuf // FIFO through overlayBuf.next
	n          int         // frames queued
	waiting    int         // senders waiting for a buffer
	// next and prev link the classes with frames queued into the reader's
	// round-robin ring.
	next, prev *overlayClass
}

func (c *overlayClass) active() bool { return c.n > 0 || c.waiting > 0 }

type overlayQueue struct {
	mu      sync.Mutex
	free    *overlayBuf // stack through overlayBuf.next
	nfree   int
	queued  int           // frames in every sub-queue
	active  int           // classes that are active()
	ring    *overlayClass // the next class Read takes from; nil when nothing is queued
	classes map[uint32]*overlayClass
	waiters *Attached     // senders waiting, through Attached.overlayNext
	ready   chan struct{} // capacity 1: frames were queued into an empty queue
	reading []*overlayBuf // Read's frames between its two critical sections
}

func newOverlayQueue(size int) *overlayQueue {
	q := &overlayQueue{
		classes: make(map[uint32]*overlayClass),
		ready:   make(chan struct{}, 1),
		reading: make([]*overlayBuf, 0, overlayBatch),
	}
	slab := make([]byte, overlayQueueLen*size)
	bufs := make([]overlayBuf, overlayQueueLen)
	for i := range bufs {
		bufs[i].b = slab[i*size : (i+1)*size : (i+1)*size]
		bufs[i].next = q.free
		q.free = &bufs[i]
	}
	q.nfree = overlayQueueLen
	return q
}

// class returns vni's sub-queue, making it if needed. Under mu.
func (q *overlayQueue) class(vni uint32) *overlayClass {
	if c := q.classes[vni]; c != nil {
		return c
	}
	if len(q.classes) >= overlayClassesKept {
		for k, c := range q.classes {
			if !c.active() {
				delete(q.classes, k)
			}
		}
	}
	c := &overlayClass{vni: vni}
	q.classes[vni] = c
	return c
}

// limit is the most buffers c may hold now. Under mu.
func (q *overlayQueue) limit(c *overlayClass) int {
	n := q.active
	if !c.active() {
		n++
	}
	return max(1, min(overlayNetworkMax, overlayQueueLen/n))
}

// admits reports whether c may take a buffer now. Under mu.
func (q *overlayQueue) admits(c *overlayClass) bool {
	return q.nfree > 0 && c.n < q.limit(c)
}

// refusal is the drop reason for a frame of c that was not admitted: its
// network had its share while others were active, or the queue was full.
// Under mu.
func (q *overlayQueue) refusal(c *overlayClass) counter {
	if c.n >= q.limit(c) && q.active > 1 {
		return dropOverlayFairShare
	}
	return dropOverlayQueueFull
}

// take returns a free buffer for a frame of vni, or nil and the drop
// reason. A sender with a port may wait for one (see overlayQueueLen);
// closed ends the wait.
func (q *overlayQueue) take(a *Attached, vni uint32, closed <-chan struct{}) (*overlayBuf, counter) {
	q.mu.Lock()
	c := q.class(vni)
	if !q.admits(c) && !q.wait(a, c, closed) {
		why := q.refusal(c)
		q.mu.Unlock()
		return nil, why
	}
	ob := q.free
	q.free = ob.next
	ob.next = nil
	q.nfree--
	q.mu.Unlock()
	return ob, 0
}

// wait waits, up to overlayWait once per batch of a's (a.overlayFull
// remembers a wait that ran out), until c admits a buffer; not at all
// without a port. It is called and returns with mu held.
func (q *overlayQueue) wait(a *Attached, c *overlayClass, closed <-chan struct{}) bool {
	if a == nil || a.overlayFull {
		return false
	}
	if a.overlayWake == nil {
		a.overlayWake = make(chan struct{}, 1)
		a.overlayTimer = time.NewTimer(overlayWait)
	} else {
		a.overlayTimer.Reset(overlayWait)
	}
	if !c.active() {
		q.active++
	}
	c.waiting++
	defer func() {
		c.waiting--
		if !c.active() {
			q.active--
			// One fewer active network: the others' shares grew.
			q.wake()
		}
	}()
	for {
		a.overlayClass = c
		a.overlayNext = q.waiters
		q.waiters = a
		q.mu.Unlock()
		var expired, stop bool
		select {
		case <-a.overlayWake:
		case <-a.overlayTimer.C:
			expired = true
		case <-closed:
			stop = true
		}
		q.mu.Lock()
		q.unlink(a)
		// A wake-up that comes after the timer fired stays in
		// overlayWake and only makes the next wait check once more.
		switch {
		case q.admits(c):
			if !expired {
				a.overlayTimer.Stop()
			}
			return true
		case expired:
			a.overlayFull = true
			return false
		case stop:
			a.overlayTimer.Stop()
			return false
		}
		// Another sender took the buffer first: wait on, same deadline.
	}
}

// unlink removes a from the waiter list if it is there. Under mu.
func (q *overlayQueue) unlink(a *Attached) {
	for p := &q.waiters; *p != nil; p = &(*p).overlayNext {
		if *p == a {
			*p = a.overlayNext
			break
		}
	}
	a.overlayNext, a.overlayClass = nil, nil
}

// wake wakes the waiters whose network may take a buffer now, at most as
// many as there are free buffers; each is unlinked and checks again. Under
// mu.
func (q *overlayQueue) wake() {
	budget := q.nfree
	for p := &q.waiters; *p != nil && budget > 0; {
		a := *p
		if !q.admits(a.overlayClass) {
			p = &a.overlayNext
			continue
		}
		*p = a.overlayNext
		a.overlayNext, a.overlayClass = nil, nil
		select {
		case a.overlayWake <- struct{}{}:
		default:
		}
		budget--
	}
}

// push queues ob (taken by take) in vni's sub-queue.
func (q *overlayQueue) push(ob *overlayBuf, vni uint32) {
	q.mu.Lock()
	c := q.class(vni)
	if c.n == 0 {
		if c.waiting == 0 {
			q.active++
		}
		if q.ring == nil {
			c.next, c.prev = c, c
			q.ring = c
		} else {
			// Last in the round, just before the next class to be read.
			c.next, c.prev = q.ring, q.ring.prev
			c.prev.next = c
			q.ring.prev = c
		}
		c.head = ob
	} else {
		c.tail.next = ob
	}
	c.tail = ob
	c.n++
	q.queued++
	wasEmpty := q.queued == 1
	q.mu.Unlock()
	if wasEmpty {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
}

// pop takes up to max frames round-robin, one per network in turn, into
// q.reading. Under mu.
func (q *overlayQueue) pop(max int) []*overlayBuf {
	out := q.reading[:0]
	for len(out) < max && q.ring != nil {
		c := q.ring
		ob := c.head
		c.head = ob.next
		ob.next = nil
		c.n--
		q.queued--
		out = append(out, ob)
		if c.n > 0 {
			q.ring = c.next
			continue
		}
		c.tail = nil
		if c.next == c {
			q.ring = nil
		} else {
			c.prev.next, c.next.prev = c.next, c.prev
			q.ring = c.next
		}
		c.next, c.prev = nil, nil
		if c.waiting == 0 {
			q.active--
		}
	}
	q.reading = out
	return out
}

// release returns Read's frames to the free list and wakes the waiters
// that may now take them.
func (q *overlayQueue) release(bufs []*overlayBuf) {
	q.mu.Lock()
	for i, ob := range bufs {
		ob.next = q.free
		q.free = ob
		bufs[i] = nil
	}
	q.nfree += len(bufs)
	if q.waiters != nil {
		q.wake()
	}
	q.mu.Unlock()
}

// release1 returns one buffer that take gave and that was never queued.
func (q *overlayQueue) release1(ob *overlayBuf) {
	q.mu.Lock()
	ob.next = q.free
	q.free = ob
	q.nfree++
	if q.waiters != nil {
		q.wake()
	}
	q.mu.Unlock()
}

// len returns the number of frames queued.
func (q *overlayQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued
}
