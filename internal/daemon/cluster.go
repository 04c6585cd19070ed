package daemon

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/router"
)

// Record keys in the cluster store. Every key is a claim: the first node to
// put it wins it (cluster.Store.Winner), which is what makes addresses,
// container numbers and VNIs unique cluster-wide.
//
//	c/<pn>/<ip>              the container holding ip in pn (value: containerRecord)
//	n/<app>/<type>/<number>  the container holding that number (value: container id)
func addrKey(pn string, a netip.Addr) string { return "c/" + pn + "/" + a.String() }
func numberKey(app, typ string, n int) string {
	return "n/" + app + "/" + typ + "/" + strconv.Itoa(n)
}

// containerRecord is what other nodes learn about a container. The network
// and address are in the key, the node is the entry's owner, and the names
// are derived, which keeps the record far below the store's value limit.
type containerRecord struct {
	ID         string    `json:"id"`
	App        string    `json:"app"`
	Type       string    `json:"type"`
	Number     int       `json:"number"`
	MTU        int       `json:"mtu"`
	Interface  string    `json:"interface,omitempty"`
	AttachedAt time.Time `json:"attached_at"`
}

// overlayPrefix holds the nodes' overlay addresses: the outer source and
// destination of VXLAN inside WireGuard, never seen by containers.
var overlayPrefix = netip.MustParsePrefix("100.64.0.0/10")

// overlayAddr derives a node's overlay address from its name, so that it is
// stable across restarts without being stored.
func overlayAddr(name string) netip.Addr {
	h := fnv.New32a()
	h.Write([]byte(name))
	host := h.Sum32() & (1<<22 - 1)
	if host == 0 || host == 1<<22-1 {
		host = 1
	}
	base := overlayPrefix.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) | host
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// advertiseAddr picks the address other nodes reach us at when none is
// given: the gossip bind address if it is concrete, else the first global
// unicast IPv4 of the host, else loopback (a one-host cluster).
func advertiseAddr(bind string) string {
	if ip, err := netip.ParseAddr(bind); err == nil && !ip.IsUnspecified() {
		return bind
	}
	addrs, _ := hostAddrs()
	for _, ip := range addrs {
		if ip.Is4() && ip.IsGlobalUnicast() {
			return ip.String()
		}
	}
	return "127.0.0.1"
}

