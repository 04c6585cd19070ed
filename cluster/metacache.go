package cluster

import (
	"bytes"
	"slices"
	"sync"
)

// metaCache remembers, per peer name, the last metadata whose signature
// verified. memberlist hands a peer's metadata to the event delegate on
// every join, update and leave, with its node lock held, and a peer's
// metadata rarely changes: in a 100-node cluster of one process, where
// false deaths and refutations come in bursts, ed25519 verification of
// the same bytes again and again was 13 % of the CPU (scenario 6 profile),
// all of it on memberlist's packet handler. The signature covers only
// (name, bytes), so bytes equal to ones that verified for that name verify
// again; the pin and clock checks are the caller's and still run each
// time.
//
// One entry per name, forgotten when the peer is reaped, so it holds at
// most the peers memberlist knows.
type metaCache struct {
	mu       sync.Mutex
	entries  map[string]verifiedMeta
	verified uint64 // full verifications (cache misses), for tests
}

type verifiedMeta struct {
	raw  []byte
	meta NodeMeta
}

func newMetaCache() *metaCache { return &metaCache{entries: make(map[string]verifiedMeta)} }

// verify is verifyMeta(name, b), from the cache when b is the last
// metadata that verified for name.
func (mc *metaCache) verify(name string, b []byte) (NodeMeta, error) {
	mc.mu.Lock()
	v, ok := mc.entries[name]
	if !ok || !bytes.Equal(v.raw, b) {
		mc.verified++
	}
	mc.mu.Unlock()
	if ok && bytes.Equal(v.raw, b) {
		m := v.meta
		m.EgressIPs = slices.Clone(m.EgressIPs)
		return m, nil
	}
	m, err := verifyMeta(name, b)
	if err != nil {
		return m, err
	}
	keep := m
	keep.EgressIPs = slices.Clone(m.EgressIPs)
	mc.mu.Lock()
	mc.entries[name] = verifiedMeta{raw: bytes.Clone(b), meta: keep}
	mc.mu.Unlock()
	return m, nil
}

func (mc *metaCache) forget(name string) {
	mc.mu.Lock()
	delete(mc.entries, name)
	mc.mu.Unlock()
}

func (mc *metaCache) misses() uint64 {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return mc.verified
}
