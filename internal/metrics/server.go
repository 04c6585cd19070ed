// Package metrics serves what a node counts to Prometheus: /metrics (the
// text exposition of github.com/prometheus/client_golang, with the Go
// runtime and process collectors), /healthz and /readyz.
//
// Everything is read at scrape time from one Snapshot of a Source (the
// daemon): the data path keeps the counters it keeps anyway and never
// calls into this package, so metrics cost nothing per packet.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the HTTP listener of --metrics-listen. Its one goroutine (the
// http.Server's) is stopped by Close.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	served chan struct{}
}

// Handler returns the handler of the three endpoints, for tests and for
// callers that serve it themselves.
func Handler(src Source) http.Handler {
	return handler(src, time.Now)
}

func handler(src Source, now func() time.Time) http.Handler {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{src: src, now: now},
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		// One scrape at a time: each takes a snapshot of every port.
		MaxRequestsInFlight: 2,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := src.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Listen listens on addr (host:port, any address; port 0 picks one) and
// serves src until Close.
func Listen(addr string, src Source, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	s := &Server{
		ln:     ln,
		served: make(chan struct{}),
		srv: &http.Server{
			Handler:           Handler(src),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", ln.Addr(), "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr())
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the listener, waits up to a second for scrapes in progress
// and then for the serving goroutine.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	<-s.served
	return err
}
