package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/tunnel"
	"github.com/vrouter/vrouter/router"
)

// requestTimeout bounds one control request; attach does little work in the
// daemon, so anything slower means the daemon is stuck.
const requestTimeout = 30 * time.Second

func cmdAttach(args []string, stdout io.Writer) error {
	fl := newFlags("attach", "attach (--netns PATH | --fd N) --network PN --app APP --type T [flags]", stdout)
	netnsPath := fl.String("netns", "", "network namespace to create the TUN device in (e.g. /run/netns/c1)")
	fdNum := fl.Int("fd", -1, "attach an already open TUN file descriptor instead of creating one")
	req := control.AttachRequest{}
	fl.StringVar(&req.Network, "network", "", "private network id (pn-<uuid>)")
	fl.StringVar(&req.App, "app", "", "application id (ap-<uuid>)")
	fl.StringVar(&req.Type, "type", "", "container type ([a-z][a-z0-9-]*)")
	fl.IntVar(&req.Number, "number", 0, "container number (default: lowest free for the app and type)")
	fl.StringVar(&req.IP, "ip", "", "address to use (default: lowest free in 10.240.0.0/22)")
	ifname := fl.String("ifname", "vr0", "name of the TUN device created with --netns")
	usernsPath := fl.String("userns", "", "with --netns: the user namespace that owns it (e.g. /proc/PID/ns/user of a rootless engine's container), joined before creating the TUN, so that its owner needs no privilege")
	modeName := fl.String("mode", string(tunnel.ModeFull), "with --netns: full (the default route through vrouter) or pn-only (only 10.240.0.0/22 and the resolver, beside the namespace's own default route)")
	writeResolv := fl.Bool("write-resolv-conf", false, "with --netns /run/netns/NAME: point the namespace's resolv.conf (/etc/netns/NAME/resolv.conf, used by ip netns exec) at the private resolver")
	asJSON := fl.Bool("json", false, "print the container as a JSON object")
	sock := fl.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return usagef("attach takes no arguments, got %q", fl.Args())
	}
	switch {
	case *netnsPath == "" && *fdNum < 0:
		return usagef("attach needs --netns PATH or --fd N")
	case *netnsPath != "" && *fdNum >= 0:
		return usagef("--netns and --fd exclude each other")
	}
	for _, f := range []struct{ name, val string }{{"network", req.Network}, {"app", req.App}, {"type", req.Type}} {
		if f.val == "" {
			return usagef("--%s is required", f.name)
		}
	}
	if _, err := req.Validate(); err != nil {
		return usageError{err.Error()}
	}
	mode, err := tunnel.ParseMode(*modeName)
	if err != nil {
		return usagef("--mode: %v", err)
	}
	if *netnsPath == "" {
		if fl.Changed("mode") {
			return usagef("--mode needs --netns (with --fd the engine configures the interface)")
		}
		if *usernsPath != "" {
			return usagef("--userns needs --netns")
		}
	}
	var resolvPath string
	if *writeResolv {
		if *netnsPath == "" {
			return usagef("--write-resolv-conf needs --netns")
		}
		p, err := netnsResolvConf(*netnsPath)
		if err != nil {
			return usageError{err.Error()}
		}
		resolvPath = p
	}
	if *netnsPath != "" {
		if len(*ifname) == 0 || len(*ifname) > 15 || strings.ContainsAny(*ifname, "/ \t") {
			return usagef("--ifname %q: want 1-15 characters without '/' or spaces", *ifname)
		}
	}
	path, err := control.SocketPath(*sock)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("daemon not running: no control socket at %s", path)
	}

	var c control.Container
	if *netnsPath != "" {
		var ns nsOps = directNS(*netnsPath)
		if *usernsPath != "" {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("--userns: find the vrouter binary for the helper: %w", err)
			}
			ns = tunnel.InUserNS{UserNS: *usernsPath, Netns: *netnsPath, Exe: exe}
		}
		c, err = attachNetns(path, ns, *netnsPath, *ifname, resolvPath, mode, req)
	} else {
		c, err = attachFD(path, *fdNum, req)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, c)
	}
	printContainer(stdout, c)
	return nil
}

