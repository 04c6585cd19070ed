//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// digAnswer is what dig printed for one query.
type digAnswer struct {
	status string   // NOERROR, NXDOMAIN, …
	flags  []string // header flags: qr aa rd ra tc
	ttls   []int
	addrs  []string // A records, sorted
	raw    string
}

var (
	digStatus = regexp.MustCompile(`status: ([A-Z]+)`)
	digFlags  = regexp.MustCompile(`;; flags: ([a-z ]+);`)
)

// dig queries the resolver from inside ns. extra are dig options such as
// +tcp. dig retries over TCP by itself when the UDP answer is truncated.
func dig(t *testing.T, ns *netns, name, qtype string, extra ...string) digAnswer {
	t.Helper()
	args := append([]string{"dig", "@" + resolverAddr, "+time=2", "+tries=2", "+noall", "+comments", "+answer", name, qtype}, extra...)
	out, err := ns.run(15*time.Second, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	a := digAnswer{raw: out}
	m := digStatus.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dig %s %s from %s: no status in\n%s", name, qtype, ns.name, out)
	}
	a.status = m[1]
	if m := digFlags.FindStringSubmatch(out); m != nil {
		a.flags = strings.Fields(m[1])
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && !strings.HasPrefix(line, ";") && f[2] == "IN" {
			ttl, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("dig answer line %q", line)
			}
			a.ttls = append(a.ttls, ttl)
			if f[3] == "A" {
				a.addrs = append(a.addrs, f[4])
			}
		}
	}
	slices.Sort(a.addrs)
	return a
}

// wantA checks a NOERROR answer with exactly addrs, every TTL 30.
func wantA(t *testing.T, ns *netns, name string, addrs ...string) {
	t.Helper()
	a := dig(t, ns, name, "A")
	slices.Sort(addrs)
	if a.status != "NOERROR" || !slices.Equal(a.addrs, addrs) {
		t.Fatalf("%s from %s: %s %v, want NOERROR %v\n%s", name, ns.name, a.status, a.addrs, addrs, a.raw)
	}
	for _, ttl := range a.ttls {
		if ttl != 30 {
			t.Fatalf("%s: TTL %d, want 30\n%s", name, ttl, a.raw)
		}
	}
	if !slices.Contains(a.flags, "aa") {
		t.Fatalf("%s: not authoritative\n%s", name, a.raw)
	}
}

func wantStatus(t *testing.T, ns *netns, name, qtype, status string) {
	t.Helper()
	a := dig(t, ns, name, qtype)
	if a.status != status || len(a.addrs) != 0 {
		t.Fatalf("%s %s from %s: %s %v, want %s and no address\n%s", name, qtype, ns.name, a.status, a.addrs, status, a.raw)
	}
}

