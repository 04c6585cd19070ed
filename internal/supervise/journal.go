package supervise

// The port journal is a snapshot (ports.json, replaced atomically) and an
// append-only log of the holds and releases since (ports.log, one JSON
// record a line, each fdatasynced before the holder answers). An attach
// thus costs one small append, not a rewrite of every port; the log is
// folded into a new snapshot once it outgrows the snapshot (compaction).
//
// Both files carry the snapshot's generation: a log whose header names
// another generation is stale (a crash between the two renames of a
// compaction) and ignored. A log record cut short by a crash has no
// newline; its hold or release was never acknowledged and is ignored.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// JournalFile is the port journal's snapshot in the state dir: the ports
// the holder (supervisor or systemd's fd store) keeps, so that a holder
// starting anew can tell which fds it got back and which ports it lost.
// JournalLog holds the changes since the snapshot.
const (
	JournalFile = "ports.json"
	JournalLog  = "ports.log"
)

// compactMin is the log length below which the log is never folded in:
// the snapshot is rewritten after 64 + 2×ports records at most, so each
// record costs O(1) amortised and the log stays a few times the snapshot.
const compactMin = 64

type journalFile struct {
	Gen   uint64 `json:"gen,omitempty"`
	Ports []Port `json:"ports"`
}

// logRecord is one line of the log: the header (Gen only), a hold (Put)
// or a release (Del).
type logRecord struct {
	Gen uint64 `json:"gen,omitempty"`
	Put *Port  `json:"put,omitempty"`
	Del string `json:"del,omitempty"`
}

// Journal is a holder's port journal. It is not safe for concurrent use:
// the holder calls it under its own lock, in the order of its changes.
type Journal struct {
	dir   string
	gen   uint64
	ports map[string]Port
	// appended counts the log's records since the snapshot; broken says
	// that an append failed, so the log may end in a torn record: the
	// next change compacts instead of appending after it.
	appended int
	broken   bool
}

// NewJournal replaces the journal in dir with ports. On error the
// journal is still usable: its next change retries the rewrite.
func NewJournal(dir string, ports []Port) (*Journal, error) {
	j := &Journal{dir: dir, ports: make(map[string]Port, len(ports))}
	for _, p := range ports {
		j.ports[p.ID] = p
	}
	if err := j.compact(); err != nil {
		j.broken = true
		return j, err
	}
	return j, nil
}

// unwrittenJournal is a journal of no ports that has not been written
// yet: its first change writes all of it.
func unwrittenJournal(dir string) *Journal {
	return &Journal{dir: dir, ports: make(map[string]Port), broken: true}
}

// Put journals a held port durably. On error the journal is as before.
func (j *Journal) Put(p Port) error {
	old, had := j.ports[p.ID]
	j.ports[p.ID] = p
	if err := j.change(logRecord{Put: &p}); err != nil {
		if had {
			j.ports[p.ID] = old
		} else {
			delete(j.ports, p.ID)
		}
		return err
	}
	return nil
}

// Delete journals a released port. The port is forgotten even on error
// (its fd is closed either way); the next change writes it down.
func (j *Journal) Delete(id string) error {
	if _, ok := j.ports[id]; !ok && !j.broken {
		return nil
	}
	delete(j.ports, id)
	return j.change(logRecord{Del: id})
}

// Reset replaces the journal with ports.
func (j *Journal) Reset(ports []Port) error {
	j.ports = make(map[string]Port, len(ports))
	for _, p := range ports {
		j.ports[p.ID] = p
	}
	return j.fold()
}

func (j *Journal) change(rec logRecord) error {
	if j.broken || j.appended >= compactMin+2*len(j.ports) {
		return j.fold()
	}
	if err := j.append(rec); err != nil {
		// Whether the record reached the disk is unknown: rewrite all
		// of it, and when that fails too, try again on the next change.
		if cerr := j.compact(); cerr != nil {
			j.broken = true
			return fmt.Errorf("port journal: %w", err)
		}
		return nil
	}
	j.appended++
	return nil
}