// attachNetns creates the TUN in the namespace, hands it to the daemon and
// then configures it. Until the daemon has it, the TUN lives only as our fd,
// so any failure (ours or the daemon's, even a crash) removes it; after the
// hand-over a configuration failure is undone by detaching.
func attachNetns(sock string, ns nsOps, nsPath, ifname, resolvPath string, mode tunnel.Mode, req control.AttachRequest) (control.Container, error) {
	key, err := tunnel.NetnsID(nsPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return control.Container{}, fmt.Errorf("netns %s does not exist", nsPath)
		}
		return control.Container{}, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	req.ContainerKey = key
	req.Netns = nsPath
	req.Interface = ifname
	// The daemon refuses a namespace it holds already (atomically, by
	// key) when it gets the fd. Only when the namespace refuses the TUN
	// (its interface or default route is there) is the daemon asked
	// whether it holds that namespace, for a more useful message: a
	// listing of every container on each attach cost more than the
	// attach itself on a node with many ports.
	f, err := ns.Create(ifname, tunnel.IfaceConfig{DefaultRoute: mode == tunnel.ModeFull})
	if err != nil {
		if c, ok := attachedAs(sock, key); ok {
			return control.Container{}, fmt.Errorf("network namespace %s is already attached as %s (%s)", nsPath, c.ID, c.IP)
		}
		return control.Container{}, err
	}
	c, err := callAttach(sock, req, f)
	f.Close()
	if err != nil {
		return control.Container{}, err
	}
	cfg := mode.Config(netip.PrefixFrom(netip.MustParseAddr(c.IP), router.NetworkPrefix.Bits()), c.MTU, netip.MustParseAddr(c.Resolver))
	undo := func(err error) error {
		undoErr := call(sock, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: c.ID}}, nil, nil)
		if rmErr := ns.Remove(ifname); rmErr != nil && undoErr != nil {
			err = fmt.Errorf("%w (cleanup failed too: %v; %v)", err, undoErr, rmErr)
		}
		return err
	}
	if err := ns.Configure(ifname, cfg); err != nil {
		return control.Container{}, undo(fmt.Errorf("configure %s in %s: %w", ifname, nsPath, err))
	}
	if resolvPath != "" {
		if err := writeResolvConf(resolvPath, c.Resolver); err != nil {
			return control.Container{}, undo(err)
		}
	}
	return c, nil
}

// attachedAs finds the daemon's port of the namespace with key, if the
// daemon answers and has one.
func attachedAs(sock, key string) (control.Container, bool) {
	var existing []control.Container
	if err := call(sock, &control.Request{Op: "containers"}, nil, &existing); err != nil {
		return control.Container{}, false
	}
	for _, c := range existing {
		if c.NetnsID == key {
			return c, true
		}
	}
	return control.Container{}, false
}

// nsOps makes and configures the TUN inside the container's namespace:
// directly (the caller has the privileges) or through the user namespace
// that owns it (tunnel.InUserNS).
type nsOps interface {
	// Create checks the namespace as tunnel.Preflight(cfg) does and
	// creates the TUN.
	Create(ifname string, cfg tunnel.IfaceConfig) (*os.File, error)
	Configure(ifname string, cfg tunnel.IfaceConfig) error
	Remove(ifname string) error
}

// directNS enters the namespace with the caller's own privileges.
type directNS string

func (p directNS) Create(ifname string, cfg tunnel.IfaceConfig) (*os.File, error) {
	err := tunnel.Preflight(string(p), cfg)
	var f *os.File
	if err == nil {
		f, err = tunnel.CreateInNetns(string(p), ifname)
	}
	if err != nil && os.Geteuid() != 0 {
		if foreign, ferr := tunnel.ForeignUserNS(string(p)); ferr == nil && foreign {
			err = fmt.Errorf("%w (the namespace belongs to another user namespace: pass it with --userns, e.g. /proc/PID/ns/user)", err)
		}
	}
	return f, err
}

