package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// DNSConfig configures a DNS load run.
type DNSConfig struct {
	Server string // IP:PORT, UDP
	Name   string // query name; fully qualified or not
	// Unique prepends a label that is new for every query (random per run,
	// then the worker and a counter), so no cache can answer it.
	Unique      bool
	Type        uint16 // 0 means A
	Concurrency int
	Duration    time.Duration
	Timeout     time.Duration // per query; 0 means 2 s
}

// uniqueLabelLen is the length of the label Unique prepends: 16 hex digits
// (16 bits of run nonce, 16 of worker, 32 of counter).
const uniqueLabelLen = 16

// DNS sends queries over UDP from Concurrency workers, each with its own
// socket and one query in flight, for Duration, and reports the rate of
// answered queries and their latency. Unanswered queries time out after
// Timeout and count as Timeouts.
func DNS(ctx context.Context, cfg DNSConfig) (Result, error) {
	if cfg.Concurrency < 1 || cfg.Duration <= 0 {
		return Result{}, fmt.Errorf("dns load: need concurrency ≥ 1 and a positive duration")
	}
	if cfg.Type == 0 {
		cfg.Type = mdns.TypeA
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	name := mdns.Fqdn(cfg.Name)
	if cfg.Unique {
		name = fmt.Sprintf("%0*x.%s", uniqueLabelLen, 0, name)
	}
	if _, ok := mdns.IsDomainName(name); !ok {
		return Result{}, fmt.Errorf("dns load: %q is not a domain name", name)
	}
	q := new(mdns.Msg)
	q.SetQuestion(name, cfg.Type)
	template, err := q.Pack()
	if err != nil {
		return Result{}, fmt.Errorf("dns load: pack query for %s: %w", name, err)
	}
	// The question starts right after the 12-byte header with the first
	// label's length.
	if cfg.Unique && template[12] != uniqueLabelLen {
		return Result{}, fmt.Errorf("dns load: unexpected query layout")
	}
	var nonce [2]byte
	_, _ = rand.Read(nonce[:])

	conns := make([]net.Conn, cfg.Concurrency)
	for i := range conns {
		c, err := net.Dial("udp", cfg.Server)
		if err != nil {
			closeAll(conns)
			return Result{}, fmt.Errorf("dns load: socket to %s: %w", cfg.Server, err)
		}
		conns[i] = c
	}
	defer closeAll(conns)

	start := time.Now()
	end := start.Add(cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	// A worker blocked in Read wakes at its own deadline; closing the
	// sockets when ctx ends also wakes it at once on Ctrl-C.
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			_ = c.SetDeadline(time.Now())
		}
	})
	defer stop()

	ws := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{rcodes: make(map[int]uint64), end: end}
		ws[i] = w
		msg := append([]byte(nil), template...)
		wg.Go(func() { w.dns(ctx, conns[i], msg, cfg, uint16(i), nonce) })
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	return merge("dns", cfg.Server+" "+cfg.Name, cfg.Concurrency, elapsed, ws, func(c int) string {
		if s, ok := mdns.RcodeToString[c]; ok {
			return s
		}
		return fmt.Sprintf("RCODE%d", c)
	}), nil
}

func (w *worker) dns(ctx context.Context, c net.Conn, msg []byte, cfg DNSConfig, id uint16, nonce [2]byte) {
	buf := make([]byte, 65535)
	var seq uint32
	qid := uint16(id) << 8
	for !w.over(ctx) {
		seq++
		qid++
		binary.BigEndian.PutUint16(msg[0:2], qid)
		if cfg.Unique {
			var label [8]byte
			copy(label[0:2], nonce[:])
			binary.BigEndian.PutUint16(label[2:4], id)
			binary.BigEndian.PutUint32(label[4:8], seq)
			hex.Encode(msg[13:13+uniqueLabelLen], label[:])
		}
		t0 := time.Now()
		deadline := t0.Add(cfg.Timeout)
		if w.end.Before(deadline) {
			deadline = w.end
		}
		w.sent++
		if _, err := c.Write(msg); err != nil {
			if w.over(ctx) {
				w.sent--
				return
			}
			w.fail(fmt.Errorf("send query: %w", err))
			pause(ctx)
			continue
		}
		_ = c.SetReadDeadline(deadline)
		for {
			n, err := c.Read(buf)
			if err != nil {
				switch {
				case w.over(ctx):
					// The run ended with this query in flight: it counts
					// as neither answered nor lost.
					w.sent--
					return
				case errors.Is(err, os.ErrDeadlineExceeded):
					w.timeouts++
				default:
					w.fail(fmt.Errorf("read answer: %w", err))
					pause(ctx)
				}
				break
			}
			// A late answer to an earlier, timed-out query: keep waiting
			// for ours.
			if n < 12 || binary.BigEndian.Uint16(buf[0:2]) != qid || buf[2]&0x80 == 0 {
				continue
			}
			w.latUS = append(w.latUS, float64(time.Since(t0).Nanoseconds())/1e3)
			w.completed++
			rcode := int(buf[3] & 0x0f)
			w.rcodes[rcode]++
			if rcode == mdns.RcodeSuccess && binary.BigEndian.Uint16(buf[6:8]) == 0 {
				w.noAnswer++
			}
			break
		}
	}
}

// pause keeps a worker whose socket fails at once (ICMP unreachable) from
// spinning on the CPU the measured path needs.
func pause(ctx context.Context) {
	t := time.NewTimer(time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}
