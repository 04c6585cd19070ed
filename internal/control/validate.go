package control

import (
	"net/netip"

	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/router"
)

// Validate checks the values of an attach request and returns the address
// it asks for (the zero Addr: lowest free). The daemon refuses with it, and
// the CLI calls it before it creates a TUN, so both say the same thing.
// Errors have code CodeInvalid.
func (r *AttachRequest) Validate() (netip.Addr, error) {
	if err := ids.Network(r.Network); err != nil {
		return netip.Addr{}, Errorf(CodeInvalid, "%v", err)
	}
	if err := ids.App(r.App); err != nil {
		return netip.Addr{}, Errorf(CodeInvalid, "%v", err)
	}
	if err := ids.Type(r.Type); err != nil {
		return netip.Addr{}, Errorf(CodeInvalid, "%v", err)
	}
	if r.Number < 0 {
		return netip.Addr{}, Errorf(CodeInvalid, "container number %d must be positive", r.Number)
	}
	if r.CNI != nil {
		if err := r.CNI.Check(); err != nil {
			return netip.Addr{}, Errorf(CodeInvalid, "%v", err)
		}
	}
	if r.IP == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(r.IP)
	if err != nil {
		return netip.Addr{}, Errorf(CodeInvalid, "ip %q is not an IPv4 address", r.IP)
	}
	if !router.IsHost(a) {
		return netip.Addr{}, Errorf(CodeInvalid, "ip %q is outside 10.240.0.1-10.240.3.254", r.IP)
	}
	return a, nil
}
