package tunnel

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoInterface is wrapped by Remove and Verify when the namespace has no
// interface of that name.
var ErrNoInterface = errors.New("no such interface")

// Verify checks that the interface name in the namespace at nsPath is a TUN
// set up as Configure(cfg) left it: up, with cfg's MTU and address, the
// address's on-link route, cfg's routes through it and, when
// cfg.DefaultRoute, the default route through it. It changes nothing and
// names the first difference it finds.
func Verify(nsPath, name string, cfg IfaceConfig) error {
	if err := cfg.check(); err != nil {
		return fmt.Errorf("verify %s in %s: %w", name, nsPath, err)
	}
	h, err := handleAt(nsPath)
	if err != nil {
		return fmt.Errorf("verify %s: %w", name, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("verify %s in %s: %w", name, nsPath, ErrNoInterface)
		}
		return fmt.Errorf("verify %s in %s: %w", name, nsPath, err)
	}
	attrs := link.Attrs()
	if link.Type() != "tuntap" {
		return fmt.Errorf("%s in %s is a %s device, not a TUN", name, nsPath, link.Type())
	}
	if attrs.Flags&unix.IFF_UP == 0 {
		return fmt.Errorf("%s in %s is down", name, nsPath)
	}
	if cfg.MTU > 0 && attrs.MTU != cfg.MTU {
		return fmt.Errorf("%s in %s has MTU %d, want %d", name, nsPath, attrs.MTU, cfg.MTU)
	}
	addrs, err := h.AddrList(link, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("verify %s in %s: list addresses: %w", name, nsPath, err)
	}
	found := false
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && netip.PrefixFrom(ip, ones) == cfg.Addr {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s in %s does not have address %s", name, nsPath, cfg.Addr)
	}
	routes, err := h.RouteList(link, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("verify %s in %s: list routes: %w", name, nsPath, err)
	}
	have := make(map[netip.Prefix]bool)
	for _, r := range routes {
		if r.Dst == nil {
			have[netip.PrefixFrom(netip.IPv4Unspecified(), 0)] = true
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ip, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
			have[netip.PrefixFrom(ip, ones)] = true
		}
	}
	want := append([]netip.Prefix{cfg.Addr.Masked()}, cfg.Routes...)
	if cfg.DefaultRoute {
		want = append(want, netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	}
	for _, p := range want {
		if !have[p.Masked()] {
			return fmt.Errorf("%s in %s: route %s through it is missing", name, nsPath, p.Masked())
		}
	}
	return nil
}
