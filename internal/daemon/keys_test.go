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

// TestStateAndKeyFileChecks: what the daemon refuses to trust at start
// (AUDIT D11): a state directory others may write to, a key in it that
// others may read, an operator's key file anybody may read or others write.
func TestStateAndKeyFileChecks(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mkdir := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name  string
		check func(string) error
		path  string
		ok    bool
	}{
		{"private key", checkPrivateFile, mk("k600", 0o600), true},
		{"key readable by others", checkPrivateFile, mk("k644", 0o644), false},
		{"key readable by the group", checkPrivateFile, mk("k640", 0o640), false},
		{"given key 600", checkGivenKeyFile, mk("g600", 0o600), true},
		{"given key 640 for a group", checkGivenKeyFile, mk("g640", 0o640), true},
		{"given key readable by everybody", checkGivenKeyFile, mk("g644", 0o644), false},
		{"given key writable by the group", checkGivenKeyFile, mk("g660", 0o660), false},
		{"given key is a directory", checkGivenKeyFile, mkdir("gdir", 0o700), false},
		{"state dir 700", checkStateDir, mkdir("s700", 0o700), true},
		{"state dir 755", checkStateDir, mkdir("s755", 0o755), true},
		{"state dir writable by others", checkStateDir, mkdir("s777", 0o777), false},
		{"state dir writable by the group", checkStateDir, mkdir("s770", 0o770), false},
		{"state dir is a file", checkStateDir, mk("sfile", 0o600), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check(tt.path)
			if (err == nil) != tt.ok {
				t.Fatalf("check(%s) = %v, want ok=%v", tt.path, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("error %q does not name the path", err)
			}
		})
	}
	// The daemon refuses to start on such a state directory, before it
	// creates or reads anything in it.
	bad := mkdir("daemon-state", 0o777)
	fp := &fakePorts{}
	_, err := New(Config{Name: "n", StateDir: bad, Control: filepath.Join(dir, "c.sock"), OpenPort: fp.open, GossipNetwork: &gossipNet})
	if err == nil || !strings.Contains(err.Error(), "others may write") {
		t.Fatalf("New on a world-writable state dir: %v", err)
	}
	if ents, _ := os.ReadDir(bad); len(ents) != 0 {
		t.Fatalf("New left %d files in the refused state dir", len(ents))
	}
}
