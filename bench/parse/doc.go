// Package parse reads the output of the programs the bench suite drives:
// iperf3's JSON (-J), sockperf's ping-pong summary and `go test -bench`
// lines. Every parser takes untrusted bytes, returns an error for anything
// it does not understand and never panics (see the fuzz targets).
package parse
