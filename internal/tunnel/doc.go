// Package tunnel makes and opens the kernel TUN devices that connect a
// container's network namespace to the router.
//
// The privileged half (CreateInNetns, Configure, Remove) runs in the CLI:
// it needs CAP_SYS_ADMIN for setns and CAP_NET_ADMIN inside the target
// namespace. The unprivileged half (Inspect, OpenPort) runs in the daemon on
// a descriptor it received over the control socket; a TUN keeps working from
// any thread, namespace or process once opened (API-NOTES §2.2).
//
// Every TUN is opened IFF_TUN|IFF_NO_PI|IFF_VNET_HDR with offloads (TSO
// for the daemon's port; API-NOTES §2.4), so that a container's TCP hands
// over 64 KiB super-packets that the router passes whole to another
// container of the node, and is non-persistent: it disappears from the
// namespace when the last descriptor closes. OpenPort reads and writes the
// descriptor itself through the Go poller (tunport.go), without
// wireguard-go's tun.Device, whose per-device GRO tables cost about 700 KiB
// per container.
package tunnel
