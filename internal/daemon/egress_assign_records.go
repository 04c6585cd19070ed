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
	"time"

	"github.com/vrouter/vrouter/internal/ids"
)

// egressAssignment is one eip record as the rest of the daemon sees it.
type egressAssignment struct {
	IP         netip.Addr
	App        string
	Gateway    string
	AssignedAt time.Time
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
