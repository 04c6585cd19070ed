package parse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Sockperf is the summary of a `sockperf ping-pong` client run, in
// microseconds. With --full-rtt the figures are round trips; without it
// sockperf halves them (FullRTT false).
type Sockperf struct {
	FullRTT      bool
	Observations int64
	Avg          float64
	Min, Max     float64
	// Percentiles by their label in sockperf's output ("50.000" → 50).
	Percentiles map[float64]float64
}

// P returns the percentile p as sockperf printed it, and whether it did.
func (s Sockperf) P(p float64) (float64, bool) {
	v, ok := s.Percentiles[p]
	return v, ok
}

var (
	ansi        = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	spAvg       = regexp.MustCompile(`avg-(rtt|lat)=\s*([0-9.]+)`)
	spPerc      = regexp.MustCompile(`--->\s+percentile\s+([0-9.]+)\s*=\s*([0-9.]+)`)
	spMinMax    = regexp.MustCompile(`--->\s+<(MIN|MAX)>\s+observation\s*=\s*([0-9.]+)`)
	spObserved  = regexp.MustCompile(`Total\s+([0-9]+)\s+observations`)
	errSockperf = errors.New("sockperf output without a latency summary")
)

// ParseSockperf reads the statistics block that sockperf ping-pong prints
// at the end of a run (colour escapes allowed).
func ParseSockperf(out []byte) (Sockperf, error) {
	s := Sockperf{Percentiles: make(map[float64]float64)}
	haveAvg := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := ansi.ReplaceAllString(sc.Text(), "")
		if m := spAvg.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return Sockperf{}, fmt.Errorf("sockperf average %q: %w", m[2], err)
			}
			s.Avg, s.FullRTT, haveAvg = v, m[1] == "rtt", true
		}
		if m := spPerc.FindStringSubmatch(line); m != nil {
			p, err1 := strconv.ParseFloat(m[1], 64)
			v, err2 := strconv.ParseFloat(m[2], 64)
			if err := errors.Join(err1, err2); err != nil {
				return Sockperf{}, fmt.Errorf("sockperf percentile line %q: %w", strings.TrimSpace(line), err)
			}
			s.Percentiles[p] = v
		}
		if m := spMinMax.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return Sockperf{}, fmt.Errorf("sockperf %s %q: %w", m[1], m[2], err)
			}
			if m[1] == "MIN" {
				s.Min = v
			} else {
				s.Max = v
			}
		}
		if m := spObserved.FindStringSubmatch(line); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return Sockperf{}, fmt.Errorf("sockperf observations %q: %w", m[1], err)
			}
			s.Observations = n
		}
	}
	if err := sc.Err(); err != nil {
		return Sockperf{}, fmt.Errorf("read sockperf output: %w", err)
	}
	if !haveAvg || len(s.Percentiles) == 0 {
		return Sockperf{}, errSockperf
	}
	return s, nil
}
