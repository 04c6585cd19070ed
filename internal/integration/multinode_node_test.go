package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// mnApp is the app every container of the multi-node tests belongs to.
const mnApp = "ap-3f1c9a52-6b7d-4e8f-9a0b-1c2d3e4f5a6b"

// mnNode is one in-process daemon (a whole node: router, WireGuard,
// memberlist, control socket) whose containers are gVisor netstacks.
//
// Teardown (t.Cleanup of the test that started it): the daemon is closed
// first, which closes every port it holds, then the containers, so the
// router never sees a container die under an attached port.
type mnNode struct {
	name   string
	d      *daemon.Daemon
	sock   string
	log    *logRecorder
	served chan error // Serve's result

	mu         sync.Mutex
	pending    []router.Port // ports for the next attaches, in order
	containers []*stacktest.Container

	stopOnce sync.Once
	stopErr  error
}

// startNode starts a daemon named name. keyFile "" lets the daemon create
// a key of its own (a node of another cluster).
func startNode(t *testing.T, name, keyFile string, join ...netip.AddrPort) *mnNode {
	t.Helper()
	dir := t.TempDir()
	n := &mnNode{name: name, sock: filepath.Join(dir, "c.sock"), served: make(chan error, 1)}
	n.log = newLogRecorder(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	var seeds []string
	for _, s := range join {
		seeds = append(seeds, s.String())
	}
	d, err := daemon.New(daemon.Config{
		Name:           name,
		StateDir:       filepath.Join(dir, "state"),
		Control:        n.sock,
		Logger:         slog.New(n.log).With("node", name),
		OpenPort:       n.openPort,
		ClusterKeyFile: keyFile,
		Gossip:         netip.MustParseAddrPort("127.0.0.1:0"),
		Join:           seeds,
		Timing:         cluster.TimingFast,
		GossipNetwork:  &gossipNet,
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	n.d = d
	go func() { n.served <- d.Serve() }()
	t.Cleanup(func() {
		if err := n.stop(false); err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, p := range n.pending {
			p.Close()
		}
		for _, c := range n.containers {
			if err := c.Close(); err != nil {
				t.Errorf("close container %v of %s: %v", c.Addr(), name, err)
			}
		}
	})
	return n
}

// stop closes the daemon, or crashes it (Daemon.Crash: no leave), once;
// later calls return the first result.
func (n *mnNode) stop(crash bool) error {
	n.stopOnce.Do(func() {
		if crash {
			n.stopErr = n.d.Crash()
		} else {
			n.stopErr = n.d.Close()
		}
		n.stopErr = errors.Join(n.stopErr, <-n.served)
	})
	return n.stopErr
}

// openPort is the daemon's OpenPort: instead of wrapping the received fd
// (one end of a pipe) it hands out the port of the container attach
// queued.
func (n *mnNode) openPort(f *os.File, _ int) (router.Port, string, error) {
	f.Close()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.pending) == 0 {
		return nil, "", errors.New("no container is waiting for this attach")
	}
	p := n.pending[0]
	n.pending = n.pending[1:]
	return p, "vr0", nil
}

// call sends one control request to the daemon.
func (n *mnNode) call(req *control.Request, fd *os.File, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req.Version = control.Version
	if err := control.Call(ctx, n.sock, req, fd, result); err != nil {
		return fmt.Errorf("%s %s: %w", n.name, req.Op, err)
	}
	return nil
}

// attach creates a container with addr and attaches it to network pn
// through the control socket, pinning the address (a stacktest container
// is built with its address, so the daemon must not pick another).
func (n *mnNode) attach(t *testing.T, pn, addr string) (*node, control.Container) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	c, err := stacktest.New(stacktest.Config{Addr: a})
	if err != nil {
		t.Fatalf("container %s: %v", addr, err)
	}
	p := c.Port()
	n.mu.Lock()
	n.pending = append(n.pending, p)
	n.containers = append(n.containers, c)
	n.mu.Unlock()

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var info control.Container
	err = n.call(&control.Request{Op: control.OpAttach, Attach: &control.AttachRequest{
		Network: pn, App: mnApp, Type: "web", IP: addr,
	}}, r, &info)
	if err != nil {
		// A refusal before OpenPort leaves the port queued.
		n.mu.Lock()
		if i := slices.Index(n.pending, p); i >= 0 {
			n.pending = slices.Delete(n.pending, i, i+1)
			p.Close()
		}
		n.mu.Unlock()
		t.Fatalf("attach %s in %s on %s: %v", addr, pn, n.name, err)
	}
	if info.IP != addr || info.Node != n.name {
		t.Fatalf("attach %s on %s: daemon answered %+v", addr, n.name, info)
	}
	return &node{Container: c, network: records.VNI(pn)}, info
}

func (n *mnNode) containersOp(t *testing.T) []control.Container {
	t.Helper()
	var cs []control.Container
	if err := n.call(&control.Request{Op: control.OpContainers}, nil, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func (n *mnNode) peersOp(t *testing.T) []control.Peer {
	t.Helper()
	var ps []control.Peer
	if err := n.call(&control.Request{Op: control.OpPeers}, nil, &ps); err != nil {
		t.Fatal(err)
	}
	return ps
}

func (n *mnNode) statusOp(t *testing.T) control.Status {
	t.Helper()
	var st control.Status
	if err := n.call(&control.Request{Op: control.OpStatus}, nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// peer returns name as n's peers op shows it.
func (n *mnNode) peer(t *testing.T, name string) (control.Peer, bool) {
	t.Helper()
	for _, p := range n.peersOp(t) {
		if p.Name == name {
			return p, true
		}
	}
	return control.Peer{}, false
}

// hasContainer reports whether n's containers op lists id.
func (n *mnNode) hasContainer(t *testing.T, id string) bool {
	t.Helper()
	return slices.ContainsFunc(n.containersOp(t), func(c control.Container) bool { return c.ID == id })
}

// logRecorder passes records on to a handler and keeps each one's message
// and attributes, so a test can wait for what a daemon logged.
type logRecorder struct {
	slog.Handler
	mu   *sync.Mutex
	recs *[]string
}

func newLogRecorder(h slog.Handler) *logRecorder {
	return &logRecorder{Handler: h, mu: new(sync.Mutex), recs: new([]string)}
}

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	*l.recs = append(*l.recs, b.String())
	l.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{Handler: l.Handler.WithAttrs(as), mu: l.mu, recs: l.recs}
}

func (l *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{Handler: l.Handler.WithGroup(name), mu: l.mu, recs: l.recs}
}

// find returns the first record containing every part.
func (l *logRecorder) find(parts ...string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range *l.recs {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(r, p) }) {
			return r, true
		}
	}
	return "", false
}
