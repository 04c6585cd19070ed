package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"golang.org/x/sys/unix"
)

// startServer listens in a fresh directory and serves h until the test ends.
func startServer(t *testing.T, h Handler) *Server {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "control.sock"))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func statusHandler(ctx context.Context, req *Request, fd *os.File) (any, error) {
	if fd != nil {
		fd.Close()
	}
	switch req.Op {
	case OpStatus:
		return &Status{Node: "n1", MTU: 1390, Counters: map[string]uint64{"forwarded": 3}, Drops: map[string]uint64{"malformed": 0}}, nil
	case OpDetach:
		if req.Detach.ID == "c-000000000001" {
			return nil, nil
		}
		return nil, Errorf(CodeNotFound, "no container %s", req.Detach.ID)
	}
	return nil, fmt.Errorf("boom")
}

func TestRoundTrip(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, statusHandler)
	ctx := context.Background()

	var st Status
	if err := Call(ctx, s.Path(), &Request{Op: OpStatus}, nil, &st); err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Node != "n1" || st.MTU != 1390 || st.Counters["forwarded"] != 3 {
		t.Fatalf("status = %+v", st)
	}
	if err := Call(ctx, s.Path(), &Request{Op: OpDetach, Detach: &DetachRequest{ID: "c-000000000001"}}, nil, nil); err != nil {
		t.Fatalf("detach: %v", err)
	}

	err := Call(ctx, s.Path(), &Request{Op: OpDetach, Detach: &DetachRequest{ID: "c-ffffffffffff"}}, nil, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeNotFound || e.Error() != "no container c-ffffffffffff" {
		t.Fatalf("detach unknown: err = %v (%T)", err, err)
	}
	err = Call(ctx, s.Path(), &Request{Op: OpContainers}, nil, nil)
	if !errors.As(err, &e) || e.Code != CodeInternal || e.Message != "boom" {
		t.Fatalf("plain handler error: err = %v", err)
	}
	err = Call(ctx, s.Path(), &Request{Version: 7, Op: OpStatus}, nil, nil)
	if !errors.As(err, &e) || e.Code != CodeVersion {
		t.Fatalf("version 7: err = %v", err)
	}
	err = Call(ctx, s.Path(), &Request{Op: OpAttach}, nil, nil)
	if !errors.As(err, &e) || e.Code != CodeBadRequest {
		t.Fatalf("attach without body: err = %v", err)
	}
}

func TestSocketMode(t *testing.T) {
	s := startServer(t, statusHandler)
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want socket 0600", fi.Mode())
	}
}

// TestAttachFD passes a pipe's write end and checks the handler can write
// into it.
func TestAttachFD(t *testing.T) {
	leaktest.Check(t)
	type got struct {
		req *AttachRequest
		err error
	}
	gotc := make(chan got, 1)
	s := startServer(t, func(ctx context.Context, req *Request, fd *os.File) (any, error) {
		if fd == nil {
			return nil, Errorf(CodeInvalid, "no fd")
		}
		defer fd.Close()
		_, err := fd.Write([]byte("hello from the daemon"))
		gotc <- got{req.Attach, err}
		return &Container{ID: "c-0f3a9b2c41d7", IP: "10.240.0.1", MTU: 1390, Names: []string{"a.", "b."}}, nil
	})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	req := &Request{Op: OpAttach, Attach: &AttachRequest{Network: "pn-1", App: "ap-1", Type: "web", Interface: "vr0"}}
	var c Container
	if err := Call(context.Background(), s.Path(), req, w, &c); err != nil {
		t.Fatalf("attach: %v", err)
	}
	// The client keeps its own copy; the daemon's is a separate descriptor.
	if _, err := w.Write([]byte{}); err != nil {
		t.Fatalf("client's fd was disturbed: %v", err)
	}
	w.Close()
	g := <-gotc
	if g.err != nil {
		t.Fatalf("handler write: %v", g.err)
	}
	if g.req.Network != "pn-1" || g.req.Type != "web" || g.req.Interface != "vr0" {
		t.Fatalf("handler saw %+v", g.req)
	}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "hello from the daemon" {
		t.Fatalf("read %q, %v", b, err)
	}
	if c.ID != "c-0f3a9b2c41d7" || len(c.Names) != 2 {
		t.Fatalf("result = %+v", c)
	}
}

