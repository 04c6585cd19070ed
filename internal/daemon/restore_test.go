package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/supervise"
)

// fakeHolder records what the daemon hands its port holder.
type fakeHolder struct {
	mu       sync.Mutex
	held     map[string]supervise.Port
	released []string
}

func (h *fakeHolder) Hold(p supervise.Port, f *os.File) error {
	if f == nil {
		panic("hold without an fd")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[p.ID] = p
	return nil
}

func (h *fakeHolder) Release(id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.held, id)
	h.released = append(h.released, id)
	return nil
}

// TestHoldSuspendRestore: every attached port goes to the holder with its
// state and leaves it on detach; Suspend stops the daemon without
// detaching; a daemon started with the held ports restores them as they
// were, and releases (closes) one it cannot rebuild.
func TestHoldSuspendRestore(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	h := &fakeHolder{held: make(map[string]supervise.Port)}
	fp := &fakePorts{}
	cfg := Config{Name: "test-node", StateDir: filepath.Join(dir, "state"), Control: filepath.Join(dir, "c.sock"),
		OpenPort: fp.open, GossipNetwork: &gossipNet, Holder: h}
	start := func(cfg Config) (*testDaemon, chan error) {
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- d.Serve() }()
		return &testDaemon{Daemon: d, ports: fp, sock: cfg.Control}, served
	}
	td, served := start(cfg)
	a, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := td.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: b.ID}}, false, nil); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	p, ok := h.held[a.ID]
	heldN, released := len(h.held), slices.Clone(h.released)
	h.mu.Unlock()
	if !ok || heldN != 1 || p.IP != a.IP || p.Number != a.Number || p.NetnsID != "k1" || p.VNI == 0 || p.Network != testPN {
		t.Fatalf("held %d ports, a as %+v", heldN, p)
	}
	if !slices.Equal(released, []string{b.ID}) {
		t.Fatalf("released %v, want [%s]", released, b.ID)
	}
	if err := td.Suspend(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if len(h.released) != 1 {
		t.Errorf("Suspend released ports: %v", h.released)
	}
	h.mu.Unlock()

	// The next worker.
	fa, fa2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer fa2.Close()
	fb, fb2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer fb2.Close()
	bad := supervise.Port{Container: control.Container{ID: "c-000000000bad", Network: testPN, App: testApp, Type: "web", Number: 5, IP: "10.240.0.5"}} // no VNI
	cfg.Restore = []supervise.HeldPort{{Port: p, File: fa}, {Port: bad, File: fb}}
	cfg.Supervision = func() supervise.Handover { return supervise.Handover{SupervisorPID: 42, Restarts: 1} }
	td2, served2 := start(cfg)
	var cs []control.Container
	if err := td2.call(t, &control.Request{Op: "containers"}, false, &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].ID != a.ID || cs[0].IP != a.IP || cs[0].Number != a.Number || !slices.Equal(cs[0].Names, a.Names) {
		t.Fatalf("containers after the restore: %+v, want %+v", cs, a)
	}
	h.mu.Lock()
	released = slices.Clone(h.released)
	h.mu.Unlock()
	if !slices.Contains(released, bad.ID) {
		t.Errorf("the port that could not be restored was not released: %v", released)
	}
	var st control.Status
	if err := td2.call(t, &control.Request{Op: "status"}, false, &st); err != nil {
		t.Fatal(err)
	}
	if st.Pid != os.Getpid() || st.SupervisorPID != 42 || st.Restarts != 1 || st.Supervisor == nil || st.Supervisor.RestoreFailed != 1 {
		t.Errorf("status: pid %d supervisor_pid %d restarts %d supervisor %+v", st.Pid, st.SupervisorPID, st.Restarts, st.Supervisor)
	}
	// A new attach of the same namespace is refused: the restored port has it.
	if _, err := td2.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k1"}); errCode(err) != control.CodeConflict {
		t.Errorf("second attach of a restored namespace: %v", err)
	}
	var up control.UpgradeStarted
	if err := td2.call(t, &control.Request{Op: "upgrade", Upgrade: &control.UpgradeRequest{}}, false, &up); errCode(err) != control.CodeInvalid {
		t.Errorf("upgrade without a supervisor's Upgrade: %v", err)
	}
	if err := td2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served2; err != nil {
		t.Fatal(err)
	}
}
