package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/porttest"
)

const (
	testPN  = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	testPN2 = "pn-0b7e3c52-9a41-4d6e-8f10-2c3d4e5f6a7b"
	testApp = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
)

// fakePorts hands out in-memory ports instead of wrapping TUN fds.
type fakePorts struct {
	mu    sync.Mutex
	ports []*porttest.Port
}

func (f *fakePorts) open(fd *os.File, mtu int) (router.Port, string, error) {
	fd.Close()
	p := porttest.New(4, mtu)
	f.mu.Lock()
	f.ports = append(f.ports, p)
	f.mu.Unlock()
	return p, "fake0", nil
}

func (f *fakePorts) all() []*porttest.Port {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*porttest.Port(nil), f.ports...)
}

type testDaemon struct {
	*Daemon
	ports *fakePorts
	sock  string
}

func startDaemon(t *testing.T) *testDaemon {
	return startDaemonWith(t, func(*Config) {})
}

// startDaemonWith starts a daemon whose cleanup closes it and checks that
// no goroutine outlives it. Start later daemons of one test with
// startDaemonNoLeakCheck: their cleanup runs first, while earlier daemons
// still hold goroutines.
func startDaemonWith(t *testing.T, edit func(*Config)) *testDaemon {
	return startDaemonOpts(t, edit, true)
}

func startDaemonNoLeakCheck(t *testing.T, edit func(*Config)) *testDaemon {
	return startDaemonOpts(t, edit, false)
}

func startDaemonOpts(t testing.TB, edit func(*Config), leakCheck bool) *testDaemon {
	t.Helper()
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	fp := &fakePorts{}
	cfg := Config{Name: "test-node", StateDir: filepath.Join(dir, "state"), Control: filepath.Join(dir, "c.sock"), OpenPort: fp.open,
		GossipNetwork: &gossipNet}
	edit(&cfg)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		for _, p := range fp.all() {
			if !p.Closed() {
				t.Errorf("a port is still open after Close")
			}
		}
		if !leakCheck {
			return
		}
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after Close\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
	return &testDaemon{Daemon: d, ports: fp, sock: filepath.Join(dir, "c.sock")}
}

// call sends one request over the real control socket.
func (td *testDaemon) call(t *testing.T, req *control.Request, withFD bool, result any) error {
	t.Helper()
	req.Version = control.Version
	var f *os.File
	if withFD {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		f = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return control.Call(ctx, td.sock, req, f, result)
}

func (td *testDaemon) attach(t *testing.T, ar control.AttachRequest) (control.Container, error) {
	t.Helper()
	var c control.Container
	err := td.call(t, &control.Request{Op: "attach", Attach: &ar}, true, &c)
	return c, err
}

func errCode(err error) control.Code {
	var ce *control.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}

func TestAttachAllocatesLowestFree(t *testing.T) {
	td := startDaemon(t)
	a, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.IP != "10.240.0.1" || a.Number != 1 || a.MTU != router.DefaultMTU || a.Resolver != "169.254.20.10" || a.Node != "test-node" {
		t.Fatalf("first attach = %+v", a)
	}
	if len(a.Names) != 3 || a.Names[0] != "1.web."+testApp+"."+testPN+".private-network.internal." {
		t.Fatalf("names = %q", a.Names)
	}
	b, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	if b.IP != "10.240.0.2" || b.Number != 2 {
		t.Fatalf("second attach = %+v", b)
	}
	// Another network starts from the bottom again: addresses overlap by design.
	c, err := td.attach(t, control.AttachRequest{Network: testPN2, App: testApp, Type: "worker", ContainerKey: "k3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.IP != "10.240.0.1" || c.Number != 1 || len(c.Names) != 2 {
		t.Fatalf("attach in second network = %+v", c)
	}
	// Detaching frees the address and the number for the next attach.
	if err := td.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: a.ID}}, false, nil); err != nil {
		t.Fatal(err)
	}
	d, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k4"})
	if err != nil {
		t.Fatal(err)
	}
	if d.IP != "10.240.0.1" || d.Number != 1 {
		t.Fatalf("attach after detach = %+v", d)
	}
	var list []control.Container
	if err := td.call(t, &control.Request{Op: "containers"}, false, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("containers = %d, want 3", len(list))
	}
	var st control.Status
	if err := td.call(t, &control.Request{Op: "status"}, false, &st); err != nil {
		t.Fatal(err)
	}
	if st.Containers != 3 || st.Networks != 2 || st.Node != "test-node" {
		t.Fatalf("status = %+v", st)
	}
	for _, r := range router.DropReasons() {
		if _, ok := st.Drops[r]; !ok {
			t.Errorf("status drops lack %q", r)
		}
	}
}

