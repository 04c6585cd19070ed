package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// IfaceConfig is what Configure sets on a TUN inside its namespace.
type IfaceConfig struct {
	Addr         netip.Prefix   // e.g. 10.240.0.1/22; the kernel adds the /22 route
	MTU          int            // 0 leaves the MTU alone
	DefaultRoute bool           // default route via the device
	Routes       []netip.Prefix // extra on-link routes, e.g. 169.254.20.10/32
}

// Configure sets up the interface name inside the namespace at nsPath: lo
// up, MTU, the address, no IPv6 link-local address, link up, then the
// routes. It refuses, before changing anything, when cfg.DefaultRoute is
// set and the namespace already has an IPv4 default route. On error the
// caller undoes the rest by closing the TUN (or with Remove): addresses and
// routes go with the device.
func Configure(nsPath, name string, cfg IfaceConfig) error {
	if err := cfg.check(); err != nil {
		return fmt.Errorf("configure %s in %s: %w", name, nsPath, err)
	}
	h, err := handleAt(nsPath)
	if err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	defer h.Close()
	wrap := func(step string, err error) error {
		return fmt.Errorf("configure %s in %s: %s: %w%s", name, nsPath, step, err, privHint(err, "CAP_NET_ADMIN"))
	}

	link, err := h.LinkByName(name)
	if err != nil {
		return wrap("find interface", err)
	}
	if cfg.DefaultRoute {
		if dflt, err := defaultRoute(h); err != nil {
			return wrap("list routes", err)
		} else if dflt != "" {
			return fmt.Errorf("configure %s in %s: the namespace already has a default route (%s); not replacing it", name, nsPath, dflt)
		}
	}

	lo, err := h.LinkByName("lo")
	if err != nil {
		return wrap("find lo", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return wrap("set lo up", err)
	}
	if cfg.MTU > 0 {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return wrap(fmt.Sprintf("set MTU %d", cfg.MTU), err)
		}
	}
	addr := &netlink.Addr{IPNet: prefixNet(cfg.Addr)}
	if err := h.AddrAdd(link, addr); err != nil {
		return wrap("add address "+cfg.Addr.String(), err)
	}
	// No IPv6 link-local address: without it the kernel sends no router
	// solicitations or MLD reports into a router that only carries IPv4
	// and would count them as drops. Best effort: it fails only where the
	// kernel has no IPv6, and then there is no noise either.
	_ = h.LinkSetIP6AddrGenMode(link, nl.IN6_ADDR_GEN_MODE_NONE)
	if err := h.LinkSetUp(link); err != nil {
		return wrap("set link up", err)
	}
	idx := link.Attrs().Index
	if cfg.DefaultRoute {
		r := &netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Scope: netlink.SCOPE_LINK}
		if err := h.RouteAdd(r); err != nil {
			return wrap("add default route", err)
		}
	}
	for _, p := range cfg.Routes {
		r := &netlink.Route{LinkIndex: idx, Dst: prefixNet(p.Masked()), Scope: netlink.SCOPE_LINK}
		if err := h.RouteAdd(r); err != nil {
			return wrap("add route "+p.String(), err)
		}
	}
	return nil
}

// Preflight checks, without changing anything, what Configure would refuse
// for reasons outside the caller's inputs: the namespace must exist and, if
// cfg.DefaultRoute is set, have no IPv4 default route yet. The CLI calls it
// before attaching so that a predictable refusal needs no rollback.
func Preflight(nsPath string, cfg IfaceConfig) error {
	h, err := handleAt(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	if !cfg.DefaultRoute {
		return nil
	}
	dflt, err := defaultRoute(h)
	if err != nil {
		return fmt.Errorf("network namespace %s: list routes: %w", nsPath, err)
	}
	if dflt != "" {
		return fmt.Errorf("network namespace %s already has a default route (%s); not replacing it", nsPath, dflt)
	}
	return nil
}

func (c IfaceConfig) check() error {
	if !c.Addr.IsValid() || !c.Addr.Addr().Is4() {
		return fmt.Errorf("address %v is not an IPv4 prefix", c.Addr)
	}
	if c.MTU < 0 || c.MTU > 65535 {
		return fmt.Errorf("MTU %d out of range", c.MTU)
	}
	for _, p := range c.Routes {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("route %v is not an IPv4 prefix", p)
		}
	}
	return nil
}

// Remove deletes the interface name from the namespace at nsPath. The TUN's
// descriptors stay open but fail from then on. An interface that is not
// there gives an error wrapping ErrNoInterface.
func Remove(nsPath, name string) error {
	h, err := handleAt(nsPath)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("remove %s from %s: %w", name, nsPath, ErrNoInterface)
		}
		return fmt.Errorf("remove %s from %s: %w", name, nsPath, err)
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("remove %s from %s: %w%s", name, nsPath, err, privHint(err, "CAP_NET_ADMIN"))
	}
	return nil
}

// handleAt opens netlink sockets inside the namespace; they stay bound to it
// whatever thread uses them later.
func handleAt(nsPath string) (*netlink.Handle, error) {
	f, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(int(f.Fd())))
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w%s", nsPath, err, privHint(err, "CAP_SYS_ADMIN"))
	}
	return h, nil
}

// defaultRoute returns a description of the main table's IPv4 default
// route, or "" when there is none.
func defaultRoute(h *netlink.Handle) (string, error) {
	routes, err := h.RouteList(nil, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return "", err
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		desc := "default"
		if r.Gw != nil {
			desc += " via " + r.Gw.String()
		}
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			desc += " dev " + l.Attrs().Name
		}
		return desc, nil
	}
	return "", nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().As4()
	return &net.IPNet{IP: net.IP(a[:]), Mask: net.CIDRMask(p.Bits(), 32)}
}
