// Command vrouter-cni is the CNI plugin of vrouter: container engines run
// it to give a container a port on the node's vrouter daemon. It creates
// the TUN in the container's network namespace (it runs with the engine's
// privileges), hands the descriptor to the daemon over the control socket
// and configures the interface in pn-only mode (the private range and the
// resolver only, beside the engine's own default route) or full mode (the
// default route through vrouter).
//
// Network configuration keys beside the CNI ones: network (pn-<uuid>),
// control (the daemon's socket), mtu, mode (pn-only | full), dataDir
// (queued deletions, default /run/vrouter-cni). The container's app, type
// and number come from CNI_ARGS (APP=ap-…;TYPE=web;NUMBER=2) or from
// args.cni {"app", "type", "number"}.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vrouter/vrouter/internal/buildinfo"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "vrouter-cni "+buildinfo.Version()+": vrouter's CNI plugin")
}
