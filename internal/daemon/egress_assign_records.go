package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vrouter/vrouter/internal/ids"
)

// Record keys of dedicated egress in the cluster store.
//
//	eip/<ip>    the app holding ip; owned by the gateway that has ip, the
//	            only node that ever writes it (value: eipRecord)
//	ereq/<app>  an enable or disable of app in progress, owned by the node
//	            that serves the CLI call; the gateways act on it in
//	            reconcileEgress (value: egressRequest)
const (
	eipPrefix  = "eip/"
	ereqPrefix = "ereq/"
)

func eipKey(ip netip.Addr) string { return eipPrefix + ip.String() }
func ereqKey(app string) string   { return ereqPrefix + app }

// eipRecord is the value of eip/<ip>.
type eipRecord struct {
	App        string    `json:"app"`
	AssignedAt time.Time `json:"assigned_at"`
}

// Request actions (egressRequest.Action).
const (
	reqEnable  = "enable"
	reqDisable = "disable"
)

// egressRequest is the value of ereq/<app>. For enable, IPs names the IP
// each gateway is asked to give the app; a disable releases every IP of
// the app and names none.
type egressRequest struct {
	Action string       `json:"action"`
	ID     string       `json:"id"`
	IPs    []egressPick `json:"ips,omitempty"`
}

// egressPick is one IP asked of one gateway.
type egressPick struct {
	IP      netip.Addr `json:"ip"`
	Gateway string     `json:"gateway"`
}

// egressAssignment is one eip record as the rest of the daemon sees it.
type egressAssignment struct {
	IP         netip.Addr
	App        string
	Gateway    string
	AssignedAt time.Time
}

// maxRequestIPs bounds what a peer's request can make a gateway look at.
const maxRequestIPs = 16

// parseEIP decodes an eip record (key and value come from peers).
func parseEIP(key string, value []byte) (netip.Addr, eipRecord, error) {
	ip, err := netip.ParseAddr(strings.TrimPrefix(key, eipPrefix))
	if err != nil || !strings.HasPrefix(key, eipPrefix) || !ip.Is4() {
		return netip.Addr{}, eipRecord{}, fmt.Errorf("egress record %q: not eip/<IPv4>", key)
	}
	var r eipRecord
	if err := json.Unmarshal(value, &r); err != nil {
		return netip.Addr{}, eipRecord{}, fmt.Errorf("egress record %s: %w", key, err)
	}
	if err := ids.App(r.App); err != nil {
		return netip.Addr{}, eipRecord{}, fmt.Errorf("egress record %s: %w", key, err)
	}
	if r.AssignedAt.IsZero() {
		return netip.Addr{}, eipRecord{}, fmt.Errorf("egress record %s: no assigned_at", key)
	}
	return ip, r, nil
}

// parseEgressRequest decodes an ereq record (key and value come from peers).
func parseEgressRequest(key string, value []byte) (string, egressRequest, error) {
	app, ok := strings.CutPrefix(key, ereqPrefix)
	if !ok {
		return "", egressRequest{}, fmt.Errorf("egress request %q: not ereq/<app>", key)
	}
	if err := ids.App(app); err != nil {
		return "", egressRequest{}, fmt.Errorf("egress request %q: %w", key, err)
	}
	var r egressRequest
	if err := json.Unmarshal(value, &r); err != nil {
		return "", egressRequest{}, fmt.Errorf("egress request %s: %w", key, err)
	}
	if r.Action != reqEnable && r.Action != reqDisable {
		return "", egressRequest{}, fmt.Errorf("egress request %s: unknown action %q", key, r.Action)
	}
	if len(r.IPs) > maxRequestIPs {
		return "", egressRequest{}, fmt.Errorf("egress request %s: %d IPs", key, len(r.IPs))
	}
	for _, p := range r.IPs {
		if !p.IP.Is4() || p.Gateway == "" {
			return "", egressRequest{}, fmt.Errorf("egress request %s: bad IP %v of gateway %q", key, p.IP, p.Gateway)
		}
	}
	return app, r, nil
}

// egressFileName is the gateway's record of its assignments (and drain
// flag) in the state directory, so that both survive a restart.
const egressFileName = "egress.json"

// egressFile is the content of egress.json.
type egressFile struct {
	Draining    bool                  `json:"draining,omitempty"`
	Assignments []persistedAssignment `json:"assignments"`
}

type persistedAssignment struct {
	IP         netip.Addr `json:"ip"`
	App        string     `json:"app"`
	AssignedAt time.Time  `json:"assigned_at"`
}

// decodeEgressFile parses egress.json strictly: the daemon acts on every
// entry, so a damaged file is an error, not a partial list.
func decodeEgressFile(b []byte) (egressFile, error) {
	var f egressFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return egressFile{}, err
	}
	if dec.More() {
		return egressFile{}, errors.New("trailing data")
	}
	for i, a := range f.Assignments {
		if !a.IP.Is4() {
			return egressFile{}, fmt.Errorf("assignment %d: ip %v is not IPv4", i, a.IP)
		}
		if err := ids.App(a.App); err != nil {
			return egressFile{}, fmt.Errorf("assignment %d: %w", i, err)
		}
		if a.AssignedAt.IsZero() {
			return egressFile{}, fmt.Errorf("assignment %d: no assigned_at", i)
		}
	}
	return f, nil
}

// readEgressFile reads path; a missing file is an empty one.
func readEgressFile(path string) (egressFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return egressFile{}, nil
	}
	if err != nil {
		return egressFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	f, err := decodeEgressFile(b)
	if err != nil {
		return egressFile{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// writeFileAtomic replaces path with b (mode 0600): a crash leaves the old
// file or the new one, never a torn one.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp.Name(), 0o600)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
