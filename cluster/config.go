package cluster

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// Timing selects memberlist's protocol timings.
type Timing int

const (
	// TimingLAN is memberlist.DefaultLANConfig (production default): a
	// crashed node is declared dead after about 6 s on 3 nodes.
	TimingLAN Timing = iota
	// TimingFast probes every 200 ms and gossips every 50 ms (tests, demos):
	// a crashed node of 3 is declared dead within about 1.5 s.
	TimingFast
)

func (t Timing) String() string {
	switch t {
	case TimingLAN:
		return "lan"
	case TimingFast:
		return "fast"
	}
	return fmt.Sprintf("timing(%d)", int(t))
}

// Config configures a Cluster.
type Config struct {
	Name          string // unique node name, 1..MaxNameLen bytes
	BindAddr      string // gossip listen IP ("127.0.0.1", "0.0.0.0")
	BindPort      int    // 0 = pick a free port (tests); read back with LocalAddr()
	AdvertiseAddr string // "" = BindAddr (which must then be a concrete IP)
	AdvertisePort int    // 0 = the bound port
	Key           []byte // 32 bytes, required (AES-256-GCM keyring)
	Meta          NodeMeta
	Timing        Timing
	Logger        *slog.Logger // memberlist's own log lines go here too; nil = discard
	// Network carries the gossip; nil = UDP and TCP sockets on
	// BindAddr:BindPort (production, the e2e tier). Tests pass an
	// in-memory one (cluster/memnet).
	Network Network

	// SigningKey is the node's long-lived identity (identity.go); nil =
	// a fresh one for this Cluster only (tests).
	SigningKey ed25519.PrivateKey
	// PinFile keeps the signing keys pinned to peer names across restarts
	// (written atomically, mode 0600); "" = pins live in memory only.
	PinFile string

	// compress turns memberlist's compression back on, as nodes before
	// it was turned off ran: tests of the mixed cluster.
	compress bool
}

// Network makes the transport memberlist gossips over. The cluster key's
// encryption sits above it, so any Network carries only ciphertext.
type Network interface {
	// Listen returns a transport holding addr (port 0: a free one), which
	// memberlist shuts down with the Cluster.
	Listen(addr netip.AddrPort) (memberlist.NodeAwareTransport, error)
}

// KeySize is the required cluster key length (AES-256-GCM).
const KeySize = 32

// memberlistConfig builds the memberlist configuration for cfg. Delegates
// are filled in by New.
func (cfg *Config) memberlistConfig() (*memberlist.Config, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("cluster config: key of %d bytes, need %d", len(cfg.Key), KeySize)
	}
	bind, err := netip.ParseAddr(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster config: bind address: %w", err)
	}
	adv := cfg.AdvertiseAddr
	if adv == "" {
		if bind.IsUnspecified() {
			return nil, errors.New("cluster config: an advertise address is required when binding " + cfg.BindAddr)
		}
		adv = bind.String()
	} else if a, err := netip.ParseAddr(adv); err != nil || a.IsUnspecified() {
		return nil, fmt.Errorf("cluster config: advertise address %q is not a concrete IP", adv)
	}
	if cfg.BindPort < 0 || cfg.BindPort > 65535 || cfg.AdvertisePort < 0 || cfg.AdvertisePort > 65535 {
		return nil, fmt.Errorf("cluster config: port out of range")
	}
	keyring, err := memberlist.NewKeyring(nil, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster config: keyring: %w", err)
	}

	mc := memberlist.DefaultLANConfig()
	if cfg.Timing == TimingFast {
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		// LAN's multiplier, not less: with 2 memberlist needs no
		// confirmation (k = SuspicionMult − 2 = 0), so one late ack
		// anywhere kills a live node after 2 × log10(N) probe intervals
		// (0.8 s at N = 100), which 100 nodes of one loaded process did
		// not refute in time (scenario 6). With 4 a suspicion lasts from
		// 6× down to 1× of 4 × log10(N) intervals as 2 other nodes
		// confirm it; under 4 nodes it is the minimum, 0.8 s, at once.
		mc.SuspicionMult = 4
		mc.GossipInterval = 50 * time.Millisecond
		mc.PushPullInterval = 2 * time.Second
		mc.TCPTimeout = time.Second
		mc.GossipToTheDeadTime = 5 * time.Second
	} else if cfg.Timing != TimingLAN {
		return nil, fmt.Errorf("cluster config: unknown timing %d", cfg.Timing)
	}
	mc.Name = cfg.Name
	mc.BindAddr = bind.String()
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = adv
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		// With BindPort 0 memberlist rewrites both to the bound port.
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Keyring = keyring
	// LZW costs a fresh 16 KiB dictionary per packet (a fifth of the
	// gossip CPU in a 30-node profile) and buys nothing memberlist uses:
	// broadcasts are packed against the uncompressed size, and what is
	// compressed is mostly ciphertext-sized records and signatures. Peers
	// still decompress what older nodes send.
	mc.EnableCompression = cfg.compress
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	// A restarted node may come back from another port under its old name
	// once the old incarnation has been declared dead; without this it would
	// be refused as a conflict until the dead entry is reaped.
	mc.DeadNodeReclaimTime = mc.ProbeInterval
	return mc, nil
}

// tombstoneTTL is how long tombstones, orphaned entries and reaped owners
// are kept: several push-pull rounds, so every peer has seen them.
func tombstoneTTL(mc *memberlist.Config) time.Duration {
	return max(10*mc.PushPullInterval, 2*mc.GossipToTheDeadTime)
}