func TestAttachRefusals(t *testing.T) {
	td := startDaemon(t)
	if _, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", IP: "10.240.1.7", Number: 3, ContainerKey: "k1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     control.AttachRequest
		code    control.Code
		message string
	}{
		{"ip taken", control.AttachRequest{Network: testPN, App: testApp, Type: "web", IP: "10.240.1.7"}, "conflict", "in use"},
		{"number taken", control.AttachRequest{Network: testPN, App: testApp, Type: "web", Number: 3}, "conflict", "in use"},
		{"same netns", control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k1"}, "conflict", "already attached"},
		{"bad network", control.AttachRequest{Network: "pn-x", App: testApp, Type: "web"}, "invalid", "malformed network"},
		{"bad app", control.AttachRequest{Network: testPN, App: "app", Type: "web"}, "invalid", "malformed app"},
		{"bad type", control.AttachRequest{Network: testPN, App: testApp, Type: "Web"}, "invalid", "type"},
		{"ip outside", control.AttachRequest{Network: testPN, App: testApp, Type: "web", IP: "10.240.4.1"}, "invalid", "outside"},
		{"ip broadcast", control.AttachRequest{Network: testPN, App: testApp, Type: "web", IP: "10.240.3.255"}, "invalid", "outside"},
		{"ip network", control.AttachRequest{Network: testPN, App: testApp, Type: "web", IP: "10.240.0.0"}, "invalid", "outside"},
		{"negative number", control.AttachRequest{Network: testPN, App: testApp, Type: "web", Number: -1}, "invalid", "positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := td.attach(t, tt.req)
			if errCode(err) != tt.code || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("err = %v (code %q), want code %q containing %q", err, errCode(err), tt.code, tt.message)
			}
		})
	}
	var list []control.Container
	if err := td.call(t, &control.Request{Op: "containers"}, false, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("refused attaches left containers behind: %d", len(list))
	}
	// Every port opened for a refused attach has been closed again.
	open := 0
	for _, p := range td.ports.all() {
		if !p.Closed() {
			open++
		}
	}
	if open != 1 {
		t.Fatalf("%d ports open, want 1", open)
	}
	if err := td.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: "c-000000000000"}}, false, nil); errCode(err) != "not_found" {
		t.Fatalf("detach unknown: %v", err)
	}
	if err := td.call(t, &control.Request{Op: "attach", Attach: &control.AttachRequest{Network: testPN, App: testApp, Type: "web"}}, false, nil); err == nil {
		t.Fatal("attach without fd succeeded")
	}
}

func TestNetworkFull(t *testing.T) {
	td := startDaemon(t)
	for i := 1; i <= 1022; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		if _, err := td.Daemon.attach(context.Background(), &control.AttachRequest{Network: testPN, App: testApp, Type: "worker", ContainerKey: fmt.Sprint(i)}, r); err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
	}
	_, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "worker"})
	if errCode(err) != "full" || !strings.Contains(err.Error(), "full") {
		t.Fatalf("attach 1023 = %v, want full", err)
	}
	if st := td.status(); st.Containers != 1022 {
		t.Fatalf("containers = %d after refused attach", st.Containers)
	}
	if all := td.ports.all(); !all[len(all)-1].Closed() {
		t.Fatal("the refused attach's port is still open")
	}
	// Other networks are not affected.
	if _, err := td.attach(t, control.AttachRequest{Network: testPN2, App: testApp, Type: "web"}); err != nil {
		t.Fatal(err)
	}
}

func TestDeadPortIsForgotten(t *testing.T) {
	td := startDaemon(t)
	c, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	// The TUN vanishing (its namespace deleted) looks like this to the daemon.
	td.ports.all()[0].Close()
	poll.Until(t, 5*time.Second, "container "+c.ID+" to go with its port", func() bool { return td.status().Containers == 0 })
	d, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if d.IP != c.IP || d.Number != c.Number {
		t.Fatalf("address/number not freed: got %s #%d", d.IP, d.Number)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	fp := &fakePorts{}
	if _, err := New(Config{Name: "n", StateDir: dir, MTU: 100, OpenPort: fp.open}); err == nil {
		t.Error("mtu 100 accepted")
	}
	if _, err := New(Config{StateDir: dir, OpenPort: fp.open}); err == nil {
		t.Error("empty name accepted")
	}
	d, err := New(Config{Name: "n", StateDir: dir, OpenPort: fp.open})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	// A second daemon on the same socket is refused while the first answers.
	if _, err := New(Config{Name: "n", StateDir: dir, OpenPort: fp.open}); !errors.Is(err, control.ErrInUse) {
		t.Errorf("second daemon: %v, want ErrInUse", err)
	}
	d.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
