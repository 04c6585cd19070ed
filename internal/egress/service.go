package egress

import (
	"context"
	"errors"
	"log/slog"
	"sync"
)

// Service is dedicated egress on one node: an Assigner and the Path it
// drives, and the goroutines of both.
type Service struct {
	Assigner *Assigner
	Path     *Path

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // orders Start's loops.Add before Close's loops.Wait
	started bool
	closed  bool
	loops   sync.WaitGroup // the probes
}

// New builds the service from d. Nothing runs until Start.
func New(d Deps) (*Service, error) {
	switch {
	case d.Self == "":
		return nil, errors.New("egress: no node name")
	case d.Members == nil || d.Store == nil || d.Datapath == nil || d.Apps == nil || d.View == nil || d.NewNAT == nil:
		return nil, errors.New("egress: a dependency is missing")
	case d.Probe.IsValid() && len(d.IPs) == 0:
		return nil, errors.New("an egress probe needs egress IPs (--egress-ip): only gateways probe")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Assigner = newAssigner(s.ctx, d)
	s.Path = newPath(d, s.Assigner)
	return s, nil
}

// Start restores this gateway's saved assignments and drain flag, then
// starts the probes. Call it once, before the first Reconcile; after
// Close it does nothing.
func (s *Service) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return
	}
	s.started = true
	s.Assigner.Restore()
	if a := s.Assigner; a.probe.IsValid() && a.isGateway() {
		s.loops.Go(func() { a.gatewayProbe(s.ctx, a.ips[0], a.probe) })
	}
	s.loops.Go(func() { s.Path.overlayProbe(s.ctx) })
}

// Reconcile brings the assignments, then the data path, up to date with
// the cluster. Its owner calls it on every cluster change and every
// second, from one goroutine.
func (s *Service) Reconcile() {
	s.Assigner.Reconcile()
	s.Path.Reconcile()
}

// Close stops the probes, cuts short the rollbacks of failed enables and
// closes the gateway NATs. After
// it returns no goroutine of the service is left.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.loops.Wait()
	s.Path.close()
}
