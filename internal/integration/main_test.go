package integration

import (
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/refs"

	"github.com/vrouter/vrouter/cluster/memnet"
)

// gossipNet carries the gossip of every node of this tier's tests, in
// memory; WireGuard and the containers' traffic still cross loopback UDP.
var gossipNet memnet.Network

// TestMain makes gVisor track every reference-counted object (packet
// buffers above all) and panic at the end if one was never released.
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	code := m.Run()
	refs.DoLeakCheck()
	os.Exit(code)
}
