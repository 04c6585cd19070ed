package daemon

import "github.com/vrouter/vrouter/cluster/memnet"

// gossipNet carries the gossip of every daemon and bare cluster node these
// tests start, in memory (the cluster key's encryption as on sockets);
// the cmd/vrouter and e2e tiers keep the production sockets.
var gossipNet memnet.Network
