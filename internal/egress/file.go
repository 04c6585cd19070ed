package egress

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

// assignment is one eip record as egress sees it: the IP, its app, the
// gateway that holds it and since when.
type assignment struct {
	IP         netip.Addr
	App        string
	Gateway    string
	AssignedAt time.Time
}

// fileName is the gateway's record of its assignments (and drain
// flag) in the state directory, so that both survive a restart.
const fileName = "egress.json"

// stateFile is the content of egress.json.
type stateFile struct {
	Draining    bool                  `json:"draining,omitempty"`
	Assignments []persistedAssignment `json:"assignments"`
}

type persistedAssignment struct {
	IP         netip.Addr `json:"ip"`
	App        string     `json:"app"`
	AssignedAt time.Time  `json:"assigned_at"`
}

// decodeStateFile parses egress.json strictly: the daemon acts on every
// entry, so a damaged file is an error, not a partial list.
func decodeStateFile(b []byte) (stateFile, error) {
	var f stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return stateFile{}, err
	}
	if dec.More() {
		return stateFile{}, errors.New("trailing data")
	}
	for i, a := range f.Assignments {
		if !a.IP.Is4() {
			return stateFile{}, fmt.Errorf("assignment %d: ip %v is not IPv4", i, a.IP)
		}
		if err := ids.App(a.App); err != nil {
			return stateFile{}, fmt.Errorf("assignment %d: %w", i, err)
		}
		if a.AssignedAt.IsZero() {
			return stateFile{}, fmt.Errorf("assignment %d: no assigned_at", i)
		}
	}
	return f, nil
}

// readFile reads path; a missing file is an empty one.
func readFile(path string) (stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stateFile{}, nil
	}
	if err != nil {
		return stateFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	f, err := decodeStateFile(b)
	if err != nil {
		return stateFile{}, fmt.Errorf("%s: %w", path, err)
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
	// The rename is durable only once the directory is (AUDIT D12).
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}
