package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds one connection, from accept to the last byte of the
// response, on both sides.
const DefaultTimeout = 30 * time.Second

// maxFDs is how many descriptors a request may try to send before the excess
// is truncated by the kernel (and closed by it); we close the rest ourselves.
const maxFDs = 16

// Handler serves one request. It owns fd (nil when the request carried none)
// and must close it or keep it. A returned *Error reaches the client with its
// code; any other error is reported with code "internal". result is
// marshalled with encoding/json (nil → no result).
//
// ctx is cancelled when the server closes or the connection deadline passes.
type Handler func(ctx context.Context, req *Request, fd *os.File) (result any, err error)

// Server serves the control socket. Goroutines: Serve's accept loop (owned by
// the caller of Serve) and one goroutine per connection (owned by the
// Server, waited for by Close).
type Server struct {
	// Logger receives connection-level problems. Set it before Serve; nil
	// discards.
	Logger *slog.Logger

	// ReleaseIdle, when positive, returns the Go heap's free memory to the
	// OS (debug.FreeOSMemory) once no request has been served for that
	// long and the requests since the last release allocated at least
	// releaseMinAlloc. Set it before Serve. Why: an attach burst leaves
	// megabytes of garbage, and the worker's heap goal, raised by
	// wireguard-go's large but mostly untouched message pools, lets the
	// GC and the scavenger keep it resident for good; the RSS of an idle
	// daemon then grows with every attach it ever served.
	ReleaseIdle time.Duration

	path    string
	ln      *net.UnixListener
	ino     uint64 // inode of the socket file we bound, so Close removes only ours
	dev     uint64
	timeout time.Duration

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	serving bool
	conns   map[*net.UnixConn]struct{}
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	releaseTimer *time.Timer // under mu; nil until the first request
	releaseMu    sync.Mutex  // serialises the timer's callbacks (a Reset may start one while another runs)
	releasedAt   uint64      // heap bytes allocated in all at the last release; under releaseMu
}

// DefaultReleaseIdle is the daemon's ReleaseIdle: longer than the gaps
// within a burst of attaches (a few ms each), short enough that a burst's
// garbage does not linger.
const DefaultReleaseIdle = 250 * time.Millisecond

// releaseMinAlloc: quieter spells than this (a status poll allocates a few
// KiB) are not worth a forced GC.
const releaseMinAlloc = 4 << 20

// freeOSMemory is debug.FreeOSMemory; tests count the calls.
var freeOSMemory = debug.FreeOSMemory

// Path is the socket path the server listens on.
func (s *Server) Path() string { return s.path }

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve accepts connections until Close and serves each with h on its own
// goroutine. It returns nil after Close, or the accept error otherwise.
func (s *Server) Serve(h Handler) error {
	if h == nil {
		return errors.New("control: nil handler")
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("control: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ECONNABORTED) {
				// Transient: back off briefly instead of spinning or dying.
				s.logger().Warn("control: accept", "err", err)
				select {
				case <-s.ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			return fmt.Errorf("control: accept on %s: %w", s.path, err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c, h)
	}
}

// Close stops accepting, cancels the context of running handlers, waits for
// them and removes the socket file. It must not be called from a handler.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		// Unblock connections still reading a request or writing a response.
		for c := range s.conns {
			c.SetDeadline(time.Now())
		}
		if s.releaseTimer != nil {
			s.releaseTimer.Stop()
		}
		s.mu.Unlock()
		s.cancel()
		s.closeErr = s.ln.Close()
		s.wg.Wait()
		if err := s.removeSocket(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// removeSocket unlinks the socket file unless someone replaced it.
func (s *Server) removeSocket() error {
	var st unix.Stat_t
	if err := unix.Lstat(s.path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("control: stat %s: %w", s.path, err)
	}
	if st.Ino != s.ino || st.Dev != s.dev {
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control: remove %s: %w", s.path, err)
	}
	return nil
}

func (s *Server) serveConn(c *net.UnixConn, h Handler) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.armReleaseLocked()
		s.mu.Unlock()
		c.Close()
	}()
	deadline := time.Now().Add(s.timeout)
	s.mu.Lock()
	if !s.closed { // Close may have set an earlier deadline already
		c.SetDeadline(deadline)
	}
	s.mu.Unlock()

	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()

	var resp *Response
	ok := true
	if uid, err := peerUID(c); err != nil || !peerAllowed(uid, uint32(os.Geteuid())) {
		// The socket is 0600, so only a chmod or a root-made path lets
		// another user this far: refuse before reading anything.
		var e *Error
		if err != nil {
			e = Errorf(CodeForbidden, "peer credentials: %v", err)
		} else {
			e = Errorf(CodeForbidden, "uid %d may not use this control socket: it serves root and uid %d only", uid, os.Geteuid())
		}
		s.logger().Warn("control: connection refused", "err", e)
		resp = &Response{Version: Version, Error: e}
		// Take the request off the socket (fds in it are closed by the
		// kernel): closing with it unread would reset the connection and
		// the client would see that instead of the answer.
		c.Read(make([]byte, MaxMessage))
	} else {
		resp, ok = s.handle(ctx, c, h)
	}
	if !ok {
		return
	}
	b, err := json.Marshal(resp)
	if err != nil {
		b, _ = json.Marshal(&Response{Version: Version, Error: Errorf(CodeInternal, "encode response: %v", err)})
	}
	for len(b) > 0 {
		n := min(len(b), MaxMessage)
		if _, err := c.Write(b[:n]); err != nil {
			s.logger().Warn("control: write response", "err", err)
			return
		}
		b = b[n:]
	}
}

// armReleaseLocked (re)starts the quiet-spell timer of ReleaseIdle.
func (s *Server) armReleaseLocked() {
	switch {
	case s.ReleaseIdle <= 0 || s.closed:
	case s.releaseTimer == nil:
		s.releaseTimer = time.AfterFunc(s.ReleaseIdle, s.releaseIdle)
	default:
		s.releaseTimer.Reset(s.ReleaseIdle)
	}
}

// releaseIdle runs on the timer's goroutine, counted in wg so that Close
// waits for a release under way.
func (s *Server) releaseIdle() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	total := sample[0].Value.Uint64()
	since := total - s.releasedAt
	if since < releaseMinAlloc {
		return
	}
	start := time.Now()
	freeOSMemory()
	s.releasedAt = total
	s.logger().Debug("control: idle, heap returned to the OS", "allocated_since_last", since, "took", time.Since(start))
}

