package tunnel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// A network namespace owned by another user namespace (a rootless
// engine's container) is entered by joining that user namespace first, as
// slirp4netns and pasta do: its owner has every capability in it, and so
// may create and configure a TUN there without any privilege outside.
// The kernel refuses setns(CLONE_NEWUSER) to a multi-threaded process,
// and every Go process is one, so the work runs in a helper: util-linux's
// nsenter joins the user and network namespaces, then executes our own
// binary's hidden helper command, which does one step inside and, for
// "create", passes the TUN descriptor back over an inherited socketpair.

// HelperCommand is the hidden subcommand of the vrouter binary that runs
// RunHelper.
const HelperCommand = "__netns-helper"

// helperFD is the descriptor the helper finds the socketpair on.
const helperFD = 3

// InUserNS reaches a network namespace through the user namespace that
// owns it. Exe is the vrouter binary (it must serve HelperCommand).
type InUserNS struct {
	UserNS string // e.g. /proc/PID/ns/user
	Netns  string // e.g. /proc/PID/ns/net
	Exe    string
}

// helperRequest is what the helper is asked to do, on its command line.
type helperRequest struct {
	Op   string      `json:"op"` // create, configure, remove
	Name string      `json:"name"`
	Cfg  IfaceConfig `json:"cfg"`
}

// Create checks the namespace as Preflight(cfg) does, then creates a TUN
// called name in it and returns its descriptor.
func (u InUserNS) Create(name string, cfg IfaceConfig) (*os.File, error) {
	if err := checkIfName(name); err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s in %s: socketpair: %w", name, u.Netns, err)
	}
	ours := os.NewFile(uintptr(fds[0]), "helper socket")
	theirs := os.NewFile(uintptr(fds[1]), "helper socket")
	defer ours.Close()
	err = u.run(helperRequest{Op: "create", Name: name, Cfg: cfg}, theirs)
	theirs.Close()
	if err != nil {
		return nil, err
	}
	// The helper has exited: its message, if any, is queued on our end.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		return nil, fmt.Errorf("create TUN %s in %s: %w", name, u.Netns, err)
	}
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(fds[0], buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s in %s: no descriptor from the helper: %w", name, u.Netns, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("create TUN %s in %s: malformed message from the helper", name, u.Netns)
	}
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != 1 {
		for _, fd := range got {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("create TUN %s in %s: malformed descriptor from the helper", name, u.Netns)
	}
	if err := unix.SetNonblock(got[0], true); err != nil {
		unix.Close(got[0])
		return nil, fmt.Errorf("create TUN %s in %s: %w", name, u.Netns, err)
	}
	return os.NewFile(uintptr(got[0]), "/dev/net/tun:"+name), nil
}

// Configure is Configure inside the namespace.
func (u InUserNS) Configure(name string, cfg IfaceConfig) error {
	return u.run(helperRequest{Op: "configure", Name: name, Cfg: cfg}, nil)
}

// Remove is Remove inside the namespace.
func (u InUserNS) Remove(name string) error {
	err := u.run(helperRequest{Op: "remove", Name: name}, nil)
	if err != nil && strings.Contains(err.Error(), ErrNoInterface.Error()) {
		return fmt.Errorf("remove %s from %s: %w", name, u.Netns, ErrNoInterface)
	}
	return err
}

func (u InUserNS) run(req helperRequest, sock *os.File) error {
	for _, p := range []string{u.UserNS, u.Netns} {
		if _, err := os.Stat(p); err != nil {
			return nsPathError(p, err)
		}
	}
	arg, err := json.Marshal(req)
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "--user="+u.UserNS, "--net="+u.Netns, "--preserve-credentials", "--", u.Exe, HelperCommand, string(arg))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if sock != nil {
		cmd.ExtraFiles = []*os.File{sock} // becomes helperFD
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		msg = strings.TrimPrefix(msg, "vrouter: ")
		if errors.Is(err, exec.ErrNotFound) {
			msg = "nsenter (util-linux) is needed to enter another user's namespaces: " + err.Error()
		}
		return fmt.Errorf("in user namespace %s: %s", u.UserNS, msg)
	}
	return nil
}

// RunHelper is the body of HelperCommand, run by nsenter inside the user
// and network namespaces with the request as its only argument.
func RunHelper(args []string) error {
	if len(args) != 1 {
		return errors.New("helper: want one argument")
	}
	var req helperRequest
	if err := json.Unmarshal([]byte(args[0]), &req); err != nil {
		return fmt.Errorf("helper: %w", err)
	}
	const here = "/proc/self/ns/net"
	switch req.Op {
	case "create":
		if err := Preflight(here, req.Cfg); err != nil {
			return err
		}
		return createAndSend(req.Name)
	case "configure":
		return Configure(here, req.Name, req.Cfg)
	case "remove":
		return Remove(here, req.Name)
	}
	return fmt.Errorf("helper: unknown op %q", req.Op)
}

// createAndSend opens the TUN in the process's own namespace (every
// thread of the helper is in it) and sends it on helperFD.
func createAndSend(name string) error {
	if err := ifaceAbsent(name); err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		hint := ""
		if errors.Is(err, unix.EACCES) {
			hint = " (unprivileged users need /dev/net/tun mode 0666, as udev sets it)"
		}
		return fmt.Errorf("create TUN %s: open /dev/net/tun: %w%s", name, err, hint)
	}
	defer unix.Close(fd)
	if err := setupTUN(fd, name); err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	if err := unix.Sendmsg(helperFD, []byte("tun"), unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("create TUN %s: pass it back: %w", name, err)
	}
	return nil
}

// ForeignUserNS tells whether the network namespace at nsPath belongs to a
// user namespace other than the caller's (a rootless engine's container),
// where entering it takes InUserNS.
func ForeignUserNS(nsPath string) (bool, error) {
	f, err := openNetns(nsPath)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		// EPERM: the owner is outside our view, so certainly not ours.
		return errors.Is(err, unix.EPERM), nil
	}
	defer unix.Close(fd)
	var owner, self unix.Stat_t
	if err := unix.Fstat(fd, &owner); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/user", &self); err != nil {
		return false, err
	}
	return owner.Ino != self.Ino || owner.Dev != self.Dev, nil
}
