// Package egress is dedicated egress (packet path 5): which app holds
// which gateway IP (the Assigner) and the data path that follows from it
// (the Path: worker routes, gateway NATs, and the two probes). A Service
// composes both from a Deps of narrow dependencies — the cluster's
// members, a subset of its store, the router as a Datapath, the node's
// local containers, the container view and a NAT factory — and owns every
// goroutine it starts (Start, Close).
//
// Control plane. The gateway that has an IP is the authority for it: only
// it writes eip/<ip>, it acts on requests for its own IPs one at a time
// (in Reconcile, on its owner's reconcile goroutine), and it keeps its
// assignments in STATE-DIR/egress.json so that they survive its restart
// and the death of whoever asked for them. Any node serves `egress
// enable|disable`: it picks the gateways (chooseEgress), puts a request
// record ereq/<app> and waits until the gateways have answered by writing
// or deleting their eip records.
//
// Data path, configured from the assignments on every reconcile:
//
//   - worker: each local container of an app with dedicated egress gets an
//     EgressRoute (its gateways in primary/standby order, which take new
//     flows and which keep theirs) and the router accepts the gateways'
//     answers for that app's egress VNI;
//   - gateway: for each app it holds an IP for and each network the app
//     has containers in (on other nodes), a NAT to that IP and remote
//     entries for those containers in the egress VNI's table.
//
// A container on the gateway node itself does not use that gateway (the
// overlay cannot carry a frame to its own node): it uses the app's other
// gateway.
//
// Probes: the overlay probe (workers, always) stops new flows to a
// gateway that no longer answers over the overlay; the gateway probe
// (gateways with --egress-probe) marks a gateway that cannot reach the
// outside unhealthy in its metadata.
//
// Lock order (a lock may be taken while holding those before it, never
// the other way round):
//
//	Assigner.drainMu → Assigner.mu → the cluster's locks (Members, Store)
//	Assigner.drainMu → Assigner.fileMu
//	Path.mu → LocalApps (the daemon's registry lock) → the view's lock
//	Path.mu → the view's lock, the router's locks, the cluster's locks
//
// Assigner.appMu and Assigner.wakeMu are leaves. The data path reads the
// assignments from an atomically published snapshot, so Path.mu is never
// held while an Assigner lock is taken, nor the reverse.
package egress
