package paths

import (
	"strings"
	"testing"
)

func TestStateDir(t *testing.T) {
	for _, tt := range []struct {
		name    string
		env     map[string]string
		euid    int
		want    string
		wantErr string
	}{
		{"root", map[string]string{"HOME": "/root"}, 0, "/var/lib/vrouter", ""},
		{"root ignores XDG", map[string]string{"XDG_STATE_HOME": "/x"}, 0, "/var/lib/vrouter", ""},
		{"systemd", map[string]string{"STATE_DIRECTORY": "/var/lib/vr", "HOME": "/h"}, 998, "/var/lib/vr", ""},
		{"systemd, several", map[string]string{"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, 0, "/var/lib/a", ""},
		{"systemd, relative ignored", map[string]string{"STATE_DIRECTORY": "rel", "HOME": "/h"}, 1000, "/h/.local/state/vrouter", ""},
		{"XDG", map[string]string{"XDG_STATE_HOME": "/x/state", "HOME": "/h"}, 1000, "/x/state/vrouter", ""},
		{"XDG relative ignored", map[string]string{"XDG_STATE_HOME": "state", "HOME": "/h"}, 1000, "/h/.local/state/vrouter", ""},
		{"home", map[string]string{"HOME": "/home/u/"}, 1000, "/home/u/.local/state/vrouter", ""},
		{"no home", map[string]string{}, 1000, "", "$HOME"},
		{"relative home", map[string]string{"HOME": "."}, 1000, "", "--state-dir"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			got, err := StateDir(getenv, tt.euid)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("StateDir = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				if _, err := ControlSocket(getenv, tt.euid); err == nil {
					t.Errorf("ControlSocket: no error")
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("StateDir = %q, %v; want %q", got, err, tt.want)
			}
			if s, err := ControlSocket(getenv, tt.euid); err != nil || s != tt.want+"/control.sock" {
				t.Errorf("ControlSocket = %q, %v", s, err)
			}
		})
	}
}
