package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxPathLen is the longest socket path that fits sun_path with its NUL.
const maxPathLen = len(unix.RawSockaddrUnix{}.Path) - 1

// Listen binds the control socket at path (the parent directory must exist)
// with mode 0600. If a live server answers there it fails with an error
// wrapping ErrInUse; a stale socket file left by a dead daemon is replaced.
func Listen(path string) (*Server, error) {
	if path == "" {
		return nil, errors.New("control socket path is empty")
	}
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("control socket path %s is too long (%d bytes, at most %d)", path, len(path), maxPathLen)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, st, err := bindListen(path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		path:    path,
		ln:      ln,
		ino:     st.Ino,
		dev:     st.Dev,
		timeout: DefaultTimeout,
		ctx:     ctx,
		cancel:  cancel,
		conns:   make(map[*net.UnixConn]struct{}),
	}, nil
}

// clearStale removes a socket file nobody answers on, and fails if a server
// answers or the path is something other than a socket.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("control socket %s: exists and is not a socket", path)
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.Dial("unixpacket", path)
	if err == nil {
		c.Close()
		return &msgError{msg: fmt.Sprintf("control socket %s: another daemon is answering on it", path), err: ErrInUse}
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: probe: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// bindListen creates the listening socket by hand so that the file can be
// chmod-ed to 0600 between bind and listen: nobody can connect before
// listen, so there is no window with the umask's looser mode, and the
// process-wide umask stays untouched.
func bindListen(path string) (*net.UnixListener, *unix.Stat_t, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socket %s: socket: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FileListener dups the descriptor
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, nil, &msgError{msg: fmt.Sprintf("control socket %s: already bound by another process", path), err: ErrInUse}
		}
		return nil, nil, fmt.Errorf("control socket %s: bind: %w", path, err)
	}
	var st unix.Stat_t
	err = unix.Chmod(path, 0o600)
	if err == nil {
		err = unix.Lstat(path, &st)
	}
	if err == nil {
		err = unix.Listen(fd, 64)
	}
	if err != nil {
		os.Remove(path)
		return nil, nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l.(*net.UnixListener), &st, nil
}
