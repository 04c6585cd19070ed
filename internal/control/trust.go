package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUntrusted means a client refused the control socket before sending
// anything: CheckSocket found it is not one the daemon made for itself.
var ErrUntrusted = errors.New("untrusted control socket")

// CheckSocket refuses a control socket the client cannot trust before it
// sends anything (a TUN fd, for attach) to whoever listens there. Call
// runs it first, so no client (the CLI, the CNI plugin) can skip it. The
// daemon checks its clients (SO_PEERCRED); this is the other direction:
//
//   - the path must be a socket (not a symlink to one);
//   - its directory must not be writable by group or others: whoever can
//     write there can put their own socket in the daemon's place;
//   - the socket must belong to the directory's owner: the daemon makes
//     it in a directory of its own user;
//   - for a client other than root, that owner must be the client itself
//     or root: another user's socket is another user's daemon.
//
// A root client (attach, the CNI plugin's operator) serves daemons of any
// user, so the directory's owner is the expected user. A missing socket is
// left to the dial, which says the daemon is not running. Refusals match
// ErrUntrusted.
func CheckSocket(path string, euid int) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return untrusted("control socket %s is not a socket (%s)", path, fi.Mode().Type())
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("control socket %s: its directory: %w", path, err)
	}
	if perm := di.Mode().Perm(); perm&0o022 != 0 {
		return untrusted("control socket %s: its directory %s has mode %04o: others may write to it and plant a socket there (chmod 700 or 755, or use another --control)", path, dir, perm)
	}
	sockUID, dirUID := ownerOf(fi), ownerOf(di)
	if sockUID != dirUID {
		return untrusted("control socket %s is owned by uid %d, its directory %s by uid %d: not the daemon's own socket", path, sockUID, dir, dirUID)
	}
	if euid != 0 && sockUID != uint32(euid) && sockUID != 0 {
		return untrusted("control socket %s is owned by uid %d, not by you (uid %d) or root: another user's daemon", path, sockUID, euid)
	}
	return nil
}

func untrusted(format string, a ...any) error {
	return &msgError{msg: fmt.Sprintf(format, a...), err: ErrUntrusted}
}

// ownerOf is the uid owning fi's file.
func ownerOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0) // never a real owner: refused by the comparisons
}