// peerUID is the user of the process at the other end of c (SO_PEERCRED:
// its credentials when it connected).
func peerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// peerAllowed: root (the CNI plugin, an operator's attach) and the
// daemon's own user (its CLI) may use the control socket.
func peerAllowed(uid, self uint32) bool { return uid == 0 || uid == self }

// reqBuf is where handle reads a request. It is pooled: a fresh 64 KiB
// buffer per connection was most of the garbage an attach left in the
// worker (scenario 8), and with the heap goal set by wireguard-go's large,
// mostly untouched message pools the GC rarely ran, so that garbage stayed
// resident as RSS that grew with every attach.
type reqBuf struct {
	msg [MaxMessage]byte
	oob []byte
}

var reqBufs = sync.Pool{New: func() any { return &reqBuf{oob: make([]byte, unix.CmsgSpace(4*maxFDs))} }}

// handle reads and serves one request. ok is false when there is nothing to
// answer (the peer connected and left, as Listen's liveness probe does).
func (s *Server) handle(ctx context.Context, c *net.UnixConn, h Handler) (resp *Response, ok bool) {
	rb := reqBufs.Get().(*reqBuf)
	held := true
	release := func() {
		if held {
			held = false
			reqBufs.Put(rb)
		}
	}
	defer release()
	buf, oob := rb.msg[:], rb.oob
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	fds, fdErr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, f := range fds {
			f.Close()
		}
	}
	fail := func(e *Error) (*Response, bool) {
		closeAll()
		return &Response{Version: Version, Error: e}, true
	}
	if err != nil {
		closeAll()
		if !errors.Is(err, io.EOF) {
			s.logger().Debug("control: read request", "err", err)
		}
		return nil, false
	}
	if n == 0 && oobn == 0 {
		return nil, false
	}
	switch {
	case fdErr != nil:
		return fail(Errorf(CodeBadRequest, "bad ancillary data: %v", fdErr))
	case flags&unix.MSG_TRUNC != 0:
		return fail(Errorf(CodeBadRequest, "request exceeds %d bytes", MaxMessage))
	case flags&unix.MSG_CTRUNC != 0 || len(fds) > 1:
		return fail(Errorf(CodeBadRequest, "request carries more than one file descriptor"))
	}
	req, err := DecodeRequest(buf[:n])
	// The request is decoded into copies: the buffer can serve the next
	// connection while this handler runs.
	release()
	if err != nil {
		return fail(asError(err))
	}
	var fd *os.File
	if len(fds) == 1 {
		if !takesFD(req.Op) {
			return fail(Errorf(CodeBadRequest, "op %q takes no file descriptor", req.Op))
		}
		fd = fds[0]
	}
	result, err := s.call(ctx, h, req, fd)
	if err != nil {
		return &Response{Version: Version, Error: asError(err)}, true
	}
	resp = &Response{Version: Version}
	if result != nil {
		raw, err := json.Marshal(result)
		if err != nil {
			return &Response{Version: Version, Error: Errorf(CodeInternal, "encode result: %v", err)}, true
		}
		resp.Result = raw
	}
	return resp, true
}

// call runs the handler, turning a panic into an internal error so that one
// bad request does not take the daemon (and every container's port) down.
func (s *Server) call(ctx context.Context, h Handler, req *Request, fd *os.File) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("control: handler panic", "op", req.Op, "panic", p, "stack", string(debug.Stack()))
			result, err = nil, Errorf(CodeInternal, "internal error serving %q", req.Op)
		}
	}()
	return h(ctx, req, fd)
}

func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		// Keep the handler's wrapping context in the message, the code from
		// the innermost *Error.
		return &Error{Code: e.Code, Message: err.Error()}
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

// parseRights returns every descriptor received in oob as an *os.File so
// that each can be closed on any path.
func parseRights(oob []byte) ([]*os.File, error) {
	fds, err := parseRightsFDs(oob)
	var files []*os.File
	for _, fd := range fds {
		files = append(files, os.NewFile(uintptr(fd), "control-fd"))
	}
	return files, err
}

// parseRightsFDs is parseRights on the bytes alone: the descriptor numbers
// of every SCM_RIGHTS message in oob, and the first error met (the
// descriptors found are returned with it, so that they get closed).
func parseRightsFDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var out []int
	var firstErr error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		if len(msgs[i].Data)%4 != 0 {
			// unix.ParseUnixRights indexes past its slice on such a
			// length (found by FuzzParseRights); the kernel never sends
			// one, so it is malformed.
			if firstErr == nil {
				firstErr = fmt.Errorf("SCM_RIGHTS of %d bytes: not whole descriptors", len(msgs[i].Data))
			}
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		out = append(out, fds...)
	}
	return out, firstErr
}
