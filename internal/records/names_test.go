package records

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/vrouter/vrouter/dns"
)

// TestNameEditCopies checks that editing never changes an index that was
// published: DNS reads it without a lock.
func TestNameEditCopies(t *testing.T) {
	r := func(typ string, n int, ip string) dns.Record {
		return dns.Record{Type: typ, Number: n, Addr: netip.MustParseAddr(ip)}
	}
	ed := newNameEdit(&Names{})
	ed.add("pn", "app", r("web", 2, "10.240.0.2"))
	ed.add("pn", "app", r("web", 1, "10.240.0.1"))
	ed.add("pn", "app", r("worker", 1, "10.240.0.3"))
	ed.add("pn", "other", r("web", 1, "10.240.0.4"))
	x0 := ed.x
	want0 := fmt.Sprint(x0.byNet)
	if got := fmt.Sprint(x0.Containers("pn", "app")); got != "[{web 1 10.240.0.1} {web 2 10.240.0.2} {worker 1 10.240.0.3}]" {
		t.Fatalf("records not sorted by type and number: %s", got)
	}
	ed = newNameEdit(x0)
	ed.remove("pn", "app", r("web", 1, "10.240.0.1"))
	ed.add("pn", "app", r("web", 3, "10.240.0.5"))
	ed.remove("pn", "other", r("web", 1, "10.240.0.4"))
	ed.add("pn2", "app", r("web", 1, "10.240.0.1"))
	if got := fmt.Sprint(x0.byNet); got != want0 {
		t.Fatalf("edit changed the published index:\n got %s\nwant %s", got, want0)
	}
	if got := fmt.Sprint(ed.x.byNet); got != "map[pn:map[app:[{web 2 10.240.0.2} {web 3 10.240.0.5} {worker 1 10.240.0.3}]] pn2:map[app:[{web 1 10.240.0.1}]]]" {
		t.Fatalf("edited index: %s", got)
	}
	if got := ed.x.Networks(); !slices.Equal(got, []string{"pn", "pn2"}) {
		t.Fatalf("Networks() = %v", got)
	}
	// Removing the last record of a network drops the network.
	ed = newNameEdit(ed.x)
	ed.remove("pn2", "app", r("web", 1, "10.240.0.1"))
	if _, ok := ed.x.byNet["pn2"]; ok || !ed.changed {
		t.Fatalf("empty network kept: %v", ed.x.byNet)
	}
}