// TestDNS queries the router's resolver from containers with dig and
// getent: the name forms of DESIGN.md, TTL 30, isolation between networks,
// negative answers, forwarding to the (fake) upstream, and records that
// follow attach and detach.
func TestDNS(t *testing.T) {
	need(t)
	d := startDaemon(t)
	pn1, pn2, app := newID("pn"), newID("pn"), newID("ap")
	ns1, ns2, ns3, ns4 := newNetns(t), newNetns(t), newNetns(t), newNetns(t)
	web1 := d.attach(t, ns1, pn1, app, "web", "--write-resolv-conf")
	web2 := d.attach(t, ns2, pn1, app, "web")
	wrk := d.attach(t, ns3, pn1, app, "worker")
	other := d.attach(t, ns4, pn2, app, "web") // the same app in another network

	zone := "private-network.internal."
	appName := app + "." + pn1 + "." + zone

	// The four forms, asked from a worker of the network.
	wantA(t, ns3, appName, web1.IP, web2.IP)
	wantA(t, ns3, "web."+appName, web1.IP, web2.IP)
	wantA(t, ns3, "worker."+appName, wrk.IP)
	wantA(t, ns3, "1.web."+appName, web1.IP)
	wantA(t, ns3, "2.web."+appName, web2.IP)
	wantA(t, ns1, "1.worker."+appName, wrk.IP)
	// Case does not matter; over TCP too.
	wantA(t, ns1, strings.ToUpper("WORKER."+appName), wrk.IP)
	if a := dig(t, ns2, "web."+appName, "A", "+tcp"); a.status != "NOERROR" || len(a.addrs) != 2 {
		t.Fatalf("over TCP: %s %v\n%s", a.status, a.addrs, a.raw)
	}

	// Another network's names do not exist for pn2's container, and pn2's
	// own name of the same app answers with pn2's container only.
	wantStatus(t, ns4, appName, "A", "NXDOMAIN")
	wantStatus(t, ns4, "1.web."+appName, "A", "NXDOMAIN")
	wantA(t, ns4, app+"."+pn2+"."+zone, other.IP)

	// Negative answers.
	wantStatus(t, ns1, "web."+appName, "AAAA", "NOERROR") // NODATA
	wantStatus(t, ns1, "3.web."+appName, "A", "NXDOMAIN")
	wantStatus(t, ns1, "db."+appName, "A", "NXDOMAIN")

	// Other names go to the upstream (the tier's fake on loopback).
	wantUp := func(ns *netns, name string, n int) {
		t.Helper()
		a := dig(t, ns, name, "A")
		if a.status != "NOERROR" || len(a.addrs) != n {
			t.Fatalf("%s: %s with %d addresses, want NOERROR with %d\n%s", name, a.status, len(a.addrs), n, a.raw)
		}
	}
	wantUp(ns1, "hello.upstream.test.", 1)
	wantStatus(t, ns1, "nothing.upstream.test.", "A", "NXDOMAIN")
	// Too big for UDP: the daemon asks the upstream again over TCP, then
	// truncates for dig, which asks again over TCP.
	wantUp(ns2, "big.upstream.test.", bigRecords)
	if n := h.upstream.count("big.upstream.test.", "tcp"); n == 0 {
		t.Fatal("the upstream never saw a TCP query for the truncated answer")
	}

	// glibc's resolver, through the resolv.conf attach wrote for ns1.
	out, err := ns1.run(10*time.Second, "getent", "hosts", "2.web."+appName)
	if err != nil || !strings.HasPrefix(out, web2.IP+" ") {
		t.Fatalf("getent hosts in %s: %v\n%s", ns1.name, err, out)
	}
	out, err = ns1.run(10*time.Second, "getent", "ahostsv4", "hello.upstream.test")
	if err != nil || !strings.HasPrefix(out, "127.0.0.7 ") {
		t.Fatalf("getent ahostsv4 hello.upstream.test in %s: %v\n%s", ns1.name, err, out)
	}

	// Records follow the containers.
	d.mustCLI(t, "detach", web2.ID)
	wantA(t, ns3, appName, web1.IP)
	wantStatus(t, ns3, "2.web."+appName, "A", "NXDOMAIN")

	// The names subcommand lists the same.
	var names []struct {
		Name      string   `json:"name"`
		Network   string   `json:"network"`
		Addresses []string `json:"addresses"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI(t, "names", "--app", app, "--network", pn1, "--json").stdout), &names); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range names {
		got[n.Name] = strings.Join(n.Addresses, ",")
	}
	want := map[string]string{
		appName: web1.IP, "web." + appName: web1.IP, "worker." + appName: wrk.IP,
		"1.web." + appName: web1.IP, "1.worker." + appName: wrk.IP,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("names = %v, want %v", got, want)
	}

	var st struct {
		DNS struct {
			Rcodes   map[string]uint64 `json:"rcodes"`
			Counters map[string]uint64 `json:"counters"`
		} `json:"dns"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI(t, "status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.DNS.Rcodes["NOERROR"] == 0 || st.DNS.Rcodes["NXDOMAIN"] == 0 || st.DNS.Counters["forwarded"] == 0 || st.DNS.Counters["local"] == 0 {
		t.Fatalf("dns status %+v", st.DNS)
	}
}
