package tunnel

import (
	"fmt"
	"net/netip"
)

// Mode says which traffic of a container goes through its vrouter port.
type Mode string

const (
	// ModeFull makes vrouter the container's only way out: the default
	// route goes through the port (node egress or dedicated egress).
	ModeFull Mode = "full"
	// ModePNOnly routes only the private range and the resolver through
	// the port, so vrouter can be a container's second interface beside a
	// default route the engine set up on another one.
	ModePNOnly Mode = "pn-only"
)

// ParseMode accepts "full" and "pn-only".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeFull, ModePNOnly:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: want %q or %q", s, ModeFull, ModePNOnly)
}

// Config is the interface configuration of a port in this mode: addr is the
// container's address with the private range's prefix length (the kernel
// adds that on-link route with the address), resolver the private DNS
// resolver, reached through the port in both modes.
func (m Mode) Config(addr netip.Prefix, mtu int, resolver netip.Addr) IfaceConfig {
	return IfaceConfig{
		Addr:         addr,
		MTU:          mtu,
		DefaultRoute: m == ModeFull,
		Routes:       []netip.Prefix{netip.PrefixFrom(resolver, 32)},
	}
}
