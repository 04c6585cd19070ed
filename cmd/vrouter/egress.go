package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

func cmdEgress(args []string, stdout io.Writer) error {
	fs := newFlags("egress", "egress enable|disable|show [--app APP] [--json] [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	app := fs.String("app", "", "application id (ap-<uuid>); required for enable and disable")
	asJSON := fs.Bool("json", false, "print JSON (enable, disable: an object; show: an array)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("egress takes one action: enable, disable or show")
	}
	action := fs.Arg(0)
	switch action {
	case control.EgressEnable, control.EgressDisable:
		if *app == "" {
			return usagef("egress %s needs --app", action)
		}
	case control.EgressShow:
	default:
		return usagef("unknown egress action %q (want enable, disable or show)", action)
	}
	if *app != "" {
		if err := ids.App(*app); err != nil {
			return usagef("--app: %v", err)
		}
	}
	req := &control.Request{Op: control.OpEgress, Egress: &control.EgressRequest{Action: action, App: *app}}
	path := *sock
	switch action {
	case control.EgressShow:
		var rows []control.EgressApp
		if err := call(path, req, nil, &rows); err != nil {
			return err
		}
		if rows == nil {
			rows = []control.EgressApp{}
		}
		if *asJSON {
			return writeJSON(stdout, rows)
		}
		if len(rows) == 0 {
			fmt.Fprintln(stdout, "no app has dedicated egress")
			return nil
		}
		return printEgress(stdout, rows)
	case control.EgressEnable:
		var r control.EgressApp
		if err := call(path, req, nil, &r); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, r)
		}
		return printEgress(stdout, []control.EgressApp{r})
	default:
		var r control.EgressApp
		if err := call(path, req, nil, &r); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, r)
		}
		var released []string
		for _, ip := range r.IPs {
			released = append(released, ip.IP+" ("+ip.Gateway+")")
		}
		fmt.Fprintf(stdout, "disabled dedicated egress of %s; released %s\n", r.App, strings.Join(released, ", "))
		return nil
	}
}

// printEgress prints the table of show (and enable): one line per IP,
// primary first.
func printEgress(w io.Writer, rows []control.EgressApp) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tIP\tGATEWAY\tHEALTH\tACTIVE\tROLE")
	for _, r := range rows {
		for _, ip := range r.IPs {
			active, role := "no", "standby"
			if ip.Active {
				active = "yes"
			}
			if ip.Primary {
				role = "primary"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.App, ip.IP, ip.Gateway, ip.Health, active, role)
		}
	}
	return tw.Flush()
}

func cmdGateway(args []string, stdout io.Writer) error {
	fs := newFlags("gateway", "gateway drain|undrain [--json] [flags]", stdout)
	sock := fs.String("control", "", "control socket of the gateway (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	asJSON := fs.Bool("json", false, "print a JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("gateway takes one action: drain or undrain")
	}
	action := fs.Arg(0)
	if action != control.GatewayDrain && action != control.GatewayUndrain {
		return usagef("unknown gateway action %q (want drain or undrain)", action)
	}
	var st control.GatewayState
	req := &control.Request{Op: control.OpGateway, Gateway: &control.GatewayRequest{Action: action}}
	if err := call(*sock, req, nil, &st); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	if st.Draining {
		fmt.Fprintf(stdout, "gateway %s is draining: no new dedicated egress flows; existing flows finish (egress IPs %s)\n", st.Node, strings.Join(st.EgressIPs, " "))
	} else {
		fmt.Fprintf(stdout, "gateway %s is in service (egress IPs %s)\n", st.Node, strings.Join(st.EgressIPs, " "))
	}
	return nil
}
