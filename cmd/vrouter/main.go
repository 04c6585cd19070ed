// Command vrouter is the userspace virtual router: `vrouter run` is the
// daemon, the other subcommands talk to it over its control socket.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/vrouter/vrouter/internal/supervise"
	"github.com/vrouter/vrouter/internal/tunnel"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks bad command-line input (exit 2); any other error exits 1.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(args []string, stdout io.Writer) error
}

var commands, hiddenCommands []command

func init() {
	commands = []command{
		{"run", "run the router daemon", cmdRun},
		{"keygen", "print a new cluster key", cmdKeygen},
		{"attach", "attach a container's TUN device to a private network", cmdAttach},
		{"detach", "detach a container", cmdDetach},
		{"containers", "list attached containers", cmdContainers},
		{"status", "show the daemon's state and counters", cmdStatus},
		{"peers", "list the nodes of the cluster", cmdPeers},
		{"names", "list the DNS names of an app and what they resolve to", cmdNames},
		{"egress", "enable, disable or show an app's dedicated egress IPs", cmdEgress},
		{"gateway", "drain this gateway for maintenance, or undrain it", cmdGateway},
		{"upgrade", "hand the ports over to a new binary's worker without detaching anything", cmdUpgrade},
		{"version", "print the version of this binary", cmdVersion},
		{"completion", "print a bash or zsh completion script", cmdCompletion},
	}
	// Internal commands: neither in the usage nor in completion.
	hiddenCommands = []command{
		{tunnel.HelperCommand, "create or configure a TUN inside a user namespace (attach --userns)", cmdNetnsHelper},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	args, err := hoistGlobalFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "vrouter: %s\n", oneLine(err.Error()))
		return exitUsage
	}
	if len(args) > 0 && args[0] == "--version" {
		args = append([]string{"version"}, args[1:]...)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range slices.Concat(commands, hiddenCommands) {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout)
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, pflag.ErrHelp):
			return exitOK
		}
		var se *supervise.StartError
		if errors.As(err, &se) {
			return exitFailure // the worker printed its own error line
		}
		fmt.Fprintf(stderr, "vrouter: %s\n", oneLine(err.Error()))
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailure
	}
	fmt.Fprintf(stderr, "vrouter: unknown command %q (see vrouter --help)\n", args[0])
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: vrouter COMMAND [flags]")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nGlobal flags, before or after COMMAND: --control SOCK, --json.")
	fmt.Fprintln(w, "Run 'vrouter COMMAND --help' for the flags of a command, 'vrouter --version' for the version.")
}

// oneLine keeps every error on one line, as the CLI contract promises.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// lastFlags is the flag set the last newFlags call made: completion reads
// each command's flags from it after running the command with --help.
var lastFlags *pflag.FlagSet

// newFlags returns a flag set that reports errors instead of exiting and
// prints its usage only when asked (--help).
func newFlags(name, synopsis string, stdout io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	lastFlags = fs
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "usage: vrouter %s\n\n%s", synopsis, fs.FlagUsages())
	}
	return fs
}

// parse parses args and turns flag errors into usage errors.
func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.Usage()
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}
