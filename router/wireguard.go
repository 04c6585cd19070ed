package router

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/vrouter/vrouter/internal/keys"
)

// persistentKeepalive keeps NAT mappings open and handshakes fresh, so
// that a peer's last handshake tells whether it is alive (API-NOTES 1.5).
const persistentKeepalive = 25

// WireGuardConfig configures the embedded wireguard-go device.
type WireGuardConfig struct {
	// PrivateKey: any 32 bytes (keys.Generate); NewWireGuard clamps it.
	PrivateKey [32]byte
	ListenPort int          // UDP port on every address; 0: random (see ListenPort)
	Logger     *slog.Logger // nil: discard
}

// WGPeer is another node as WireGuard sees it.
type WGPeer struct {
	PublicKey [32]byte
	Endpoint  netip.AddrPort // zero: wait for the peer to reach us
	Overlay   netip.Addr     // the node's overlay IPv4 address, its only allowed IP
	// Keepalive sends a keepalive every 25 s, which also starts the first
	// handshake as soon as the peer is configured. Set it on the side that
	// dials (has Endpoint): on the other side, a handshake attempt without
	// an endpoint fails and wireguard-go waits 5 s before the next one.
	Keepalive bool
}

// WGPeerStatus is a peer's state read from the device.
type WGPeerStatus struct {
	PublicKey     [32]byte
	Endpoint      netip.AddrPort // current endpoint (roaming updates it); zero if none
	LastHandshake time.Time      // zero if there was none
	RxBytes       uint64
	TxBytes       uint64
}

// WireGuard owns one wireguard-go device: the encryption between nodes for
// the overlay (packet path 2). The device owns the tun.Device it was given
// and closes it in Close.
type WireGuard struct {
	dev *device.Device
	log *slog.Logger

	mu      sync.Mutex          // serialises SetPeers (read-modify-write of the peer set)
	applied map[[32]byte]WGPeer // what SetPeers last configured, under mu
	closed  bool
}

// NewWireGuard starts a wireguard-go device on dev with the default UDP
// bind (wildcard address, cfg.ListenPort) and brings it up. On error dev
// has been closed.
func NewWireGuard(dev tun.Device, cfg WireGuardConfig) (*WireGuard, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		dev.Close()
		return nil, fmt.Errorf("wireguard: listen port %d outside 0..65535", cfg.ListenPort)
	}
	// Both funcs must be set: wireguard-go calls them without nil checks.
	wgLog := &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	}
	var bind conn.Bind = conn.NewDefaultBind()
	if o, ok := dev.(*Overlay); ok {
		// Keep wireguard-go's queues short (overlay_inflight.go). Its
		// route listener, which only knows *conn.StdNetBind, stays off:
		// it re-picks a peer's source address when routes change.
		bind = o.pace(bind)
	}
	d := device.NewDevice(dev, bind, wgLog)
	w := &WireGuard{dev: d, log: log}
	priv := keys.Clamp(cfg.PrivateKey)
	conf := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(priv[:]), cfg.ListenPort)
	if err := d.IpcSet(conf); err != nil {
		d.Close()
		return nil, fmt.Errorf("wireguard: configure device: %w", err)
	}
	if err := d.Up(); err != nil {
		d.Close()
		return nil, fmt.Errorf("wireguard: bring device up: %w", err)
	}
	return w, nil
}

// ListenPort returns the UDP port the device listens on (useful with
// ListenPort 0).
func (w *WireGuard) ListenPort() (int, error) {
	s, err := w.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("wireguard: read config: %w", err)
	}
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen_port="); ok {
			p, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("wireguard: listen_port %q: %w", v, err)
			}
			return p, nil
		}
	}
	return 0, errors.New("wireguard: no listen_port in device config")
}