// rawCall sends b with the given fds on a raw connection and returns the
// decoded response.
func rawCall(t *testing.T, path string, b []byte, fds ...int) *Response {
	t.Helper()
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.(*net.UnixConn).WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	raw, err := readAll(c.(*net.UnixConn))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatalf("response %q: %v", raw, err)
	}
	return &resp
}

// fdCounter hands out pipe read ends and tells whether the server closed
// its copies: a pipe's write end sees EPIPE only once every read end,
// including those passed to the server, is closed.
type fdCounter struct {
	t      *testing.T
	writes []*os.File
}

func (p *fdCounter) newFD() int {
	r, w, err := os.Pipe()
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { r.Close(); w.Close() })
	p.writes = append(p.writes, w)
	fd, err := unix.Dup(int(r.Fd()))
	if err != nil {
		p.t.Fatal(err)
	}
	r.Close()
	p.t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// closeOurs closes the test's copies; afterwards allClosed polls for EPIPE.
func (p *fdCounter) allClosedByServer(ours []int) {
	p.t.Helper()
	for _, fd := range ours {
		unix.Close(fd)
	}
	for _, w := range p.writes {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := w.Write([]byte{0})
			if errors.Is(err, unix.EPIPE) {
				break
			}
			if time.Now().After(deadline) {
				p.t.Fatalf("server kept a passed descriptor open (write err %v)", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestRejectedFDsAreClosed(t *testing.T) {
	leaktest.Check(t)
	called := make(chan string, 10)
	s := startServer(t, func(ctx context.Context, req *Request, fd *os.File) (any, error) {
		called <- req.Op
		if fd != nil {
			fd.Close()
		}
		return nil, nil
	})
	attach := []byte(`{"version":1,"op":"attach","attach":{"network":"n"}}`)
	tests := []struct {
		name string
		body []byte
		nfd  int
	}{
		{"two fds", attach, 2},
		{"twenty fds", attach, 20},
		{"fd with status", []byte(`{"version":1,"op":"status"}`), 1},
		{"fd with bad json", []byte(`{"version":1,`), 1},
		{"fd with bad version", []byte(`{"version":3,"op":"attach"}`), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fdCounter{t: t}
			var fds []int
			for range tt.nfd {
				fds = append(fds, p.newFD())
			}
			resp := rawCall(t, s.Path(), tt.body, fds...)
			if resp.Error == nil {
				t.Fatalf("accepted: %+v", resp)
			}
			want := CodeBadRequest
			if strings.Contains(string(tt.body), `"version":3`) {
				want = CodeVersion
			}
			if resp.Error.Code != want {
				t.Fatalf("code = %q (%s), want %q", resp.Error.Code, resp.Error.Message, want)
			}
			p.allClosedByServer(fds)
		})
	}
	select {
	case op := <-called:
		t.Fatalf("handler called for %q", op)
	default:
	}
}

func TestRequestTooLarge(t *testing.T) {
	s := startServer(t, statusHandler)
	big := []byte(`{"version":1,"op":"status","pad":"` + strings.Repeat("x", MaxMessage) + `"}`)
	resp := rawCall(t, s.Path(), big)
	if resp.Error == nil || resp.Error.Code != CodeBadRequest || !strings.Contains(resp.Error.Message, "exceeds") {
		t.Fatalf("response = %+v", resp.Error)
	}
	// The client refuses to send it in the first place.
	req := &Request{Op: OpAttach, Attach: &AttachRequest{Network: strings.Repeat("n", MaxMessage)}}
	if err := Call(context.Background(), s.Path(), req, nil, nil); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("Call = %v", err)
	}
}

// TestLargeResponse needs several packets: a full network's listing is far
// bigger than one.
func TestLargeResponse(t *testing.T) {
	want := make([]Container, 1020)
	for i := range want {
		want[i] = Container{ID: fmt.Sprintf("c-%012x", i), Names: []string{strings.Repeat("n", 200)}, AttachedAt: time.Unix(int64(i), 0).UTC()}
	}
	s := startServer(t, func(ctx context.Context, req *Request, fd *os.File) (any, error) { return want, nil })
	var got []Container
	if err := Call(context.Background(), s.Path(), &Request{Op: OpContainers}, nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || got[1019].ID != want[1019].ID || !got[5].AttachedAt.Equal(want[5].AttachedAt) {
		t.Fatalf("got %d containers, last %+v", len(got), got[len(got)-1])
	}
}

func TestHandlerPanic(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, func(ctx context.Context, req *Request, fd *os.File) (any, error) { panic("bug") })
	err := Call(context.Background(), s.Path(), &Request{Op: OpStatus}, nil, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInternal {
		t.Fatalf("err = %v", err)
	}
}

func TestWrappedErrorKeepsCode(t *testing.T) {
	s := startServer(t, func(ctx context.Context, req *Request, fd *os.File) (any, error) {
		return nil, fmt.Errorf("attach c-1: %w", Errorf(CodeFull, "network pn-1 is full"))
	})
	err := Call(context.Background(), s.Path(), &Request{Op: OpStatus}, nil, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeFull || e.Message != "attach c-1: network pn-1 is full" {
		t.Fatalf("err = %#v", err)
	}
}

func TestListenErrors(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	t.Run("in use", func(t *testing.T) {
		s := startServer(t, statusHandler)
		_, err := Listen(s.Path())
		if !errors.Is(err, ErrInUse) {
			t.Fatalf("second Listen: %v, want ErrInUse", err)
		}
		// The first server still works after the probe.
		if err := Call(context.Background(), s.Path(), &Request{Op: OpStatus}, nil, nil); err != nil {
			t.Fatalf("first server after probe: %v", err)
		}
	})
	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		// A bound socket that never listens leaves a file nobody answers on,
		// as a killed daemon does.
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		err = Call(context.Background(), path, &Request{Op: OpStatus}, nil, nil)
		if !errors.Is(err, ErrNoDaemon) || err.Error() != "no daemon answering at "+path {
			t.Fatalf("Call on stale socket: %v", err)
		}
		s, err := Listen(path)
		if err != nil {
			t.Fatalf("Listen over stale socket: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(statusHandler) }()
		if err := Call(context.Background(), path, &Request{Op: OpStatus}, nil, nil); err != nil {
			t.Fatalf("Call: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file left after Close: %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("Listen on a file: %v", err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("regular file removed: %v", err)
		}
	})
	t.Run("no parent dir", func(t *testing.T) {
		if _, err := Listen(filepath.Join(dir, "missing", "c.sock")); err == nil {
			t.Fatal("Listen in a missing directory succeeded")
		}
	})
	t.Run("too long", func(t *testing.T) {
		path := "/tmp/" + strings.Repeat("x", 120)
		_, err := Listen(path)
		if err == nil || !strings.Contains(err.Error(), "too long") {
			t.Fatalf("Listen: %v", err)
		}
	})
}

func TestNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	err := Call(context.Background(), path, &Request{Op: OpStatus}, nil, nil)
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("err = %v, want ErrNoDaemon", err)
	}
	if want := "daemon not running: no control socket at " + path; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}

func TestSocketPath(t *testing.T) {
	t.Setenv(EnvSocket, "")
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", "/xdg")
	t.Setenv("HOME", "/home/u")
	want := "/xdg/vrouter/control.sock"
	if os.Geteuid() == 0 {
		want = "/var/lib/vrouter/control.sock"
	}
	if got, err := SocketPath(""); err != nil || got != want {
		t.Fatalf("default: %q, %v; want %q", got, err, want)
	}
	if os.Geteuid() != 0 {
		t.Setenv("XDG_STATE_HOME", "")
		t.Setenv("HOME", "")
		if got, err := SocketPath(""); err == nil || !strings.Contains(err.Error(), "--control") {
			t.Fatalf("no home: %q, %v; want an error naming --control", got, err)
		}
	}
	t.Setenv(EnvSocket, "/env/sock")
	if got, err := SocketPath(""); err != nil || got != "/env/sock" {
		t.Fatalf("env: %q, %v", got, err)
	}
	if got, err := SocketPath("/flag/sock"); err != nil || got != "/flag/sock" {
		t.Fatalf("flag: %q, %v", got, err)
	}
	// Relative values are taken from the working directory, cleaned.
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := SocketPath("n2/../n2/control.sock"); err != nil || got != filepath.Join(cwd, "n2", "control.sock") {
		t.Fatalf("relative flag: %q, %v", got, err)
	}
	t.Setenv(EnvSocket, "env.sock")
	if got, err := SocketPath(""); err != nil || got != filepath.Join(cwd, "env.sock") {
		t.Fatalf("relative env: %q, %v", got, err)
	}
}

// TestCloseWhileHandling closes the server while a handler blocks on its
// context: Close must cancel it, wait for it and return.
func TestCloseWhileHandling(t *testing.T) {
	leaktest.Check(t)
	s, err := Listen(filepath.Join(t.TempDir(), "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	var finished sync.WaitGroup
	finished.Add(1)
	served := make(chan error, 1)
	go func() {
		served <- s.Serve(func(ctx context.Context, req *Request, fd *os.File) (any, error) {
			defer finished.Done()
			close(entered)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	}()
	called := make(chan error, 1)
	go func() { called <- Call(context.Background(), s.Path(), &Request{Op: OpStatus}, nil, nil) }()
	<-entered
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	finished.Wait() // Close returned, so the handler must be done
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if err := <-called; err == nil {
		t.Fatal("Call succeeded although the server closed mid-request")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left: %v", err)
	}
}

func TestCloseBeforeServe(t *testing.T) {
	leaktest.Check(t)
	s, err := Listen(filepath.Join(t.TempDir(), "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(statusHandler); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
}

// TestStuckClient connects and never sends: the per-connection deadline
// must free the server goroutine.
func TestStuckClient(t *testing.T) {
	leaktest.Check(t)
	s, err := Listen(filepath.Join(t.TempDir(), "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	s.timeout = 100 * time.Millisecond
	served := make(chan error, 1)
	go func() { served <- s.Serve(statusHandler) }()
	defer func() {
		s.Close()
		<-served
	}()
	c, err := net.Dial("unixpacket", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The server gives up and closes: our read sees EOF, not our deadline.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, io.EOF) {
		t.Fatalf("read = %v, want EOF from the server giving up", err)
	}
}

func TestCallContextCancel(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := startServer(t, func(ctx context.Context, req *Request, fd *os.File) (any, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Call(ctx, s.Path(), &Request{Op: OpStatus}, nil, nil) }()
	<-entered // cancel while the daemon is working, not before the dial
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, statusHandler)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			var st Status
			if err := Call(context.Background(), s.Path(), &Request{Op: OpStatus}, nil, &st); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPeerAllowed(t *testing.T) {
	for _, tt := range []struct {
		uid, self uint32
		want      bool
	}{
		{0, 65534, true},     // root: the CNI plugin, an operator's attach
		{65534, 65534, true}, // the daemon's own user
		{1000, 65534, false}, // anybody else
		{1000, 0, false},     // a root daemon serves root only
		{0, 0, true},
	} {
		if got := peerAllowed(tt.uid, tt.self); got != tt.want {
			t.Errorf("peerAllowed(%d, %d) = %v, want %v", tt.uid, tt.self, got, tt.want)
		}
	}
}

// TestReleaseIdle: a quiet spell after requests that allocated a lot
// returns the heap to the OS once; quiet spells after cheap requests do
// not force a GC each.
func TestReleaseIdle(t *testing.T) {
	leaktest.Check(t)
	var releases atomic.Int32
	orig := freeOSMemory
	freeOSMemory = func() { releases.Add(1) }
	t.Cleanup(func() { freeOSMemory = orig })

	s, err := Listen(filepath.Join(t.TempDir(), "control.sock"))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s.ReleaseIdle = 20 * time.Millisecond
	var sink []byte
	h := func(ctx context.Context, req *Request, fd *os.File) (any, error) {
		if req.Op == OpContainers {
			sink = make([]byte, 2*releaseMinAlloc)
			sink[len(sink)-1] = 1
		}
		return nil, nil
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	ctx := context.Background()
	waitReleases := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for releases.Load() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := releases.Load(); got != want {
			t.Fatalf("%d releases, want %d", got, want)
		}
	}

	if err := Call(ctx, s.Path(), &Request{Op: OpContainers}, nil, nil); err != nil {
		t.Fatalf("containers: %v", err)
	}
	waitReleases(1)
	for range 3 {
		if err := Call(ctx, s.Path(), &Request{Op: OpStatus}, nil, nil); err != nil {
			t.Fatalf("status: %v", err)
		}
	}
	// Several quiet spells of 20 ms; none of them may release.
	time.Sleep(200 * time.Millisecond)
	if got := releases.Load(); got != 1 {
		t.Fatalf("%d releases after cheap requests, want still 1", got)
	}
	if err := Call(ctx, s.Path(), &Request{Op: OpContainers}, nil, nil); err != nil {
		t.Fatalf("containers: %v", err)
	}
	waitReleases(2)
	_ = sink

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
