package parse

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Iperf is the part of an iperf3 -J client report the suite uses.
type Iperf struct {
	Protocol string  // "TCP" or "UDP"
	Streams  int     // parallel streams (-P)
	Seconds  float64 // measured duration, receiver side
	// Throughput in bit/s. For TCP ReceivedBps is what reached the server;
	// for UDP it counts the payload of the datagrams that arrived.
	SentBps, ReceivedBps float64
	Retransmits          int64 // TCP only

	// UDP only, from the server's count: Packets is the number of datagrams
	// the sender numbered, LostPackets those that never arrived.
	Packets, LostPackets int64
	LostPercent          float64
	ReceivedPPS          float64 // (Packets − LostPackets) / Seconds

	// CPU of the iperf3 processes in percent of one core (user+system):
	// Host is the client, Remote the server.
	HostCPU, RemoteCPU float64
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   int64   `json:"retransmits"`
	Packets       int64   `json:"packets"`
	LostPackets   int64   `json:"lost_packets"`
	LostPercent   float64 `json:"lost_percent"`
}

type iperfJSON struct {
	Start struct {
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Sum         *iperfSum `json:"sum"`
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
		CPU         struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIperf decodes the JSON that `iperf3 -c … -J` prints. An iperf3 that
// failed prints JSON with an "error" member: that becomes the error.
func ParseIperf(b []byte) (Iperf, error) {
	var j iperfJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Iperf{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if j.Error != "" {
		return Iperf{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	r := Iperf{
		Protocol:  strings.ToUpper(j.Start.TestStart.Protocol),
		Streams:   j.Start.TestStart.NumStreams,
		HostCPU:   j.End.CPU.HostTotal,
		RemoteCPU: j.End.CPU.RemoteTotal,
	}
	switch r.Protocol {
	case "TCP":
		if j.End.SumSent == nil || j.End.SumReceived == nil {
			return Iperf{}, errors.New("iperf3 JSON: TCP report without end.sum_sent/sum_received")
		}
		r.Seconds = j.End.SumReceived.Seconds
		r.SentBps = j.End.SumSent.BitsPerSecond
		r.ReceivedBps = j.End.SumReceived.BitsPerSecond
		r.Retransmits = j.End.SumSent.Retransmits
	case "UDP":
		// iperf3 ≥ 3.11 reports the receiver in sum_received; older ones
		// only in sum (which then holds the server's packet counts).
		recv := j.End.SumReceived
		if recv == nil || recv.Packets == 0 {
			recv = j.End.Sum
		}
		if recv == nil {
			return Iperf{}, errors.New("iperf3 JSON: UDP report without end.sum_received or end.sum")
		}
		r.Seconds = recv.Seconds
		r.ReceivedBps = recv.BitsPerSecond
		if j.End.SumSent != nil {
			r.SentBps = j.End.SumSent.BitsPerSecond
		}
		r.Packets, r.LostPackets, r.LostPercent = recv.Packets, recv.LostPackets, recv.LostPercent
		if r.Seconds > 0 && r.Packets >= r.LostPackets {
			r.ReceivedPPS = float64(r.Packets-r.LostPackets) / r.Seconds
		}
	default:
		return Iperf{}, fmt.Errorf("iperf3 JSON: unknown protocol %q", j.Start.TestStart.Protocol)
	}
	if r.Seconds <= 0 {
		return Iperf{}, errors.New("iperf3 JSON: test of no duration")
	}
	return r, nil
}
