package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/internal/buildinfo"
)

func TestHoistGlobalFlags(t *testing.T) {
	cases := []struct {
		in, want []string
	}{
		{[]string{"peers"}, []string{"peers"}},
		{[]string{"--control", "s", "peers", "--json"}, []string{"peers", "--control", "s", "--json"}},
		{[]string{"--control=s", "--json", "containers"}, []string{"containers", "--control=s", "--json"}},
		{[]string{"--json", "egress", "show"}, []string{"egress", "--json", "show"}},
		{[]string{"--help"}, []string{"--help"}},
		{[]string{"--version"}, []string{"--version"}},
	}
	for _, c := range cases {
		got, err := hoistGlobalFlags(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("hoist %q = %q %v, want %q", c.in, got, err, c.want)
		}
	}
}

func TestGlobalFlagsBadInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	checkBadInput(t, []badInput{
		{"control without value", []string{"--control"}, exitUsage, "needs an argument: --control"},
		{"global flag without command", []string{"--control", missing}, exitUsage, "without a command"},
		{"global flag before a command without it", []string{"--json", "keygen"}, exitUsage, "unknown flag"},
		// The flag before the command reaches the command: the socket it names is used.
		{"control before the command", []string{"--control", missing, "peers"}, exitFailure, "no control socket at " + missing},
		{"version extra arg", []string{"version", "x"}, exitUsage, "no arguments"},
		{"completion unknown shell", []string{"completion", "fish"}, exitUsage, "fish"},
		{"completion no shell", []string{"completion"}, exitUsage, "bash or zsh"},
		{"helper not in usage but reachable", []string{"__netns-helper"}, exitFailure, "want one argument"},
		{"bad mode", []string{"attach", "--control", missing, "--netns", "/x", "--network", pn, "--app", ap, "--type", "web", "--mode", "bridge"}, exitUsage, "--mode"},
		{"mode with fd", []string{"attach", "--control", missing, "--fd", "3", "--network", pn, "--app", ap, "--type", "web", "--mode", "pn-only"}, exitUsage, "--mode needs --netns"},
		{"userns without netns", []string{"attach", "--control", missing, "--fd", "3", "--network", pn, "--app", ap, "--type", "web", "--userns", "/proc/1/ns/user"}, exitUsage, "--userns needs --netns"},
	})
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitOK {
			t.Fatalf("%q: exit %d: %s", args, code, stderr.String())
		}
		if want := "vrouter " + buildinfo.Version() + "\n"; stdout.String() != want {
			t.Fatalf("%q printed %q, want %q", args, stdout.String(), want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--json", "version"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("--json version: exit %d: %s", code, stderr.String())
	}
	var v struct{ Version string }
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil || v.Version != buildinfo.Version() {
		t.Fatalf("--json version: %q %v", stdout.String(), err)
	}
}

func TestUsageHidesHelper(t *testing.T) {
	var stdout, stderr bytes.Buffer
	run([]string{"--help"}, &stdout, &stderr)
	if strings.Contains(stdout.String(), "__netns-helper") || !strings.Contains(stdout.String(), "completion") {
		t.Fatalf("usage:\n%s", stdout.String())
	}
}

func completionScript(t *testing.T, shell string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"completion", shell}, &stdout, &stderr); code != exitOK {
		t.Fatalf("completion %s: exit %d: %s", shell, code, stderr.String())
	}
	return stdout.String()
}

// TestBashCompletion loads the script into bash and asks it to complete,
// the way bash itself calls the function.
func TestBashCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	script := completionScript(t, "bash")
	cases := []struct {
		words []string // the last one is being completed
		want  []string
		not   []string
	}{
		{[]string{"vrouter", ""}, []string{"attach", "completion", "version", "--control"}, []string{"__netns-helper"}},
		{[]string{"vrouter", "at"}, []string{"attach"}, nil},
		{[]string{"vrouter", "attach", "--u"}, []string{"--userns"}, nil},
		{[]string{"vrouter", "attach", "--mode", ""}, []string{"full", "pn-only"}, nil},
		{[]string{"vrouter", "--control", "/tmp/s", "egress", ""}, []string{"enable", "disable", "show", "--app"}, nil},
		{[]string{"vrouter", "--json", "gateway", "un"}, []string{"undrain"}, []string{"drain"}},
		{[]string{"vrouter", "run", "--gossip-t"}, []string{"--gossip-timing"}, nil},
	}
	for _, c := range cases {
		var words []string
		for _, w := range c.words {
			words = append(words, "'"+w+"'")
		}
		prog := script + "\nCOMP_WORDS=(" + strings.Join(words, " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(c.words)-1) + "\n_vrouter\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v: %s", err, out)
		}
		got := strings.Fields(string(out))
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("complete %q: got %q, want %q among them", c.words, got, w)
			}
		}
		for _, w := range c.not {
			if slices.Contains(got, w) {
				t.Errorf("complete %q: got %q, want no %q", c.words, got, w)
			}
		}
	}
}

// TestZshCompletion checks the zsh script's syntax and that it names every
// command and flag of the table.
func TestZshCompletion(t *testing.T) {
	script := completionScript(t, "zsh")
	table, err := commandFlags()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range table {
		if !strings.Contains(script, "'"+c.name+":") {
			t.Errorf("zsh script lacks command %s", c.name)
		}
		for _, f := range c.flags {
			if !strings.Contains(script, "--"+f.Name+"[") {
				t.Errorf("zsh script lacks %s --%s", c.name, f.Name)
			}
		}
	}
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("no zsh to check the syntax (apt-get install zsh)")
	}
	cmd := exec.Command("zsh", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v: %s", err, out)
	}
}