// SetPeers makes peers the device's peer set: new peers are added, known
// ones updated in place (their sessions survive), others removed. Only
// what changed since the last call is written, so an endpoint the device
// learned from the peer (roaming) stays until the wanted endpoint changes.
// Each peer's only allowed IP is its overlay /32, so a frame from a peer
// can carry only that peer's overlay address as outer source.
//
// Peers that share a public key or an overlay address cannot be told
// apart (wireguard-go gives a shared /32 to the peer set last): all of them
// are left out, the others are configured, and the error
// (ErrDuplicatePeer) names them. A peer with a non-IPv4 overlay address is
// left out the same way.
func (w *WireGuard) SetPeers(peers []WGPeer) error {
	keys := make(map[[32]byte]int, len(peers))
	overlays := make(map[netip.Addr]int, len(peers))
	for _, p := range peers {
		keys[p.PublicKey]++
		overlays[p.Overlay]++
	}
	want := make(map[[32]byte]WGPeer, len(peers))
	var bad []error
	kept := peers[:0:0]
	for _, p := range peers {
		switch {
		case !p.Overlay.Is4():
			bad = append(bad, fmt.Errorf("peer %s: overlay address %s is not IPv4", keyHex(p.PublicKey), p.Overlay))
		case keys[p.PublicKey] > 1:
			bad = append(bad, fmt.Errorf("peer %s (%s): public key listed %d times: %w", keyHex(p.PublicKey), p.Overlay, keys[p.PublicKey], ErrDuplicatePeer))
		case overlays[p.Overlay] > 1:
			bad = append(bad, fmt.Errorf("peer %s: overlay address %s listed %d times: %w", keyHex(p.PublicKey), p.Overlay, overlays[p.Overlay], ErrDuplicatePeer))
		default:
			want[p.PublicKey] = p
			kept = append(kept, p)
		}
	}
	peers = kept
	if err := w.setPeers(peers, want); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("wireguard: %d peers left out: %w", len(bad), errors.Join(bad...))
	}
	return nil
}

// ErrDuplicatePeer is wrapped by SetPeers for peers it leaves out because
// another peer has the same public key or overlay address.
var ErrDuplicatePeer = errors.New("duplicate peer")

func (w *WireGuard) setPeers(peers []WGPeer, want map[[32]byte]WGPeer) error {

	w.mu.Lock()
	defer w.mu.Unlock()
	current, err := w.peers()
	if err != nil {
		return err
	}
	var b strings.Builder
	configured := make(map[[32]byte]bool, len(current))
	for _, p := range current {
		configured[p.PublicKey] = true
		if _, ok := want[p.PublicKey]; !ok {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", keyHex(p.PublicKey))
		}
	}
	for _, p := range peers {
		old, ok := w.applied[p.PublicKey]
		fresh := !ok || !configured[p.PublicKey]
		if !fresh && old == p {
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\n", keyHex(p.PublicKey))
		if fresh || old.Overlay != p.Overlay {
			fmt.Fprintf(&b, "replace_allowed_ips=true\nallowed_ip=%s/32\n", p.Overlay)
		}
		if p.Endpoint.IsValid() && (fresh || old.Endpoint != p.Endpoint) {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		if fresh || old.Keepalive != p.Keepalive {
			ka := 0
			if p.Keepalive {
				ka = persistentKeepalive
			}
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", ka)
		}
	}
	if b.Len() > 0 {
		if err := w.dev.IpcSet(b.String()); err != nil {
			// Unknown state: rewrite everything next time.
			w.applied = nil
			return fmt.Errorf("wireguard: set %d peers: %w", len(peers), err)
		}
	}
	w.applied = want
	return nil
}

// Peers returns the status of every configured peer.
func (w *WireGuard) Peers() ([]WGPeerStatus, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peers()
}

// peers parses IpcGet: a public_key= line starts each peer.
func (w *WireGuard) peers() ([]WGPeerStatus, error) {
	s, err := w.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wireguard: read config: %w", err)
	}
	return parsePeers(s)
}

func parsePeers(s string) ([]WGPeerStatus, error) {
	var (
		out       []WGPeerStatus
		cur       *WGPeerStatus
		sec, nsec int64
	)
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				cur.LastHandshake = time.Unix(sec, nsec)
			}
			out = append(out, *cur)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			flush()
			cur, sec, nsec = &WGPeerStatus{}, 0, 0
			key, err := hex.DecodeString(v)
			if err != nil || len(key) != 32 {
				return nil, fmt.Errorf("wireguard: bad public_key %q", v)
			}
			copy(cur.PublicKey[:], key)
			continue
		}
		if cur == nil {
			continue // device section
		}
		var err error
		switch k {
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(v)
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.RxBytes, err = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			cur.TxBytes, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard: peer %s: %s=%q: %w", keyHex(cur.PublicKey), k, v, err)
		}
	}
	flush()
	return out, nil
}

// Close shuts the device down: it closes the bind and the tun.Device and
// waits for wireguard-go's goroutines. Later calls do nothing.
func (w *WireGuard) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.dev.Close()
	<-w.dev.Wait()
	return nil
}

// PublicKey returns the public key of priv (clamped first, as WireGuard
// does).
func PublicKey(priv [32]byte) [32]byte {
	priv = keys.Clamp(priv)
	var pub [32]byte
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, impossible with the base point.
		panic(fmt.Sprintf("curve25519: %v", err))
	}
	copy(pub[:], p)
	return pub
}

func keyHex(k [32]byte) string { return hex.EncodeToString(k[:]) }