func (p directNS) Configure(ifname string, cfg tunnel.IfaceConfig) error {
	return tunnel.Configure(string(p), ifname, cfg)
}

func (p directNS) Remove(ifname string) error { return tunnel.Remove(string(p), ifname) }

// cmdNetnsHelper is the hidden helper that tunnel.InUserNS runs inside a
// user namespace.
func cmdNetnsHelper(args []string, _ io.Writer) error { return tunnel.RunHelper(args) }

// netnsResolvConf returns the resolv.conf that `ip netns exec NAME` binds
// over /etc/resolv.conf, for a namespace named by ip netns. Other
// namespaces (a container runtime's /proc/PID/ns/net) have their own mount
// view, which attach cannot reach: the engine writes the container's
// /etc/resolv.conf itself.
func netnsResolvConf(nsPath string) (string, error) {
	dir, name := filepath.Split(filepath.Clean(nsPath))
	if (dir != "/run/netns/" && dir != "/var/run/netns/") || name == "" {
		return "", fmt.Errorf("--write-resolv-conf: %s is not a namespace of ip netns (/run/netns/NAME); write the container's /etc/resolv.conf yourself: nameserver %s", nsPath, router.DefaultResolver)
	}
	return filepath.Join("/etc/netns", name, "resolv.conf"), nil
}

// writeResolvConf replaces path atomically.
func writeResolvConf(path, resolver string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".resolv.conf-*")
	if err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	content := "# written by vrouter attach: the private resolver of this container's network\nnameserver " + resolver + "\noptions edns0\n"
	_, werr := tmp.WriteString(content)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	return nil
}

func attachFD(sock string, fdNum int, req control.AttachRequest) (control.Container, error) {
	f := os.NewFile(uintptr(fdNum), fmt.Sprintf("fd %d", fdNum))
	if f == nil {
		return control.Container{}, fmt.Errorf("--fd %d is not an open file descriptor", fdNum)
	}
	defer f.Close()
	if _, err := f.Stat(); err != nil {
		return control.Container{}, fmt.Errorf("--fd %d is not an open file descriptor", fdNum)
	}
	if _, err := tunnel.Inspect(f); err != nil {
		return control.Container{}, fmt.Errorf("--fd %d: %w", fdNum, err)
	}
	// The namespace identity lets the daemon refuse a second attach of the
	// same container; reading it needs privileges the caller may lack.
	if key, err := tunnel.DevNetnsID(f); err == nil {
		req.ContainerKey = key
	}
	return callAttach(sock, req, f)
}

func callAttach(sock string, req control.AttachRequest, f *os.File) (control.Container, error) {
	var c control.Container
	err := call(sock, &control.Request{Op: "attach", Attach: &req}, f, &c)
	return c, err
}

// call sends req to the control socket sock names (a --control value,
// "" for the default; see control.SocketPath), once control.CheckSocket
// trusts it (control.Call checks).
func call(sock string, req *control.Request, f *os.File, result any) error {
	path, err := control.SocketPath(sock)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req.Version = control.Version
	if err := control.Call(ctx, path, req, f, result); err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			return err // already says which socket; the op adds nothing
		}
		return fmt.Errorf("%s: %w", req.Op, err)
	}
	return nil
}

func printContainer(w io.Writer, c control.Container) {
	fmt.Fprintf(w, "id:       %s\n", c.ID)
	fmt.Fprintf(w, "ip:       %s\n", c.IP)
	fmt.Fprintf(w, "mtu:      %d\n", c.MTU)
	fmt.Fprintf(w, "resolver: %s\n", c.Resolver)
	for i, n := range c.Names {
		label := "names:   "
		if i > 0 {
			label = "         "
		}
		fmt.Fprintf(w, "%s %s\n", label, n)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
