package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadSigningKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), signingKeyFile)
	k1, err := loadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created key file: %v, %v", fi, err)
	}
	k2, err := loadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("the signing key changed across loads")
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSigningKey(path); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("group-readable key file: %v", err)
	}
	link := filepath.Join(t.TempDir(), "link.key")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSigningKey(link); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlinked key file: %v", err)
	}
}

// TestPinFileChecked: a pin file others can write would let them choose
// the keys this node trusts; the daemon refuses to start on it.
func TestPinFileChecked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pinFile), []byte(`{"version":1,"pins":{}}`), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, pinFile), 0o666); err != nil {
		t.Fatal(err)
	}
	fp := &fakePorts{}
	_, err := New(Config{Name: "test-node", StateDir: dir, Control: filepath.Join(dir, "c.sock"), OpenPort: fp.open, GossipNetwork: &gossipNet})
	if err == nil || !strings.Contains(err.Error(), "pinned signing keys") {
		t.Fatalf("New with a world-writable pin file: %v", err)
	}
}
