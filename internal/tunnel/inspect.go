package tunnel

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotTUN is wrapped by errors about descriptors that are not a usable
// TUN (not a TUN at all, a TAP, or a TUN with packet information).
var ErrNotTUN = errors.New("not a TUN device")

// Info describes an attached TUN descriptor.
type Info struct {
	Name    string // interface name (in the TUN's own namespace)
	Flags   uint16 // IFF_* flags from TUNGETIFF
	VnetHdr bool   // IFF_VNET_HDR: reads and writes carry a virtio-net header
}

// Inspect reads the TUN flags of f with TUNGETIFF. It fails with ErrNotTUN
// (wrapped) for anything but an attached IFF_TUN|IFF_NO_PI device. It works
// unprivileged and across namespaces.
func Inspect(f *os.File) (Info, error) {
	if f == nil {
		return Info{}, fmt.Errorf("inspect: nil file: %w", ErrNotTUN)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w: %w", f.Name(), ErrNotTUN, err)
	}
	var ifr *unix.Ifreq
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ifr, ierr = getIFF(int(fd))
	}); err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w: %w", f.Name(), ErrNotTUN, err)
	}
	if ierr != nil {
		// ENOTTY: not a TUN; EBADFD: /dev/net/tun opened but never attached.
		return Info{}, fmt.Errorf("inspect %s: %w (TUNGETIFF: %w)", f.Name(), ErrNotTUN, ierr)
	}
	flags := ifr.Uint16()
	info := Info{Name: ifr.Name(), Flags: flags, VnetHdr: flags&unix.IFF_VNET_HDR != 0}
	switch {
	case flags&unix.IFF_TUN == 0:
		return info, fmt.Errorf("inspect %s: %w (a TAP device)", info.Name, ErrNotTUN)
	case flags&unix.IFF_NO_PI == 0:
		return info, fmt.Errorf("inspect %s: %w (packet information header enabled, IFF_NO_PI missing)", info.Name, ErrNotTUN)
	}
	return info, nil
}

func getIFF(fd int) (*unix.Ifreq, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, err
	}
	return ifr, nil
}
