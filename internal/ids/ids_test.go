package ids

import (
	"slices"
	"strings"
	"testing"
)

const (
	pn = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	ap = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
)

func TestNetworkAndApp(t *testing.T) {
	tests := []struct {
		in      string
		network bool
		app     bool
	}{
		{pn, true, false},
		{ap, false, true},
		{"pn-AD0FD6A1-D05E-40EA-BF63-C4F8A75A9D8C", false, false},
		{"pn-ad0fd6a1d05e40eabf63c4f8a75a9d8c", false, false},
		{"pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8", false, false},
		{"pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8cc", false, false},
		{"pn-ad0fd6a1-d05e-40ea-bf63_c4f8a75a9d8c", false, false},
		{"pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8g", false, false},
		{"", false, false},
		{"pn-", false, false},
	}
	for _, tt := range tests {
		if got := Network(tt.in) == nil; got != tt.network {
			t.Errorf("Network(%q) ok = %v, want %v", tt.in, got, tt.network)
		}
		if got := App(tt.in) == nil; got != tt.app {
			t.Errorf("App(%q) ok = %v, want %v", tt.in, got, tt.app)
		}
		if got := IsNetwork(tt.in); got != tt.network {
			t.Errorf("IsNetwork(%q) = %v, want %v", tt.in, got, tt.network)
		}
		if got := IsApp(tt.in); got != tt.app {
			t.Errorf("IsApp(%q) = %v, want %v", tt.in, got, tt.app)
		}
	}
}

func TestType(t *testing.T) {
	good := []string{"web", "worker", "a", "a-1", "x0-y", strings.Repeat("a", 63)}
	bad := []string{"", "Web", "1web", "-web", "web_1", "web.1", "wéb", strings.Repeat("a", 64)}
	for _, s := range good {
		if err := Type(s); err != nil {
			t.Errorf("Type(%q) = %v, want nil", s, err)
		}
		if !IsType(s) {
			t.Errorf("IsType(%q) = false, want true", s)
		}
	}
	for _, s := range bad {
		if err := Type(s); err == nil {
			t.Errorf("Type(%q) = nil, want error", s)
		}
		if IsType(s) {
			t.Errorf("IsType(%q) = true, want false", s)
		}
	}
}

// The resolver checks query labels with the predicates on its hot path.
func TestPredicatesDoNotAllocate(t *testing.T) {
	bad := "ap-a71da13f-7c70-4c00-a644-eee8558d805G"
	var ok int
	if n := testing.AllocsPerRun(100, func() {
		for _, b := range []bool{IsApp(ap), IsApp(bad), IsNetwork(pn), IsType("web"), IsType("Web")} {
			if b {
				ok++
			}
		}
	}); n != 0 {
		t.Fatalf("%v allocations per run, want 0", n)
	}
	if ok != 3*101 {
		t.Fatalf("%d predicates held, want %d", ok, 3*101)
	}
}

func TestNames(t *testing.T) {
	got := Names(pn, ap, "web", 1)
	want := []string{
		"1.web." + ap + "." + pn + ".private-network.internal.",
		"web." + ap + "." + pn + ".private-network.internal.",
		ap + "." + pn + ".private-network.internal.",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Names(web) = %q, want %q", got, want)
	}
	got = Names(pn, ap, "worker", 12)
	want = []string{
		"12.worker." + ap + "." + pn + ".private-network.internal.",
		"worker." + ap + "." + pn + ".private-network.internal.",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Names(worker) = %q, want %q", got, want)
	}
}
