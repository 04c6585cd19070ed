// Package e2e is the end-to-end test tier: a real bin/vrouter daemon run as
// the unprivileged user nobody, containers that are network namespaces with
// real TUN devices made by `vrouter attach`, and traffic between them made by
// ordinary programs (ping, nc, iperf3) run with `ip netns exec`.
//
// The tests carry the build tag e2e so that `go test ./...` never needs root.
// They must run as root (namespaces, TUN devices, setpriv):
//
//	make build
//	go test -count=1 -tags e2e -v ./internal/e2e/ -args -vrouter=$PWD/bin/vrouter
//
// The binary is taken from -vrouter, else $VROUTER_BIN, else ../../bin/vrouter
// (the repository's bin/ seen from this directory). Without root the tests
// skip, unless CI=true, where a test that cannot run fails. `make test` runs
// this tier after the unprivileged ones.
//
// Every test sends traffic only inside namespaces it created, and removes its
// namespaces and daemons by name and PID in t.Cleanup, also when it fails.
package e2e
