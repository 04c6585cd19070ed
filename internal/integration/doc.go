// Package integration holds the in-process integration tier (DESIGN.md,
// tests tier 2): real routers and gVisor "containers" (stack/stacktest) in
// one test process, no root, real TCP/UDP/ping between them. The nodes'
// WireGuard crosses loopback UDP; their gossip runs over an in-memory
// network (cluster/memnet), with the cluster key's encryption as on
// sockets. It has no non-test code.
package integration
