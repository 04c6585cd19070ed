package dns

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestUpstreamsFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want []string // nil: error expected
	}{
		{"two servers", write("a", "# comment\nsearch example.test\nnameserver 192.0.2.1\nnameserver 2001:db8::1\noptions ndots:2\n"), []string{"192.0.2.1:53", "[2001:db8::1]:53"}},
		{"loopback stub", write("b", "nameserver 127.0.0.53\n"), []string{"127.0.0.53:53"}},
		{"none", write("c", "search example.test\n"), nil},
		{"empty", write("d", ""), nil},
		{"missing", filepath.Join(dir, "nope"), nil},
	}
	for _, tt := range tests {
		got, err := UpstreamsFromResolvConf(tt.path)
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: %v, want an error", tt.name, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, %v; want %v", tt.name, got, err, tt.want)
		}
		// What it returns is what New accepts.
		r, err := New(Config{View: staticView{}, Upstreams: got})
		if err != nil {
			t.Errorf("%s: New refuses %v: %v", tt.name, got, err)
			continue
		}
		r.Close()
	}
}