// joinLoop joins the seeds, retrying with capped exponential backoff until
// it succeeds or the daemon closes. The node serves its local containers
// all along: a cluster that cannot be reached is a degraded state, not a
// reason to stop.
func (d *Daemon) joinLoop(ctx context.Context, seeds []string) {
	defer d.loops.Done()
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.cluster.Join(jctx, seeds)
		cancel()
		if err == nil {
			d.log.Info("joined cluster", "seeds", seeds, "nodes", len(d.cluster.Nodes()))
			return
		}
		if errors.Is(err, cluster.ErrKeyMismatch) || errors.Is(err, cluster.ErrNameInUse) {
			// Retrying cannot fix these: say so loudly, keep serving locally.
			d.log.Error("cannot join cluster", "seeds", seeds, "err", err)
			return
		}
		d.log.Warn("join failed; retrying", "seeds", seeds, "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// claim makes the container's address and number ours cluster-wide. It
// returns lostAddr/lostNum when another node won; the caller then picks
// again. On any failure nothing stays claimed.
func (d *Daemon) claim(ctx context.Context, pn string, rec containerRecord, addr netip.Addr) (lostAddr, lostNum bool, err error) {
	st := d.cluster.Store()
	settle := d.cluster.SettleTime()
	val, err := json.Marshal(rec)
	if err != nil {
		return false, false, fmt.Errorf("encode container record: %w", err)
	}
	nk, ak := numberKey(rec.App, rec.Type, rec.Number), addrKey(pn, addr)
	if err := cluster.CheckEntry(nk, []byte(rec.ID)); err != nil {
		return false, false, err
	}
	won, err := st.Claim(ctx, nk, []byte(rec.ID), settle)
	if err != nil || !won {
		st.Delete(nk)
		return false, !won, err
	}
	won, err = st.Claim(ctx, ak, val, settle)
	if err != nil || !won {
		st.Delete(ak)
		st.Delete(nk)
		return !won, false, err
	}
	return false, false, nil
}

// release withdraws a local container's claims.
func (d *Daemon) release(c *container) {
	st := d.cluster.Store()
	st.Delete(addrKey(c.info.Network, c.addr))
	st.Delete(numberKey(c.info.App, c.info.Type, c.info.Number))
}

// remoteContainers lists the containers other live nodes announce.
func (d *Daemon) remoteContainers() []control.Container {
	var out []control.Container
	for _, e := range d.cluster.Store().List("c/") {
		if e.Owner == d.cfg.Name {
			continue
		}
		if w, ok := d.cluster.Store().Winner(e.Key); !ok || w.Owner != e.Owner {
			continue // a losing claim, about to be withdrawn
		}
		rest := strings.TrimPrefix(e.Key, "c/")
		pn, ip, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		rec, ok := d.records.decode(e)
		if !ok {
			continue
		}
		out = append(out, control.Container{
			ID:         rec.ID,
			Network:    pn,
			App:        rec.App,
			Type:       rec.Type,
			Number:     rec.Number,
			IP:         ip,
			MTU:        rec.MTU,
			Resolver:   router.DefaultResolver.String(),
			Names:      ids.Names(pn, rec.App, rec.Type, rec.Number),
			Interface:  rec.Interface,
			Node:       e.Owner,
			AttachedAt: rec.AttachedAt,
		})
	}
	return out
}

func (d *Daemon) peers() []control.Peer {
	var out []control.Peer
	wg := d.wgStatus()
	for _, n := range d.cluster.Nodes() {
		p := control.Peer{
			Name:    n.Name,
			Address: n.Addr.String(),
			State:   n.State.String(),
			Self:    n.Self,
			Since:   n.Since.UTC().Truncate(time.Second),
		}
		if n.Meta.Overlay.IsValid() {
			p.Overlay = n.Meta.Overlay.String()
		}
		if n.Meta.WGPublicKey != ([32]byte{}) {
			p.PublicKey = keyString(n.Meta.WGPublicKey)
			p.Endpoint = n.Meta.WGEndpoint.String()
		}
		p.Draining = n.Meta.Draining
		p.Unhealthy = n.Meta.Unhealthy
		for _, ip := range n.Meta.EgressIPs {
			p.EgressIPs = append(p.EgressIPs, ip.String())
		}
		if st, ok := wg[n.Meta.WGPublicKey]; ok && !st.LastHandshake.IsZero() {
			hs := st.LastHandshake.UTC()
			p.LastHandshake = &hs
		}
		out = append(out, p)
	}
	return out
}

// recordCache keeps decoded container records by key, owner and version:
// every reconcile (each cluster change, and every second) and every
// attach read all of them, and decoding JSON dominated that cost with a
// full network.
type recordCache struct {
	mu sync.Mutex
	m  map[[2]string]cachedRecord
}

type cachedRecord struct {
	version uint64
	rec     containerRecord
	ok      bool
}

// decode returns e's container record, from the cache if e's version was
// decoded before.
func (rc *recordCache) decode(e cluster.Entry) (containerRecord, bool) {
	k := [2]string{e.Key, e.Owner}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if c, hit := rc.m[k]; hit && c.version == e.Version {
		return c.rec, c.ok
	}
	var rec containerRecord
	ok := json.Unmarshal(e.Value, &rec) == nil
	if rc.m == nil || len(rc.m) > 4*maxContainersHint {
		// Entries of containers long gone: start over rather than track.
		rc.m = make(map[[2]string]cachedRecord)
	}
	rc.m[k] = cachedRecord{version: e.Version, rec: rec, ok: ok}
	return rec, ok
}

// maxContainersHint sizes the record cache: a cluster of a few full
// networks.
const maxContainersHint = 16 * 1022
