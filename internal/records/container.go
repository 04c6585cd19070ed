package records

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/router"
)

// Prefixes of the container families.
const (
	ContainerPrefix = "c/"
	NumberPrefix    = "n/"
)

// ContainerKey is the key of the container holding addr in pn.
func ContainerKey(pn string, addr netip.Addr) string {
	return ContainerPrefix + pn + "/" + addr.String()
}

// NumberKey is the key of the container holding number n of (app, typ).
func NumberKey(app, typ string, n int) string {
	return NumberPrefix + AppType(app, typ) + "/" + strconv.Itoa(n)
}

// AppType names the number space of one app's containers of one type, as
// ParseNumberKey returns it.
func AppType(app, typ string) string { return app + "/" + typ }

// ParseContainerKey splits a container key c/<pn>/<ip>. Only the canonical
// spelling of an address counts (ContainerKey writes no other), so that a
// key and its (network, address) are one to one: two spellings of one IPv6
// address from a confused peer cannot stand for one container.
func ParseContainerKey(key string) (pn string, addr netip.Addr, ok bool) {
	rest, ok := strings.CutPrefix(key, ContainerPrefix)
	if !ok {
		return "", netip.Addr{}, false
	}
	pn, ip, ok := strings.Cut(rest, "/")
	if !ok {
		return "", netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.String() != ip {
		return "", netip.Addr{}, false
	}
	// Peers' keys are checked as the daemon checks an attach: a member
	// cannot make other nodes build state for ids no attach accepts
	// (AUDIT D10).
	if ids.Network(pn) != nil || !router.IsHost(addr) {
		return "", netip.Addr{}, false
	}
	return pn, addr, true
}

// ParseNumberKey splits a number key n/<app>/<type>/<number> into
// AppType(app, type) and the number.
func ParseNumberKey(key string) (appType string, n int, ok bool) {
	rest, ok := strings.CutPrefix(key, NumberPrefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil {
		return "", 0, false
	}
	return rest[:i], n, true
}

// Container is the value of a container key: what other nodes learn about
// a container. The network and address are in the key, the node is the
// entry's owner, and the names are derived, which keeps the record far
// below the store's value limit.
type Container struct {
	ID         string    `json:"id"`
	App        string    `json:"app"`
	Type       string    `json:"type"`
	Number     int       `json:"number"`
	MTU        int       `json:"mtu"`
	Interface  string    `json:"interface,omitempty"`
	AttachedAt time.Time `json:"attached_at"`
}

// Encode returns the record's value.
func (c Container) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode container record: %w", err)
	}
	return b, nil
}

// DecodeContainer decodes a container key's value (from a peer).
func DecodeContainer(value []byte) (Container, error) {
	var c Container
	if err := json.Unmarshal(value, &c); err != nil {
		return Container{}, fmt.Errorf("container record: %w", err)
	}
	if err := ids.App(c.App); err != nil {
		return Container{}, fmt.Errorf("container record: %w", err)
	}
	if err := ids.Type(c.Type); err != nil {
		return Container{}, fmt.Errorf("container record: %w", err)
	}
	if c.Number < 1 {
		return Container{}, fmt.Errorf("container record: number %d is not positive", c.Number)
	}
	return c, nil
}

// ContainerCache keeps decoded container records by key, owner and
// version: every reconcile (each cluster change, and every second) and
// every attach read all of them, and decoding JSON dominated that cost
// with a full network. The zero value is ready to use.
type ContainerCache struct {
	mu sync.Mutex
	m  map[[2]string]cachedContainer
}

type cachedContainer struct {
	version uint64
	rec     Container
	ok      bool
}

// Decode returns e's container record, from the cache if e's version was
// decoded before; false if its value is not one.
func (cc *ContainerCache) Decode(e cluster.Entry) (Container, bool) {
	k := [2]string{e.Key, e.Owner}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if c, hit := cc.m[k]; hit && c.version == e.Version {
		return c.rec, c.ok
	}
	rec, err := DecodeContainer(e.Value)
	if cc.m == nil || len(cc.m) > 4*maxContainersHint {
		// Entries of containers long gone: start over rather than track.
		cc.m = make(map[[2]string]cachedContainer)
	}
	cc.m[k] = cachedContainer{version: e.Version, rec: rec, ok: err == nil}
	return rec, err == nil
}

// maxContainersHint sizes the record cache: a cluster of a few full
// networks.
const maxContainersHint = 16 * 1022
