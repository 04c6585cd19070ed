// Package loadgen holds the load generators the bench suite runs inside
// container namespaces (bench/cmd/dnsload, bench/cmd/connload) and the
// loopback servers they are aimed at. Every run is bounded by a duration
// and a context; each worker owns one socket at a time.
package loadgen

import (
	"context"
	"time"

	"github.com/vrouter/vrouter/bench/stats"
)

// Result is what a load run prints (as JSON) and the driver reads back.
type Result struct {
	Kind        string  `json:"kind"` // "dns" or "tcp-connect"
	Target      string  `json:"target"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Sent        uint64  `json:"sent"`      // queries or connection attempts started
	Completed   uint64  `json:"completed"` // answered queries, finished exchanges
	Timeouts    uint64  `json:"timeouts"`
	Errors      uint64  `json:"errors"`
	PerSecond   float64 `json:"per_second"` // Completed / Seconds
	// DNS only: responses by rcode name, and NOERROR responses without an
	// answer record.
	Rcodes     map[string]uint64 `json:"rcodes,omitempty"`
	NoAnswer   uint64            `json:"no_answer,omitempty"`
	LatencyUS  stats.Summary     `json:"latency_us"` // of completed operations, microseconds
	Histogram  []stats.Bucket    `json:"histogram_us,omitempty"`
	FirstError string            `json:"first_error,omitempty"`
}

// worker is one load goroutine's tally; merged into a Result at the end so
// that the hot loop takes no lock.
type worker struct {
	sent, completed, timeouts, errors, noAnswer uint64
	rcodes                                      map[int]uint64
	latUS                                       []float64
	firstErr                                    error
	end                                         time.Time // the run's planned end
}

// over reports whether the run has ended: by its duration or by ctx.
// Checking the clock as well as ctx keeps an operation that failed at the
// very end (its deadline is the run's) from counting as a timeout.
func (w *worker) over(ctx context.Context) bool {
	return ctx.Err() != nil || !time.Now().Before(w.end)
}

func (w *worker) fail(err error) {
	w.errors++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

func merge(kind, target string, conc int, seconds float64, ws []*worker, rcodeName func(int) string) Result {
	r := Result{Kind: kind, Target: target, Concurrency: conc, Seconds: seconds}
	var lat []float64
	for _, w := range ws {
		r.Sent += w.sent
		r.Completed += w.completed
		r.Timeouts += w.timeouts
		r.Errors += w.errors
		r.NoAnswer += w.noAnswer
		lat = append(lat, w.latUS...)
		if w.firstErr != nil && r.FirstError == "" {
			r.FirstError = w.firstErr.Error()
		}
		for c, n := range w.rcodes {
			if r.Rcodes == nil {
				r.Rcodes = make(map[string]uint64)
			}
			r.Rcodes[rcodeName(c)] += n
		}
	}
	if seconds > 0 {
		r.PerSecond = float64(r.Completed) / seconds
	}
	r.Histogram = stats.Log2Histogram(lat, 1)
	r.LatencyUS = stats.Summarize(lat)
	return r
}
