package supervise

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Under systemd (NOTIFY_SOCKET set) there is no supervisor process:
// systemd's file descriptor store holds the ports. Each port's fd goes to
// it as FDSTORE=1 with FDNAME=<container id>; after a crash or a
// restart systemd passes them back (LISTEN_FDS, LISTEN_FDNAMES) and the
// port journal, kept by the daemon itself here, says how to rebuild each.
// The unit needs FileDescriptorStoreMax= above the node's port count.

// UnderSystemd reports whether this process was started by systemd with
// a notification socket.
func UnderSystemd() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// FDStore is a PortHolder backed by systemd's fd store.
type FDStore struct {
	dir string

	mu      sync.Mutex
	journal *Journal
}

// NewFDStore returns the fd store of a daemon whose state dir is dir,
// holding ports (those Reconcile restored).
func NewFDStore(dir string, ports []Port) *FDStore {
	// Reconcile has just written ports; a failed rewrite here is retried
	// by the first change, whose caller sees the error.
	j, _ := NewJournal(dir, ports)
	return &FDStore{dir: dir, journal: j}
}

// fdName checks that a container id is a valid FDNAME (sd_pid_notify:
// at most 255 printable characters, no colon).
func fdName(id string) error {
	if id == "" || len(id) > 255 || strings.ContainsAny(id, ":\n") {
		return fmt.Errorf("fd store: %q is no valid FDNAME", id)
	}
	for _, r := range id {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("fd store: %q is no valid FDNAME", id)
		}
	}
	return nil
}

// Hold stores a dup of f in systemd's fd store under the port's id, then
// journals the port.
func (s *FDStore) Hold(p Port, f *os.File) error {
	if err := fdName(p.ID); err != nil {
		return err
	}
	if err := notifyWithFD("FDSTORE=1\nFDNAME="+p.ID, f); err != nil {
		return err
	}
	s.mu.Lock()
	err := s.journal.Put(p)
	s.mu.Unlock()
	if err != nil {
		_ = notify("FDSTOREREMOVE=1\nFDNAME=" + p.ID)
		return err
	}
	return nil
}

// Release removes a detached port's fd from the store.
func (s *FDStore) Release(id string) error {
	s.mu.Lock()
	err := s.journal.Delete(id)
	s.mu.Unlock()
	return errors.Join(notify("FDSTOREREMOVE=1\nFDNAME="+id), err)
}

// Ready tells systemd the daemon is up (READY=1).
func Ready() error { return notify(sddaemon.SdNotifyReady) }

// Stopping tells systemd the daemon is shutting down (STOPPING=1).
func Stopping() error { return notify(sddaemon.SdNotifyStopping) }

func notify(state string) error {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// notifyWithFD sends state with f as SCM_RIGHTS to NOTIFY_SOCKET.
// go-systemd's SdNotify writes text only; FDSTORE=1 needs the fd in the
// same datagram, so this one message is sent by hand.
func notifyWithFD(state string, f *os.File) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return errors.New("fd store: NOTIFY_SOCKET is not set")
	}
	// A raw socket: net refuses WriteMsgUnix on a connected datagram
	// socket, and an unconnected one has no place for the address here.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fd store: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendmsg(fd, []byte(state), unix.UnixRights(int(f.Fd())), &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		return fmt.Errorf("fd store: %s: %w", firstLine(state), err)
	}
	return nil
}

// Reconcile matches the fds systemd passed back (named by container id)
// with the journal in dir. It returns the ports to restore; a journalled
// port without an fd is lost (reported in dropped), an fd without a
// journal entry (or a second one of a name) is closed and removed from
// the store (strays). The journal is rewritten to what is restored.
func Reconcile(dir string, files []*os.File) (restore []HeldPort, dropped []Port, strays []string, err error) {
	journal, err := ReadJournal(dir)
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, nil, err
	}
	byID := make(map[string]Port, len(journal))
	for _, p := range journal {
		byID[p.ID] = p
	}
	got := make(map[string]bool)
	for _, f := range files {
		id := f.Name()
		p, ok := byID[id]
		if !ok || got[id] {
			f.Close()
			strays = append(strays, id)
			if fdName(id) == nil {
				_ = notify("FDSTOREREMOVE=1\nFDNAME=" + id)
			}
			continue
		}
		got[id] = true
		restore = append(restore, HeldPort{Port: p, File: f})
	}
	var kept []Port
	for _, p := range journal {
		if got[p.ID] {
			kept = append(kept, p)
		} else {
			dropped = append(dropped, p)
		}
	}
	slices.SortFunc(strays, strings.Compare)
	return restore, dropped, strays, WriteJournal(dir, kept)
}
