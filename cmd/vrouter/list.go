package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

func cmdDetach(args []string, stdout io.Writer) error {
	fs := newFlags("detach", "detach ID [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("detach takes one container id")
	}
	id := fs.Arg(0)
	if err := call(*sock, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: id}}, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "detached %s\n", id)
	return nil
}

func cmdContainers(args []string, stdout io.Writer) error {
	fs := newFlags("containers", "containers [--json] [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("containers takes no arguments")
	}
	var cs []control.Container
	if err := call(*sock, &control.Request{Op: "containers"}, nil, &cs); err != nil {
		return err
	}
	if cs == nil {
		cs = []control.Container{}
	}
	if *asJSON {
		return writeJSON(stdout, cs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNETWORK\tAPP\tTYPE\tNUMBER\tIP\tNODE")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.ID, c.Network, c.App, c.Type, c.Number, c.IP, c.Node)
	}
	return tw.Flush()
}

func cmdStatus(args []string, stdout io.Writer) error {
	fs := newFlags("status", "status [--json] [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	asJSON := fs.Bool("json", false, "print a JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("status takes no arguments")
	}
	var st control.Status
	if err := call(*sock, &control.Request{Op: "status"}, nil, &st); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "node:       %s\n", st.Node)
	fmt.Fprintf(stdout, "version:    %s\n", st.Version)
	fmt.Fprintf(stdout, "uptime:     %.0fs\n", st.UptimeSeconds)
	fmt.Fprintf(stdout, "worker:     pid %d since %s\n", st.Pid, st.StartedAt.Format(time.RFC3339))
	if sv := st.Supervisor; sv != nil {
		fmt.Fprintf(stdout, "supervisor: pid %d, %d restarts, %d upgrades", st.SupervisorPID, st.Restarts, sv.Upgrades)
		if sv.LastExit != "" {
			fmt.Fprintf(stdout, ", last worker: %s", sv.LastExit)
		}
		if sv.CrashLoop {
			fmt.Fprintf(stdout, ", CRASH LOOP (backoff %.2fs)", sv.BackoffSeconds)
		}
		if sv.LastUpgrade != "" && sv.LastUpgrade != "ok" {
			fmt.Fprintf(stdout, ", last upgrade failed: %s", sv.LastUpgrade)
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "control:    %s\n", st.Control)
	fmt.Fprintf(stdout, "mtu:        %d\n", st.MTU)
	fmt.Fprintf(stdout, "containers: %d in %d networks\n", st.Containers, st.Networks)
	printCounters(stdout, "counters:", st.Counters)
	printCounters(stdout, "drops:", st.Drops)
	if st.DNS != nil {
		up := "none (names outside the private zone fail)"
		if len(st.DNS.Upstreams) > 0 {
			up = strings.Join(st.DNS.Upstreams, " ")
		}
		fmt.Fprintf(stdout, "dns:        %s, upstreams %s\n", st.DNS.Resolver, up)
		printCounters(stdout, "dns responses:", st.DNS.Rcodes)
		printCounters(stdout, "dns counters:", st.DNS.Counters)
	}
	if st.Egress != nil {
		printCounters(stdout, "egress:", st.Egress)
	}
	if st.Cluster != nil {
		printCounters(stdout, "cluster:", st.Cluster)
	}
	for _, a := range st.Alarms {
		fmt.Fprintf(stdout, "ALARM:      %s\n", a)
	}
	return nil
}

func cmdNames(args []string, stdout io.Writer) error {
	fs := newFlags("names", "names --app APP [--network PN] [--json] [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	app := fs.String("app", "", "application id (ap-<uuid>), required")
	network := fs.String("network", "", "only this private network (pn-<uuid>)")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("names takes no arguments")
	}
	if *app == "" {
		return usagef("names needs --app")
	}
	if err := ids.App(*app); err != nil {
		return usagef("--app: %v", err)
	}
	if *network != "" {
		if err := ids.Network(*network); err != nil {
			return usagef("--network: %v", err)
		}
	}
	var names []control.Name
	req := &control.Request{Op: "names", Names: &control.NamesRequest{App: *app, Network: *network}}
	if err := call(*sock, req, nil, &names); err != nil {
		return err
	}
	if names == nil {
		names = []control.Name{}
	}
	if *asJSON {
		return writeJSON(stdout, names)
	}
	if len(names) == 0 {
		where := "any network"
		if *network != "" {
			where = *network
		}
		fmt.Fprintf(stdout, "%s has no containers in %s\n", *app, where)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESSES")
	for _, n := range names {
		addrs := strings.Join(n.Addresses, " ")
		if addrs == "" {
			addrs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", n.Name, addrs)
	}
	return tw.Flush()
}

func printCounters(w io.Writer, title string, m map[string]uint64) {
	fmt.Fprintln(w, title)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-22s %d\n", k, m[k])
	}
}

func cmdPeers(args []string, stdout io.Writer) error {
	fs := newFlags("peers", "peers [--json] [flags]\n       vrouter peers unpin NAME [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 && fs.Arg(0) == "unpin" {
		if *asJSON {
			return usagef("peers unpin takes no --json")
		}
		return peersUnpin(*sock, fs.Args()[1:], stdout)
	}
	if fs.NArg() > 0 {
		return usagef("peers takes no arguments (or: peers unpin NAME)")
	}
	var ps []control.Peer
	if err := call(*sock, &control.Request{Op: "peers"}, nil, &ps); err != nil {
		return err
	}
	if ps == nil {
		ps = []control.Peer{}
	}
	if *asJSON {
		return writeJSON(stdout, ps)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tIDENTITY\tOVERLAY\tPUBLIC KEY\tLAST HANDSHAKE\tCONFLICT")
	for _, p := range ps {
		name, hs := p.Name, "-"
		if p.Self {
			name += " (self)"
		}
		if p.LastHandshake != nil {
			hs = p.LastHandshake.Format("15:04:05")
		}
		key := p.PublicKey
		if key == "" {
			key = "-"
		}
		conflict := p.Conflict
		if conflict == "" {
			conflict = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, p.Address, p.State, p.Identity, p.Overlay, key, hs, conflict)
	}
	return tw.Flush()
}

// peersUnpin removes the signing key pinned to a peer's name: after a
// node was reinstalled (new state dir, new key), its peers refuse it
// until this is run on each of them.
func peersUnpin(sock string, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usagef("peers unpin takes one node name")
	}
	name := args[0]
	if name == "" || len(name) > cluster.MaxNameLen {
		return usagef("node name of %d bytes (1..%d)", len(name), cluster.MaxNameLen)
	}
	req := &control.Request{Op: control.OpUnpin, Unpin: &control.UnpinRequest{Name: name}}
	if err := call(sock, req, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unpinned %s: the next signing key it presents will be trusted\n", name)
	return nil
}
