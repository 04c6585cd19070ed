package tunnel

import (
	"errors"
	"fmt"
	"os"

	"github.com/vrouter/vrouter/router"
	"golang.org/x/sys/unix"
)

// OpenPort wraps the TUN behind f as a router.Port. It takes ownership of f
// (closed on success and on error alike; the port holds its own descriptor)
// and works unprivileged on a TUN living in another namespace.
//
// A TUN with IFF_VNET_HDR gives a router.OffloadPort (TSO on: super-packets
// travel whole between containers of the node), any other a plain Port;
// both are router.ReadWaiters, so an idle port holds no buffers.
func OpenPort(f *os.File, mtu int) (router.Port, Info, error) {
	if f == nil {
		return nil, Info{}, errors.New("open port: nil file")
	}
	defer f.Close()
	if mtu <= 0 || mtu > 65535 {
		return nil, Info{}, fmt.Errorf("open port: MTU %d out of range", mtu)
	}
	info, err := Inspect(f)
	if err != nil {
		return nil, Info{}, fmt.Errorf("open port: %w", err)
	}
	fd, err := dupNonblock(f)
	if err != nil {
		return nil, Info{}, fmt.Errorf("open port %s: %w", info.Name, err)
	}
	p, err := newTUNPort(fd, info, mtu)
	if err != nil {
		return nil, Info{}, fmt.Errorf("open port %s: %w", info.Name, err)
	}
	return p, info, nil
}

// dupNonblock duplicates f's descriptor (close-on-exec) and makes the file
// description non-blocking, as the Go poller needs. Duplicating, rather
// than taking f.Fd(), leaves f's own finaliser and blocking mode harmless.
func dupNonblock(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return -1, fmt.Errorf("set non-blocking: %w", err)
	}
	return nfd, nil
}
