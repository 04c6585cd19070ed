package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// ConnConfig configures a TCP connection-rate run.
type ConnConfig struct {
	Addr        string // IP:PORT of a server that answers each connection's byte (ServeOneByte)
	Concurrency int
	Duration    time.Duration
	Timeout     time.Duration // per exchange; 0 means 2 s
}

// Conn measures new TCP connections per second: each worker in turn
// connects, sends one byte, reads the server's one-byte answer and closes.
// Latency is that whole exchange.
func Conn(ctx context.Context, cfg ConnConfig) (Result, error) {
	if cfg.Concurrency < 1 || cfg.Duration <= 0 {
		return Result{}, fmt.Errorf("connection load: need concurrency ≥ 1 and a positive duration")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancel()
	ws := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{end: start.Add(cfg.Duration)}
		ws[i] = w
		wg.Go(func() { w.conn(ctx, cfg) })
	}
	wg.Wait()
	return merge("tcp-connect", cfg.Addr, cfg.Concurrency, time.Since(start).Seconds(), ws, nil), nil
}

func (w *worker) conn(ctx context.Context, cfg ConnConfig) {
	d := net.Dialer{Timeout: cfg.Timeout}
	var b [1]byte
	for !w.over(ctx) {
		t0 := time.Now()
		w.sent++
		c, err := d.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			switch {
			case w.over(ctx):
				w.sent--
				return
			case errors.Is(err, os.ErrDeadlineExceeded):
				w.timeouts++
			default:
				w.fail(fmt.Errorf("connect: %w", err))
				pause(ctx)
			}
			continue
		}
		_ = c.SetDeadline(t0.Add(cfg.Timeout))
		_, err = c.Write(b[:])
		if err == nil {
			_, err = io.ReadFull(c, b[:])
		}
		c.Close()
		switch {
		case err != nil && w.over(ctx):
			w.sent--
			return
		case err == nil:
			w.completed++
			w.latUS = append(w.latUS, float64(time.Since(t0).Nanoseconds())/1e3)
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.timeouts++
		default:
			w.fail(fmt.Errorf("exchange: %w", err))
		}
	}
}

// Server is a TCP server for the bench: each accepted connection gets
// its own goroutine running handle, then is closed. It owns its accept
// goroutine and those; Close stops them all (closing the connections).
type Server struct {
	ln       net.Listener
	handle   func(net.Conn)
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{} // nil once closed
	accepted uint64
}

// Serve starts serving on ln (which it then owns).
func Serve(ln net.Listener, handle func(net.Conn)) *Server {
	s := &Server{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.accept)
	return s
}

// OneByteServer answers every connection's first byte with one byte and
// closes it: the peer of Conn.
type OneByteServer = Server

// ServeOneByte starts a OneByteServer on ln (which it then owns).
func ServeOneByte(ln net.Listener) *OneByteServer {
	return Serve(ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			_, _ = c.Write(b[:])
		}
	})
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

func (s *Server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.conns == nil { // closed
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.accepted++
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(c)
		})
	}
}

// Close stops accepting, closes open connections and waits for every
// goroutine.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
	return err
}
