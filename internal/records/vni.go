package records

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/router"
)

// VNI claims. A network's VNI is not its hash but a claim in the store:
//
//	v/<vni>   value: the PN id; owned by every node that has containers of it
//
// The winner of v/<vni> (cluster.Store.Winner: first claim, ties to the
// smaller owner name) says which network the VNI belongs to. A network's
// candidates are a fixed sequence derived from its id (VNICandidate; the
// first is its hash), and its VNI is the first candidate whose winning
// claim names it (VNIOf). So every node computes the same VNI for a
// network from the claims, and two networks never get the same one: a
// network whose hash another network already holds takes its next
// candidate.
//
// Each node serving a network keeps its own claim of the network's VNI,
// so the VNI stays the network's while any node serves it; a node drops
// its claim when its last container of the network leaves.

// VNIPrefix is the prefix of the VNI claims.
const VNIPrefix = "v/"

// VNICandidates is how many VNIs a network may try. Each candidate is
// taken by another network with probability (networks / 2^23), so running
// out takes millions of networks.
const VNICandidates = 16

// VNIKey is the key of the claim of vni.
func VNIKey(vni uint32) string { return VNIPrefix + strconv.FormatUint(uint64(vni), 10) }

// ParseVNIKey returns the VNI of a claim key. Only the canonical decimal
// spelling of a PN-half VNI counts, so that a VNI has one key.
func ParseVNIKey(key string) (uint32, bool) {
	s, ok := strings.CutPrefix(key, VNIPrefix)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(v, 10) != s || !router.IsNetworkVNI(uint32(v)) {
		return 0, false
	}
	return uint32(v), true
}

// VNICandidate is the i-th VNI network pn may claim: its hash (VNI) first,
// then hashes of the id and i, all in the PN half of the VNI space.
func VNICandidate(pn string, i int) uint32 {
	if i == 0 {
		return VNI(pn)
	}
	h := fnv.New32a()
	h.Write([]byte(pn + "\x00" + strconv.Itoa(i)))
	v := h.Sum32() & (router.EgressVNIBit - 1)
	if v == 0 {
		v = 1
	}
	return v
}

// vniOwner returns the network the winning claim of vni names, "" when
// nobody claims it. A claim whose value is not a network id names no
// network but still takes the VNI.
func vniOwner(st *cluster.Store, vni uint32) (pn string, held bool) {
	w, ok := st.Winner(VNIKey(vni))
	if !ok {
		return "", false
	}
	if ids.Network(string(w.Value)) != nil {
		return "", true
	}
	return string(w.Value), true
}

// VNIOf returns the VNI the cluster's claims give pn: its first candidate
// whose winning claim names it. false: no node claims a VNI for pn.
func VNIOf(st *cluster.Store, pn string) (uint32, bool) {
	for i := range VNICandidates {
		v := VNICandidate(pn, i)
		if owner, _ := vniOwner(st, v); owner == pn {
			return v, true
		}
	}
	return 0, false
}

// ClaimVNI makes this node a claimer of pn's VNI and returns it: the VNI
// pn already has in the cluster (VNIOf), or else its first candidate that
// no network holds, claimed and settled (settle: see
// cluster.Cluster.SettleTime). A candidate lost to a concurrent claim of
// another network is withdrawn and the next one tried; so is one whose
// claim settles while another candidate of pn won meanwhile (two nodes
// that chose apart agree before either attach returns). On error no claim
// of this call stays behind.
func ClaimVNI(ctx context.Context, st *cluster.Store, pn string, settle time.Duration) (uint32, error) {
	if err := ids.Network(pn); err != nil {
		return 0, fmt.Errorf("claim VNI: %w", err)
	}
	for attempt := 0; attempt < VNICandidates; attempt++ {
		if v, ok := VNIOf(st, pn); ok {
			// Join the network's VNI: our claim keeps it the network's
			// while we serve it, whoever else leaves.
			st.Put(VNIKey(v), []byte(pn))
			return v, nil
		}
		v, ok := freeCandidate(st, pn)
		if !ok {
			return 0, fmt.Errorf("claim VNI of %s: all %d candidates are held by other networks", pn, VNICandidates)
		}
		key := VNIKey(v)
		st.Put(key, []byte(pn))
		if err := sleepCtx(ctx, settle); err != nil {
			st.Delete(key)
			return 0, fmt.Errorf("claim VNI %d of %s: %w", v, pn, err)
		}
		if got, ok := VNIOf(st, pn); ok && got == v {
			return v, nil
		}
		// Another network won v, or pn settled on an earlier candidate
		// through another node: withdraw and look again.
		st.Delete(key)
	}
	return 0, fmt.Errorf("claim VNI of %s: no candidate settled in %d attempts", pn, VNICandidates)
}

// freeCandidate returns pn's first candidate that no network holds.
func freeCandidate(st *cluster.Store, pn string) (uint32, bool) {
	for i := range VNICandidates {
		v := VNICandidate(pn, i)
		if _, held := vniOwner(st, v); !held {
			return v, true
		}
	}
	return 0, false
}

// ReleaseVNI withdraws this node's claim of vni.
func ReleaseVNI(st *cluster.Store, vni uint32) { st.Delete(VNIKey(vni)) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
