package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/internal/tunnel"
	"github.com/vrouter/vrouter/router"
)

// cmdAdd creates the TUN in the container's namespace, hands it to the
// daemon and configures it. Until the daemon holds it the TUN exists only
// as our descriptor, so a failure up to the hand-over leaves nothing in the
// namespace; after it, a failure is undone by detaching and removing the
// interface.
func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	who, err := containerIdentity(conf, args)
	if err != nil {
		return err
	}
	if err := checkIfName(args.IfName); err != nil {
		return err
	}
	d := daemonClient{conf.Control}
	q := queueFor(conf)
	// A deletion queued while the daemon was away goes first: a runtime
	// that restarts a container reuses its id and interface name.
	if err := q.apply(d); err != nil && unreachable(err) {
		return daemonError(conf.Control, err)
	}
	st, err := d.status()
	if err != nil {
		return daemonError(conf.Control, err)
	}
	mtu := st.MTU
	if conf.MTU > 0 {
		if conf.MTU > st.MTU {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("vrouter-cni: \"mtu\" %d is above the daemon's port MTU %d", conf.MTU, st.MTU), "")
		}
		mtu = conf.MTU
	}
	if err := tunnel.Preflight(args.Netns, tunnel.IfaceConfig{DefaultRoute: conf.mode == tunnel.ModeFull}); err != nil {
		return netnsError(args.Netns, err)
	}
	key, err := tunnel.NetnsID(args.Netns)
	if err != nil {
		return netnsError(args.Netns, err)
	}
	f, err := tunnel.CreateInNetns(args.Netns, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInternal, "vrouter-cni: "+err.Error(), "")
	}
	att := attachment(conf, args)
	c, err := d.attach(control.AttachRequest{
		Network:      conf.Network,
		App:          who.App,
		Type:         who.Type,
		Number:       who.Number,
		ContainerKey: key,
		Interface:    args.IfName,
		Netns:        args.Netns,
		CNI:          &att,
	}, f)
	f.Close() // the daemon has its own copy now, or the TUN is gone
	if err != nil {
		return daemonError(conf.Control, err)
	}
	undo := func(err error) error {
		derr := d.detach(c.ID)
		rerr := tunnel.Remove(args.Netns, args.IfName)
		if errors.Is(rerr, tunnel.ErrNoInterface) {
			rerr = nil
		}
		if cerr := errors.Join(derr, rerr); cerr != nil {
			err = fmt.Errorf("%w (cleanup failed too: %v)", err, cerr)
		}
		return types.NewError(types.ErrInternal, "vrouter-cni: "+err.Error(), "")
	}
	addr, err := netip.ParseAddr(c.IP)
	if err != nil {
		return undo(fmt.Errorf("daemon gave address %q: %w", c.IP, err))
	}
	resolver, err := netip.ParseAddr(c.Resolver)
	if err != nil {
		return undo(fmt.Errorf("daemon gave resolver %q: %w", c.Resolver, err))
	}
	cfg := conf.mode.Config(netip.PrefixFrom(addr, router.NetworkPrefix.Bits()), mtu, resolver)
	if err := tunnel.Configure(args.Netns, args.IfName, cfg); err != nil {
		return undo(err)
	}
	return types.PrintResult(result(conf, args, c, cfg), conf.CNIVersion)
}

// attachment is the runtime's name of this port, as the daemon keeps it.
func attachment(conf *netConf, args *skel.CmdArgs) control.CNIAttachment {
	return control.CNIAttachment{ContainerID: args.ContainerID, Network: conf.Name, IfName: args.IfName}
}

// result reports the interface, its address, the routes the mode set and
// the private resolver with search domains for the short names.
func result(conf *netConf, args *skel.CmdArgs, c control.Container, cfg tunnel.IfaceConfig) *current.Result {
	idx := 0
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{
			Name:    args.IfName,
			Mac:     portMAC(cfg.Addr.Addr()),
			Mtu:     cfg.MTU,
			Sandbox: args.Netns,
		}},
		IPs: []*current.IPConfig{{
			Interface: &idx,
			Address:   *ipNet(cfg.Addr),
		}},
		DNS: types.DNS{
			Nameservers: []string{c.Resolver},
			Search:      searchDomains(conf.Network, c.App),
		},
	}
	routes := cfg.Routes
	if cfg.DefaultRoute {
		routes = append([]netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0)}, routes...)
	}
	for _, p := range routes {
		res.Routes = append(res.Routes, &types.Route{Dst: *ipNet(p)})
	}
	return res
}

// searchDomains let a container use short names: "web" and "2.web" for
// its own app, "web.ap-…" for another app of its network.
func searchDomains(network, app string) []string {
	pn := network + "." + ids.Zone
	return []string{trimDot(app + "." + pn), trimDot(pn)}
}

func trimDot(s string) string { return s[:len(s)-1] }

// portMAC is the address the router gives this container in the VXLAN
// frames it carries (02:00 and the IPv4 address). A TUN has no link-layer
// address of its own, and runtimes such as podman refuse an interface
// without one.
func portMAC(a netip.Addr) string {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}.String()
}

func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().As4()
	return &net.IPNet{IP: net.IP(a[:]), Mask: net.CIDRMask(p.Bits(), 32)}
}

// netnsError reports a missing or unusable namespace; a missing one is the
// runtime's "container unknown".
func netnsError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("vrouter-cni: network namespace %s does not exist", path), "")
	}
	return types.NewError(types.ErrInvalidNetNS, "vrouter-cni: "+err.Error(), "")
}

func checkIfName(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("vrouter-cni: CNI_IFNAME %q: want 1-15 characters", name), "")
	}
	return nil
}
