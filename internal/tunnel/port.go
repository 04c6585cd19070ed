package tunnel

import (
	"errors"
	"fmt"
	"os"

	"github.com/vrouter/vrouter/router"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// OpenPort wraps the TUN behind f as a router.Port. It takes ownership of f
// (closed on success and on error alike; the port holds its own descriptor)
// and works unprivileged on a TUN living in another namespace.
//
// The returned value also implements tun.Device, with MTU and Name answered
// from a cache: NativeTun asks the caller's namespace for both, which fails
// for a TUN elsewhere (API-NOTES §2.2).
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
	// From here the NativeTun owns fd. Its constructor wraps fd in an
	// os.File before the steps that can fail, and that file's finalizer
	// closes fd if we get an error, so fd must not be closed here as well.
	dev, name, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		return nil, Info{}, fmt.Errorf("open port %s: %w", info.Name, err)
	}
	if name == "" {
		name = info.Name
	}
	return &port{Device: dev, name: name, mtu: mtu}, info, nil
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

// port is a wireguard-go NativeTun with a fixed MTU and name. Read, Write,
// BatchSize, File, Events and Close are NativeTun's: Close is idempotent and
// makes a blocked Read return os.ErrClosed; Events never delivers (the
// device is unmonitored) and is closed by Close.
type port struct {
	tun.Device
	name string
	mtu  int
}

var (
	_ router.Port = (*port)(nil)
	_ tun.Device  = (*port)(nil)
)

func (p *port) MTU() (int, error)     { return p.mtu, nil }
func (p *port) Name() (string, error) { return p.name, nil }
