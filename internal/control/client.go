package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/internal/paths"
)

// EnvSocket names the environment variable clients read the socket path from.
const EnvSocket = "VROUTER_CONTROL"

// maxResponse bounds what a client accepts, against a runaway peer.
const maxResponse = 64 << 20

// SocketPath resolves the client socket: flag value if non-empty, else
// $VROUTER_CONTROL, else the control socket of the default state
// directory of the client's user (paths.ControlSocket). The result is
// absolute: a relative flag or variable is taken from the working
// directory once, here, so that errors and output name the socket that
// was used.
func SocketPath(flag string) (string, error) {
	if flag != "" {
		return absSocket("--control", flag)
	}
	if env := os.Getenv(EnvSocket); env != "" {
		return absSocket("$"+EnvSocket, env)
	}
	p, err := paths.ControlSocket(os.Getenv, os.Geteuid())
	if err != nil {
		return "", fmt.Errorf("control socket: %w; give --control or $%s", err, EnvSocket)
	}
	return p, nil
}

func absSocket(from, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", from, p, err)
	}
	return abs, nil
}

// Call sends req (with fd as SCM_RIGHTS when non-nil; the caller keeps its
// own fd) and decodes the daemon's result into result when result is
// non-nil. A zero req.Version is sent as Version. Errors: ErrNoDaemon
// (wrapped) when nothing listens at path, *Error when the daemon refused.
// The call is bounded by ctx and by DefaultTimeout. Before it connects,
// CheckSocket must trust path (errors matching ErrUntrusted otherwise).
func Call(ctx context.Context, path string, req *Request, fd *os.File, result any) error {
	if req == nil {
		return errors.New("control: nil request")
	}
	if err := CheckSocket(path, os.Geteuid()); err != nil {
		return err
	}
	r := *req
	if r.Version == 0 {
		r.Version = Version
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("request of %d bytes exceeds %d", len(b), MaxMessage)
	}
	if len(path) > maxPathLen {
		return fmt.Errorf("control socket path %s is too long (%d bytes, at most %d)", path, len(path), maxPathLen)
	}

	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return dialError(path, err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Cancellation (not only the deadline) must unblock the I/O below.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if err := send(c, b, fd); err != nil {
		return ctxErr(ctx, fmt.Errorf("send request to %s: %w", path, err))
	}
	raw, err := readAll(c)
	if err != nil {
		return ctxErr(ctx, fmt.Errorf("read response from %s: %w", path, err))
	}
	if len(raw) == 0 {
		return fmt.Errorf("daemon at %s closed the connection without answering", path)
	}
	var resp Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("malformed response from %s: %w", path, err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if resp.Version != Version {
		return fmt.Errorf("daemon at %s speaks protocol version %d, this client %d", path, resp.Version, Version)
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("malformed %s result from %s: %w", r.Op, path, err)
		}
	}
	return nil
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return &msgError{msg: "daemon not running: no control socket at " + path, err: ErrNoDaemon}
	case errors.Is(err, unix.ECONNREFUSED):
		return &msgError{msg: "no daemon answering at " + path, err: ErrNoDaemon}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("connect to daemon at %s: permission denied (the socket belongs to the daemon's user)", path)
	}
	return fmt.Errorf("connect to daemon at %s: %w", path, err)
}

func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", err, cerr)
	}
	return err
}

// send writes the request packet, with fd attached as SCM_RIGHTS. The raw
// descriptor is used inside Control so that neither its blocking mode
// changes (as f.Fd() would do) nor can it be closed under us.
func send(c *net.UnixConn, b []byte, f *os.File) error {
	if f == nil {
		_, err := c.Write(b)
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("file descriptor to pass: %w", err)
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = c.WriteMsgUnix(b, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return fmt.Errorf("file descriptor to pass: %w", err)
	}
	return werr
}

// readAll concatenates the response packets up to end of file.
func readAll(c *net.UnixConn) ([]byte, error) {
	var out bytes.Buffer
	buf := make([]byte, MaxMessage)
	for {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if out.Len() > maxResponse {
			return nil, fmt.Errorf("response exceeds %d bytes", maxResponse)
		}
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}
