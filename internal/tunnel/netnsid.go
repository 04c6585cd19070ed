package tunnel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// NetnsID identifies the network namespace file at path (a bind mount under
// /run/netns or /proc/PID/ns/net) as "netns:<dev>:<ino>". Two paths naming
// the same namespace give the same id.
func NetnsID(path string) (string, error) {
	f, err := openNetns(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", nsPathError(path, err)
	}
	return nsID(&st), nil
}

// openNetns opens path and checks that it is a network namespace, so that a
// wrong path is reported as such rather than as a setns EINVAL.
func openNetns(path string) (*os.File, error) {
	if path == "" {
		return nil, errors.New("network namespace path is empty")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nsPathError(path, err)
	}
	if err := checkNetns(int(f.Fd()), path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkNetns(fd int, path string) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return nsPathError(path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%s is not a network namespace (not an nsfs file)", path)
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("network namespace %s: NS_GET_NSTYPE: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("%s is not a network namespace (another namespace type)", path)
	}
	return nil
}

// DevNetnsID returns the id (as NetnsID) of the namespace the TUN behind f
// lives in, via TUNGETDEVNETNS. The kernel requires CAP_NET_ADMIN over that
// namespace; the error says so otherwise.
func DevNetnsID(f *os.File) (string, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return "", fmt.Errorf("netns of TUN: %w", err)
	}
	var nsfd int
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		nsfd, ierr = unix.IoctlRetInt(int(fd), unix.TUNGETDEVNETNS)
	}); err != nil {
		return "", fmt.Errorf("netns of TUN: %w", err)
	}
	switch {
	case errors.Is(ierr, unix.EPERM):
		return "", fmt.Errorf("netns of TUN: %w (needs CAP_NET_ADMIN in the TUN's namespace)", ierr)
	case ierr != nil:
		return "", fmt.Errorf("netns of TUN: %w: %w", ErrNotTUN, ierr)
	}
	defer unix.Close(nsfd)
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		return "", fmt.Errorf("netns of TUN: %w", err)
	}
	return nsID(&st), nil
}

func nsID(st *unix.Stat_t) string {
	return fmt.Sprintf("netns:%d:%d", st.Dev, st.Ino)
}

// nsPathError gives a missing namespace a clear message that still matches
// fs.ErrNotExist.
func nsPathError(path string, err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("network namespace %s: %w", path, fs.ErrNotExist)
	}
	return fmt.Errorf("network namespace %s: %w", path, err)
}
