package main

import (
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vrouter/vrouter/internal/tunnel"
	"github.com/vrouter/vrouter/router"
)

// cmdCheck verifies that the daemon still holds the container's port with
// the address ADD reported, and that the interface in the namespace is
// still the TUN ADD configured: up, MTU, address and the mode's routes.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "vrouter-cni: CHECK needs prevResult (the result of ADD)", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "vrouter-cni: prevResult: "+err.Error(), "")
	}
	var want netip.Prefix
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface >= len(prev.Interfaces) || prev.Interfaces[*ip.Interface].Name != args.IfName {
			continue
		}
		a, ok := netip.AddrFromSlice(ip.Address.IP.To4())
		if ok {
			ones, _ := ip.Address.Mask.Size()
			want = netip.PrefixFrom(a, ones)
		}
	}
	if !want.IsValid() {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("vrouter-cni: prevResult has no IPv4 address on %s", args.IfName), "")
	}
	d := daemonClient{conf.Control}
	_ = queueFor(conf).apply(d) // best effort: CHECK is about this port
	ports, err := d.ports(conf.Name)
	if err != nil {
		return daemonError(conf.Control, err)
	}
	att := attachment(conf, args)
	var ip string
	var mtu int
	var resolver string
	found := false
	for _, c := range ports {
		if *c.CNI == att {
			ip, mtu, resolver, found = c.IP, c.MTU, c.Resolver, true
		}
	}
	if !found {
		return types.NewError(codeNoPort, fmt.Sprintf("vrouter-cni: the vrouter daemon at %s holds no port for container %s (%s)", conf.Control, args.ContainerID, args.IfName), "")
	}
	if ip != want.Addr().String() {
		return types.NewError(codeNoPort, fmt.Sprintf("vrouter-cni: the daemon has container %s at %s, ADD reported %s", args.ContainerID, ip, want.Addr()), "")
	}
	res, err := netip.ParseAddr(resolver)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("vrouter-cni: daemon gave resolver %q", resolver), "")
	}
	if conf.MTU > 0 {
		mtu = conf.MTU
	}
	cfg := conf.mode.Config(netip.PrefixFrom(want.Addr(), router.NetworkPrefix.Bits()), mtu, res)
	if err := tunnel.Verify(args.Netns, args.IfName, cfg); err != nil {
		return types.NewError(types.ErrInternal, "vrouter-cni: "+err.Error(), "")
	}
	return nil
}