func (j *Journal) fold() error {
	if err := j.compact(); err != nil {
		j.broken = true
		return err
	}
	j.broken = false
	return nil
}

func (j *Journal) append(rec logRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// No O_CREATE: a log that vanished must not be replaced by one
	// without a header, whose records a reader would ignore.
	f, err := os.OpenFile(filepath.Join(j.dir, JournalLog), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(append(b, '\n'))
	if werr == nil {
		werr = unix.Fdatasync(int(f.Fd()))
	}
	return errors.Join(werr, f.Close())
}

// compact writes the snapshot under a new generation, then a log holding
// only the header. A crash in between leaves the old log beside the new
// snapshot: its generation differs, so it is ignored.
func (j *Journal) compact() error {
	gen := max(j.gen+1, uint64(time.Now().UnixNano()))
	ports := make([]Port, 0, len(j.ports))
	for _, p := range j.ports {
		ports = append(ports, p)
	}
	if err := writeSnapshot(j.dir, gen, ports); err != nil {
		return err
	}
	hdr, _ := json.Marshal(logRecord{Gen: gen})
	if err := replaceFile(j.dir, JournalLog, append(hdr, '\n')); err != nil {
		return fmt.Errorf("port journal: %w", err)
	}
	j.gen, j.appended = gen, 0
	return nil
}

// WriteJournal replaces the journal atomically and durably: a crash
// leaves either the old or the new list, never a torn one.
func WriteJournal(dir string, ports []Port) error {
	_, err := NewJournal(dir, ports)
	return err
}

// writeSnapshot writes ports.json; the ports are sorted by id so that
// equal sets give equal lists.
func writeSnapshot(dir string, gen uint64, ports []Port) error {
	ports = slices.Clone(ports)
	slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(journalFile{Gen: gen, Ports: ports}, "", "  ")
	if err != nil {
		return err
	}
	if err := replaceFile(dir, JournalFile, append(b, '\n')); err != nil {
		return fmt.Errorf("port journal: %w", err)
	}
	return nil
}

// replaceFile replaces dir/name with b: a temporary file, fsynced,
// renamed, the directory fsynced.
func replaceFile(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: ENOENT, harmless
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
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

// ReadJournal returns the journalled ports, sorted by id; none when there
// is no journal.
func ReadJournal(dir string) ([]Port, error) {
	b, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("port journal: %w", err)
	}
	var snap journalFile
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("port journal %s: %w", filepath.Join(dir, JournalFile), err)
	}
	ports := make(map[string]Port, len(snap.Ports))
	for _, p := range snap.Ports {
		ports[p.ID] = p
	}
	if err := replayLog(filepath.Join(dir, JournalLog), snap.Gen, ports); err != nil {
		return nil, err
	}
	out := make([]Port, 0, len(ports))
	for _, p := range ports {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Port) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// replayLog applies the log at path to ports when its header names gen.
func replayLog(path string, gen uint64, ports map[string]Port) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a journal of a version without the log
	}
	if err != nil {
		return fmt.Errorf("port journal: %w", err)
	}
	r := bufio.NewReader(bytes.NewReader(b))
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return nil // "": the end; otherwise a torn, unacknowledged record
		}
		var rec logRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("port journal %s line %d: %w", path, n, err)
		}
		switch {
		case n == 1:
			if rec.Gen != gen || rec.Put != nil || rec.Del != "" {
				return nil // stale: the snapshot was rewritten after it
			}
		case rec.Put != nil && rec.Put.ID != "":
			ports[rec.Put.ID] = *rec.Put
		case rec.Del != "":
			delete(ports, rec.Del)
		default:
			return fmt.Errorf("port journal %s line %d: neither a hold nor a release", path, n)
		}
	}
}
