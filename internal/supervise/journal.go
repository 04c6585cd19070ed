package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// JournalFile is the port journal in the state dir: the ports the holder
// (supervisor or systemd's fd store) keeps, so that a holder starting
// anew can tell which fds it got back and which ports it lost.
const JournalFile = "ports.json"

type journalFile struct {
	Ports []Port `json:"ports"`
}

// WriteJournal replaces the journal atomically and durably: a crash
// leaves either the old or the new list, never a torn one. The ports are
// sorted by id so that equal sets give equal files.
func WriteJournal(dir string, ports []Port) error {
	ports = slices.Clone(ports)
	slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(journalFile{Ports: ports}, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, JournalFile)
	tmp, err := os.CreateTemp(dir, JournalFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("port journal: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: ENOENT, harmless
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("port journal: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("port journal: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("port journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("port journal: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ReadJournal returns the journalled ports; none when there is no journal.
func ReadJournal(dir string) ([]Port, error) {
	b, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("port journal: %w", err)
	}
	var j journalFile
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("port journal %s: %w", filepath.Join(dir, JournalFile), err)
	}
	return j.Ports, nil
}
