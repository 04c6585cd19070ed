package harness

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// openTUNs opens count TUN devices called name, each in an unnamed network
// namespace of its own that lives exactly as long as the device. They
// stand for containers whose engine hands vrouter a TUN (attach --fd): one
// namespace each, because the daemon refuses a second TUN from a namespace
// it already serves. Flags and offloads are those `attach --netns` uses
// (IFF_VNET_HDR, TSO), so the daemon sets each port up as in production.
func openTUNs(name string, count int) ([]*os.File, error) {
	type result struct {
		files []*os.File
		err   error
	}
	ch := make(chan result, 1)
	// A dedicated goroutine on a locked thread: unshare moves the thread,
	// and it only goes back to the pool once setns has brought it home.
	// Should that fail, the goroutine exits locked and the runtime
	// destroys the thread rather than reuse it in a foreign namespace.
	go func() {
		runtime.LockOSThread()
		files, home, err := openTUNsLocked(name, count)
		if home {
			runtime.UnlockOSThread()
		}
		ch <- result{files, err}
	}()
	r := <-ch
	return r.files, r.err
}

// openTUNsLocked runs on a locked thread; home reports whether the thread
// is back in its own namespace.
func openTUNsLocked(name string, count int) (files []*os.File, home bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("own netns: %w", err)
	}
	defer self.Close()
	defer func() {
		if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); serr != nil {
			err = errors.Join(err, fmt.Errorf("setns back home: %w", serr))
			home = false
			return
		}
		home = true
	}()
	for range count {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return files, false, fmt.Errorf("unshare netns: %w", err)
		}
		f, err := openTUN(name)
		if err != nil {
			return files, false, err
		}
		files = append(files, f)
	}
	return files, false, nil
}

func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETOFFLOAD %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}

// closeFiles closes files concurrently: the kernel takes ~20 ms to
// unregister one TUN but overlaps parallel closes.
func closeFiles(files []*os.File) {
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Go(func() { f.Close() })
	}
	wg.Wait()
}
