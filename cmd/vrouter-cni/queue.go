package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/internal/control"
)

// queue holds the deletions the daemon could not be told about when DEL
// ran. Each is one file named after its attachment; the next invocation
// that reaches the daemon (ADD, DEL, CHECK, GC, STATUS) applies them, as
// mature plugins do with their on-disk state. A daemon that is down has
// usually lost the port anyway (it dies with the process); a daemon that
// was only unreachable still holds it and must let it go.
type queue struct {
	dir  string // <dataDir>/pending-del
	sock string // the control socket these deletions are for
}

// pendingDel is one queued deletion.
type pendingDel struct {
	Control string                `json:"control"`
	CNI     control.CNIAttachment `json:"cni"`
}

func queueFor(conf *netConf) queue {
	return queue{dir: filepath.Join(conf.DataDir, "pending-del"), sock: conf.Control}
}

func (q queue) file(a control.CNIAttachment) string {
	sum := sha256.Sum256([]byte(q.sock + "\x00" + a.Network + "\x00" + a.ContainerID + "\x00" + a.IfName))
	return filepath.Join(q.dir, hex.EncodeToString(sum[:16])+".json")
}

// add records a deletion, replacing an earlier one of the same attachment.
func (q queue) add(a control.CNIAttachment) error {
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return fmt.Errorf("queue deletion: %w", err)
	}
	b, err := json.Marshal(pendingDel{Control: q.sock, CNI: a})
	if err != nil {
		return fmt.Errorf("queue deletion: %w", err)
	}
	tmp, err := os.CreateTemp(q.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("queue deletion: %w", err)
	}
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("queue deletion: %w", err)
	}
	if err := os.Rename(tmp.Name(), q.file(a)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("queue deletion: %w", err)
	}
	return nil
}

// forget drops a queued deletion of a (that has just been applied).
func (q queue) forget(a control.CNIAttachment) error {
	if err := os.Remove(q.file(a)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queued deletion: %w", err)
	}
	return nil
}

// pending lists the queued deletions for this queue's daemon. Unreadable
// entries are skipped: a half-written file is never renamed into place.
func (q queue) pending() ([]pendingDel, error) {
	ents, err := os.ReadDir(q.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queued deletions: %w", err)
	}
	var out []pendingDel
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(q.dir, e.Name()))
		if err != nil {
			continue
		}
		var p pendingDel
		if json.Unmarshal(b, &p) != nil || p.Control != q.sock {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// apply detaches every port a queued deletion names and drops the entries
// the daemon has acted on. It holds the queue's lock so that two plugin
// runs never detach the same port twice or drop an entry added meanwhile.
func (q queue) apply(d daemonClient) error {
	pend, err := q.pending()
	if err != nil || len(pend) == 0 {
		return err
	}
	unlock, err := q.lock()
	if err != nil {
		return err
	}
	defer unlock()
	ports, err := d.ports("")
	if err != nil {
		return err
	}
	for _, p := range pend {
		if err := detachMatching(d, ports, p.CNI); err != nil {
			return err
		}
		if err := q.forget(p.CNI); err != nil {
			return err
		}
	}
	return nil
}

// lock takes an exclusive flock on the queue directory's lock file.
func (q queue) lock() (unlock func(), err error) {
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue lock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(q.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("queue lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// detachMatching detaches the ports of attachment a among ports.
func detachMatching(d daemonClient, ports []control.Container, a control.CNIAttachment) error {
	for _, c := range ports {
		if c.CNI != nil && *c.CNI == a {
			if err := d.detach(c.ID); err != nil {
				return err
			}
		}
	}
	return nil
}
