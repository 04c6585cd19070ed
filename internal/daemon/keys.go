package daemon

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/vrouter/vrouter/internal/keys"
)

const keySize = keys.Size

// readKeyFile reads a base64 key of keySize bytes from path.
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != keySize {
		return nil, fmt.Errorf("key file %s: want %d base64-encoded bytes (as printed by vrouter keygen)", path, keySize)
	}
	return k, nil
}

// loadOrCreateKey reads the key at path, or creates it (mode 0600) when it
// does not exist yet. created reports the latter, so the daemon can say
// where the new key is. An existing key must be private (checkPrivateFile):
// a key planted by someone else, or one others can read, is refused.
func loadOrCreateKey(path string) (key []byte, created bool, err error) {
	k, err := readKeyFile(path)
	if err == nil {
		if err := checkPrivateFile(path); err != nil {
			return nil, false, err
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	nk, err := keys.Generate()
	if err != nil {
		return nil, false, err
	}
	s := keys.Encode(nk)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("write key file %s: %w", path, err)
	}
	k, err = readKeyFile(path)
	return k, err == nil, err
}

// State-dir files of the node identity (cluster/identity.go).
const (
	signingKeyFile = "node.key"  // ed25519 seed, base64, 0600
	pinFile        = "pins.json" // peers' signing keys by name
)

// loadSigningKey reads (or creates on first start) the node's long-lived
// ed25519 signing key, kept as a base64 seed like the other key files. It
// is the node's identity to its peers, so it must be ours and private: a
// file readable by others, or owned by another user, is refused.
func loadSigningKey(path string) (ed25519.PrivateKey, error) {
	seed, created, err := loadOrCreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if !created {
		if err := checkPrivateFile(path); err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// checkGivenKeyFile refuses a key file the operator named
// (--cluster-key-file) that others could change or everybody could read.
// It may belong to another user (root) and be readable through a group.
func checkGivenKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o026 != 0 {
		return fmt.Errorf("%s has mode %04o: it must not be writable by others nor readable by everybody (chmod 600, or 640 for a group)", path, perm)
	}
	return nil
}

// checkStateDir refuses a state directory that is not a directory of the
// daemon's user, or that others may write to: whoever can write there can
// plant the keys or the control socket the daemon then trusts.
func checkStateDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not by the daemon's user (uid %d)", path, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s has mode %04o: others may write to it (chmod 700)", path, perm)
	}
	return nil
}

// checkPrivateFile refuses a file that is not a regular file owned by us
// with no group or other permissions.
func checkPrivateFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: it must not be readable by others (chmod 600)", path, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not by the daemon's user (uid %d)", path, st.Uid, os.Geteuid())
	}
	return nil
}
