package main

import (
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

// FuzzConfig feeds the network configuration (the runtime's stdin) and
// CNI_ARGS through the plugin's parsers: they must return a value or an
// error, never panic.
func FuzzConfig(f *testing.F) {
	f.Add(conf(""), "APP="+testApp+";TYPE=web")
	f.Add(conf(`,"args":{"cni":{"app":"`+testApp+`","type":"web","number":2}}`), "")
	f.Add(conf(`,"mode":"full","mtu":1280,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.240.0.1/22"}]}`), "IgnoreUnknown=1;K8S_POD_NAME=x")
	f.Add([]byte(`{"args":{"cni":{"number":"x"}}}`), "NUMBER==;;")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := parseConf(stdin)
		if err != nil {
			return
		}
		_, _ = containerIdentity(c, &skel.CmdArgs{Args: cniArgs})
	})
}
