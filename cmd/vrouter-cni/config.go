package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/internal/tunnel"
)

// defaultDataDir holds the deletions queued while the daemon did not
// answer. Under /run: the ports they name do not survive a reboot either.
const defaultDataDir = "/run/vrouter-cni"

// Plugin-specific error codes (the spec leaves 100 and up to plugins).
const (
	codeConflict = 100 // the daemon refused: address, number or namespace taken
	codeFull     = 101 // the private network has no free address
	codeNoPort   = 102 // CHECK: the daemon no longer holds the container's port
)

// netConf is the network configuration: the CNI common keys plus ours.
type netConf struct {
	types.NetConf
	Network string `json:"network"` // PN id
	Control string `json:"control"` // the daemon's control socket
	MTU     int    `json:"mtu,omitempty"`
	Mode    string `json:"mode,omitempty"`
	DataDir string `json:"dataDir,omitempty"`
	// Args carries per-container values the runtime (or the file itself)
	// sets, under the "cni" key of the conventions document.
	Args *struct {
		CNI *containerArgs `json:"cni,omitempty"`
	} `json:"args,omitempty"`

	mode tunnel.Mode
}

// containerArgs name the container in its app.
type containerArgs struct {
	App    string      `json:"app,omitempty"`
	Type   string      `json:"type,omitempty"`
	Number json.Number `json:"number,omitempty"`
}

// envArgs are the CNI_ARGS keys we read; others are ignored.
type envArgs struct {
	types.CommonArgs
	APP    types.UnmarshallableString
	TYPE   types.UnmarshallableString
	NUMBER types.UnmarshallableString
}

// parseConf decodes and checks the network configuration. Errors are CNI
// errors with the code the spec gives for them.
func parseConf(stdin []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "vrouter-cni: malformed network configuration", err.Error())
	}
	bad := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, "vrouter-cni: "+fmt.Sprintf(format, a...), "")
	}
	if conf.Network == "" {
		return nil, bad("network configuration %q has no \"network\" (the private network id, pn-<uuid>)", conf.Name)
	}
	if err := ids.Network(conf.Network); err != nil {
		return nil, bad("\"network\": %v", err)
	}
	if conf.Control == "" {
		return nil, bad("network configuration %q has no \"control\" (the vrouter daemon's control socket)", conf.Name)
	}
	// A runtime runs the plugin in a working directory of its choosing: a
	// relative path would name a different socket from run to run.
	if !filepath.IsAbs(conf.Control) {
		return nil, bad("\"control\" %q is a relative path: give the daemon's control socket as an absolute path", conf.Control)
	}
	if conf.MTU < 0 || (conf.MTU > 0 && conf.MTU < 576) || conf.MTU > 65535 {
		return nil, bad("\"mtu\" %d: want 576-65535, or 0 for the daemon's", conf.MTU)
	}
	if conf.Mode == "" {
		conf.mode = tunnel.ModePNOnly
	} else {
		m, err := tunnel.ParseMode(conf.Mode)
		if err != nil {
			return nil, bad("\"mode\": %v", err)
		}
		conf.mode = m
	}
	if conf.DataDir == "" {
		conf.DataDir = defaultDataDir
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "vrouter-cni: prevResult", err.Error())
	}
	return conf, nil
}

// identity is who the container is in its app.
type identity struct {
	App, Type string
	Number    int // 0: the daemon picks the lowest free
}

// containerIdentity takes app, type and number from CNI_ARGS, else from the
// configuration's args.cni. CNI_ARGS wins key by key: a runtime that sets
// NUMBER per container still gets app and type from the file.
func containerIdentity(conf *netConf, args *skel.CmdArgs) (identity, error) {
	var env envArgs
	if err := types.LoadArgs(withIgnoreUnknown(args.Args), &env); err != nil {
		return identity{}, types.NewError(types.ErrInvalidEnvironmentVariables, "vrouter-cni: CNI_ARGS: "+err.Error(), "")
	}
	var file containerArgs
	if conf.Args != nil && conf.Args.CNI != nil {
		file = *conf.Args.CNI
	}
	pick := func(env types.UnmarshallableString, file string) string {
		if env != "" {
			return string(env)
		}
		return file
	}
	id := identity{App: pick(env.APP, file.App), Type: pick(env.TYPE, file.Type)}
	num := pick(env.NUMBER, file.Number.String())
	bad := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, "vrouter-cni: "+fmt.Sprintf(format, a...), "")
	}
	if id.App == "" {
		return identity{}, bad("no app for the container: set APP=ap-<uuid> in CNI_ARGS or \"args\": {\"cni\": {\"app\": ...}}")
	}
	if err := ids.App(id.App); err != nil {
		return identity{}, bad("%v", err)
	}
	if id.Type == "" {
		return identity{}, bad("no type for the container: set TYPE (e.g. web) in CNI_ARGS or \"args\": {\"cni\": {\"type\": ...}}")
	}
	if err := ids.Type(id.Type); err != nil {
		return identity{}, bad("%v", err)
	}
	if num != "" {
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 {
			return identity{}, bad("container number %q: want a positive integer", num)
		}
		id.Number = n
	}
	return id, nil
}

// withIgnoreUnknown makes LoadArgs skip the keys other plugins and
// runtimes put in CNI_ARGS (K8S_POD_NAME, MAC, IP, ...).
func withIgnoreUnknown(args string) string {
	if strings.TrimSpace(args) == "" {
		return ""
	}
	return "IgnoreUnknown=1;" + args
}
