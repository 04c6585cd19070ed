package cluster

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Node identity. The cluster key only keeps outsiders out: every holder can
// claim any name. So each node also signs what it says with a long-lived
// ed25519 key (Config.SigningKey, kept in its state dir by the daemon):
//
//   - its metadata carries the public key and is signed over the node's
//     name, so the key is bound to the name;
//   - the first key seen for a name is pinned (trust on first use, kept in
//     Config.PinFile); metadata under a pinned name with another key is
//     refused until an operator removes the pin (Cluster.Unpin);
//   - every store record is signed by its owner over (owner, key, boot,
//     version, claimed, deleted, value) and verified against the owner's
//     pinned key before it is merged, so only the owner can create, update
//     or tombstone its records.

// Domain prefixes keep a signature over one kind of message from being
// valid as another.
const (
	metaSigDomain   = "vrouter/meta/v2\x00"
	recordSigDomain = "vrouter/record/v2\x00"
)

// IdentityState says whether a peer's identity checked out.
type IdentityState int

const (
	// IdentityOK: signed metadata under the key pinned for its name.
	IdentityOK IdentityState = iota
	// IdentityUnsigned: metadata without a valid signature (an old
	// version, garbage, or a forgery); the node's records are not merged.
	IdentityUnsigned
	// IdentityKeyChanged: validly signed, but by another key than the one
	// pinned for the name; refused until the pin is removed.
	IdentityKeyChanged
)

func (s IdentityState) String() string {
	switch s {
	case IdentityOK:
		return "ok"
	case IdentityUnsigned:
		return "unsigned"
	case IdentityKeyChanged:
		return "key_changed"
	}
	return fmt.Sprintf("identity(%d)", int(s))
}

// Pin is the signing key bound to a node name.
type Pin struct {
	Name  string
	Key   [32]byte
	Since time.Time // when the key was first seen
}

// pins is the name → signing key table. Its mutex is a leaf: it is taken
// under Cluster.mu and Store.mu and calls out to nothing but the file
// system.
type pins struct {
	path string // "" = kept in memory only

	mu sync.Mutex
	m  map[string]Pin
}

// pinFile is the JSON layout of the pin file.
type pinFile struct {
	Version int                `json:"version"`
	Pins    map[string]pinJSON `json:"pins"`
}

type pinJSON struct {
	Key   []byte    `json:"key"` // base64 in JSON
	Since time.Time `json:"since"`
}

// loadPins reads path; a missing file is an empty table.
func loadPins(path string) (*pins, error) {
	p := &pins{path: path, m: make(map[string]Pin)}
	if path == "" {
		return p, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pin file: %w", err)
	}
	var f pinFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("pin file %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("pin file %s: unknown version %d", path, f.Version)
	}
	for name, pj := range f.Pins {
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("pin file %s: %w", path, err)
		}
		if len(pj.Key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("pin file %s: key of %q has %d bytes", path, name, len(pj.Key))
		}
		p.m[name] = Pin{Name: name, Key: [32]byte(pj.Key), Since: pj.Since}
	}
	return p, nil
}

// key returns the key pinned for name.
func (p *pins) key(name string) ([32]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pin, ok := p.m[name]
	return pin.Key, ok
}

// maxPins bounds the pin table: each new name costs a durable write, and
// a member can make up names as fast as it likes.
const maxPins = 4096

var errTooManyPins = errors.New("too many pinned names")

// check pins key to name if name is new. It reports whether key is the
// pinned one, and an error if a new pin could not be saved (the pin is
// kept in memory all the same: refusing the node would not help). A new
// name beyond maxPins is not pinned and not trusted (errTooManyPins).
func (p *pins) check(name string, key [32]byte, now time.Time) (ok bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pin, known := p.m[name]; known {
		return pin.Key == key, nil
	}
	if len(p.m) >= maxPins {
		return false, fmt.Errorf("%w (%d): %s not pinned", errTooManyPins, maxPins, name)
	}
	p.m[name] = Pin{Name: name, Key: key, Since: now}
	return true, p.saveLocked()
}

// remove drops name's pin. It reports whether there was one.
func (p *pins) remove(name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[name]; !ok {
		return false, nil
	}
	delete(p.m, name)
	return true, p.saveLocked()
}

func (p *pins) list() []Pin {
	p.mu.Lock()
	out := make([]Pin, 0, len(p.m))
	for _, pin := range p.m {
		out = append(out, pin)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// saveLocked writes the table atomically: a crash leaves the old file or
// the new one, never a torn one, and the rename is made durable, so a pin
// once used to refuse a key is not forgotten by a crash.
func (p *pins) saveLocked() error {
	if p.path == "" {
		return nil
	}
	f := pinFile{Version: 1, Pins: make(map[string]pinJSON, len(p.m))}
	for name, pin := range p.m {
		f.Pins[name] = pinJSON{Key: pin.Key[:], Since: pin.Since.UTC()}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode pins: %w", err)
	}
	if err := writeFileAtomic(p.path, append(b, '\n')); err != nil {
		return fmt.Errorf("save pins: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path (mode 0600) through a temporary file in
// the same directory, fsyncs it, renames it over path and fsyncs the
// directory.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// signer signs this node's records. The scratch buffer is reused under the
// store's mutex.
type signer struct {
	priv ed25519.PrivateKey
	pub  [32]byte
}

func newSigner(priv ed25519.PrivateKey) (*signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing key of %d bytes, need %d", len(priv), ed25519.PrivateKeySize)
	}
	return &signer{priv: priv, pub: [32]byte(priv.Public().(ed25519.PublicKey))}, nil
}

// signedRecordBytes is what a record's signature covers: the domain prefix
// and the record's wire encoding without its signature.
func signedRecordBytes(buf []byte, r *record) []byte {
	buf = append(buf[:0], recordSigDomain...)
	return appendRecordBody(buf, r)
}

func (s *signer) signRecord(buf []byte, r *record) []byte {
	buf = signedRecordBytes(buf, r)
	r.sig = [64]byte(ed25519.Sign(s.priv, buf))
	return buf
}

// verifyRecord checks r's signature against pub. buf is scratch space,
// returned for reuse.
func verifyRecord(buf []byte, pub [32]byte, r *record) ([]byte, bool) {
	buf = signedRecordBytes(buf, r)
	return buf, ed25519.Verify(pub[:], buf, r.sig[:])
}
