package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/vrouter/vrouter/internal/buildinfo"
)

// globalFlags may come before the command, as `docker -H` and `kubectl
// --context` do: `vrouter --control S peers`. They are handed to the
// command after its name, so each command still parses (and documents)
// them itself; the value flags take an argument.
var globalFlags = map[string]bool{"--control": true, "--json": false}

// hoistGlobalFlags moves the global flags found before the command to just
// after it. Anything else before the command is left for run to report.
func hoistGlobalFlags(args []string) ([]string, error) {
	var moved []string
	i := 0
	for i < len(args) {
		a := args[i]
		name, _, hasValue := strings.Cut(a, "=")
		takesValue, ok := globalFlags[name]
		if !ok {
			break
		}
		moved = append(moved, a)
		i++
		if takesValue && !hasValue {
			if i == len(args) {
				return nil, usagef("flag needs an argument: %s", name)
			}
			moved = append(moved, args[i])
			i++
		}
	}
	if len(moved) == 0 {
		return args, nil
	}
	if i == len(args) {
		return nil, usagef("%s given without a command (see vrouter --help)", strings.Join(moved, " "))
	}
	out := append([]string{args[i]}, moved...)
	return append(out, args[i+1:]...), nil
}

func cmdVersion(args []string, stdout io.Writer) error {
	fs := newFlags("version", "version [--json]", stdout)
	asJSON := fs.Bool("json", false, "print {\"version\": ...}")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments, got %q", fs.Args())
	}
	if *asJSON {
		return writeJSON(stdout, map[string]string{"version": buildinfo.Version()})
	}
	fmt.Fprintf(stdout, "vrouter %s\n", buildinfo.Version())
	return nil
}
