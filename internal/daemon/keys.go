package daemon

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

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
// where the new key is.
func loadOrCreateKey(path string) (key []byte, created bool, err error) {
	k, err := readKeyFile(path)
	if err == nil {
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
