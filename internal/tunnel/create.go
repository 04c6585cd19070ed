package tunnel

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	tunFlags = unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	// Offloads as wireguard-go's tun.CreateTUN sets them: TCP segmentation
	// is required for vnet_hdr, UDP segmentation (Linux ≥ 6.2) optional.
	tcpOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	udpOffloads = unix.TUN_F_USO4 | unix.TUN_F_USO6
)

// CreateInNetns opens a new non-persistent TUN named name inside the network
// namespace at nsPath and returns its descriptor (close-on-exec,
// non-blocking). The device vanishes when the last copy of the descriptor is
// closed. Needs CAP_SYS_ADMIN (setns) and CAP_NET_ADMIN in the namespace.
//
// A missing nsPath gives an error wrapping fs.ErrNotExist; an interface of
// that name already in the namespace is an error, never a re-attach.
func CreateInNetns(nsPath, name string) (*os.File, error) {
	if err := checkIfName(name); err != nil {
		return nil, err
	}
	ns, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()

	type result struct {
		f   *os.File
		err error
	}
	create := func(ch chan<- result) {
		f, err := createOnThread(int(ns.Fd()), nsPath, name)
		ch <- result{f, err}
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is locked and never unlocked: when this goroutine
		// returns, the runtime destroys the thread instead of handing a
		// thread in a foreign namespace to other goroutines.
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			create(ch)
			return
		}
		// Except the main thread, which cannot exit: the runtime wedges it
		// instead, and it would then pin the namespace for the life of the
		// process and make /proc/self/ns/net name it. Keep the main thread
		// busy here so the worker gets another one, then release it
		// untouched.
		inner := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			create(inner)
		}()
		r := <-inner
		runtime.UnlockOSThread()
		ch <- r
	}()
	r := <-ch
	return r.f, r.err
}

// createOnThread runs on a locked thread that it moves into the namespace:
// the kernel puts a TUN in the namespace of the thread that opens
// /dev/net/tun.
func createOnThread(nsfd int, nsPath, name string) (*os.File, error) {
	if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("enter network namespace %s: %w%s", nsPath, err, privHint(err, "CAP_SYS_ADMIN"))
	}
	if err := ifaceAbsent(name); err != nil {
		return nil, fmt.Errorf("create TUN %s in %s: %w", name, nsPath, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s in %s: open /dev/net/tun: %w", name, nsPath, err)
	}
	if err := setupTUN(fd, name); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN %s in %s: %w", name, nsPath, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

func setupTUN(fd int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("interface name: %w", err)
	}
	ifr.SetUint16(tunFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("interface %q already exists in the namespace: %w", name, err)
		}
		return fmt.Errorf("TUNSETIFF: %w%s", err, privHint(err, "CAP_NET_ADMIN"))
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcpOffloads); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	// USO is optional (kernel ≥ 6.2); without it the TCP set stays.
	_ = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcpOffloads|udpOffloads)
	// Non-blocking before os.NewFile so the Go poller manages the fd
	// (golang/go#30426).
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("set non-blocking: %w", err)
	}
	return nil
}

// ifaceAbsent fails if an interface called name exists in the calling
// thread's namespace. Without it TUNSETIFF would silently attach to an idle
// persistent TUN of that name.
func ifaceAbsent(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("check interface %q: %w", name, err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("interface name: %w", err)
	}
	err = unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr)
	switch {
	case err == nil:
		return fmt.Errorf("interface %q already exists in the namespace", name)
	case errors.Is(err, unix.ENODEV):
		return nil
	}
	return fmt.Errorf("check interface %q: %w", name, err)
}

// checkIfName enforces the kernel's rules for interface names (dev_valid_name).
func checkIfName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	case strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return fmt.Errorf("invalid interface name %q (contains '/', ':' or white space)", name)
	}
	return nil
}

func privHint(err error, capName string) string {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return " (needs root or " + capName + ")"
	}
	return ""
}
