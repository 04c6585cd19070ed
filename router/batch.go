package router

import "sync"

// readBatch is everything a port's read goroutine uses while it reads and
// forwards one batch: read buffers, the views forward routes, and scratch.
// Batches come from a pool shared by the ports of one shape and go back
// after each batch, so an idle port (blocked in ReadWaiter.WaitRead) holds
// no buffer memory: with a thousand containers on a node most are idle.
type readBatch struct {
	n     int // packets in bufs from the last Read
	bufs  [][]byte
	sizes []int

	// The packets forward routes, at most cap(pkts) at a time: views of
	// bufs, or of segs when a super-packet had to be split. gso[i] marks a
	// packet kept whole, whose virtio-net header precedes it.
	pkts  [][]byte
	gso   []bool
	dests []*Attached
	out   [][]byte

	// Segment buffers for splitting super-packets, allocated on first use
	// (a batch that only ever carries same-node traffic never needs them).
	segs     [][]byte
	segSizes []int
	segSize  int

	icmpBufs [][]byte
	icmpOut  [][]byte
}

// batchShape is what makes two ports' batches interchangeable.
type batchShape struct {
	batch   int // read buffers
	bufSize int // bytes per read buffer
	segSize int // bytes per segment buffer, 0 without offload
}

// maxRouted is how many packets forward routes at once: the segments of a
// split 64 KiB super-packet (48 at MSS 1350) fit several times.
const maxRouted = 128

type batchPool struct {
	shape batchShape
	pool  sync.Pool
}

func newBatchPool(s batchShape) *batchPool {
	p := &batchPool{shape: s}
	p.pool.New = func() any { return newReadBatch(s) }
	return p
}

func (p *batchPool) get() *readBatch  { return p.pool.Get().(*readBatch) }
func (p *batchPool) put(b *readBatch) { p.pool.Put(b) }

func newReadBatch(s batchShape) *readBatch {
	routed := max(s.batch, maxRouted)
	b := &readBatch{
		bufs:     carve(s.batch, s.bufSize),
		sizes:    make([]int, s.batch),
		pkts:     make([][]byte, 0, routed),
		gso:      make([]bool, routed),
		dests:    make([]*Attached, routed),
		out:      make([][]byte, 0, routed),
		segSize:  s.segSize,
		icmpBufs: carve(icmpBurst, Headroom+icmpMaxSize),
		icmpOut:  make([][]byte, 0, icmpBurst),
	}
	return b
}

// segments returns the batch's segment buffers, allocating them once.
func (b *readBatch) segments() ([][]byte, []int) {
	if b.segs == nil {
		b.segs = carve(maxRouted, b.segSize)
		b.segSizes = make([]int, maxRouted)
	}
	return b.segs, b.segSizes
}

// carve cuts n buffers of size bytes out of one allocation. Each is capped
// so that a Port appending in place (GRO) cannot run into the next one.
func carve(n, size int) [][]byte {
	slab := make([]byte, n*size)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}

// pools hands out one batchPool per shape; ports of one node share few
// shapes (one per MTU and kind of port).
type pools struct {
	mu sync.Mutex
	m  map[batchShape]*batchPool
}

func (p *pools) of(s batchShape) *batchPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bp, ok := p.m[s]; ok {
		return bp
	}
	if p.m == nil {
		p.m = make(map[batchShape]*batchPool)
	}
	bp := newBatchPool(s)
	p.m[s] = bp
	return bp
}
