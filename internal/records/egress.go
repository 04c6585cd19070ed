package records

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/vrouter/vrouter/internal/ids"
)

// Prefixes of the dedicated egress families.
const (
	EIPPrefix           = "eip/"
	EgressRequestPrefix = "ereq/"
)

// EIPKey is the key of the assignment of egress IP ip.
func EIPKey(ip netip.Addr) string { return EIPPrefix + ip.String() }

// EgressRequestKey is the key of app's egress request.
func EgressRequestKey(app string) string { return EgressRequestPrefix + app }

// EIP is the value of eip/<ip>: which app holds the IP, since when.
type EIP struct {
	App        string    `json:"app"`
	AssignedAt time.Time `json:"assigned_at"`
}

// Encode returns the record's value.
func (r EIP) Encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode egress record: %w", err)
	}
	return b, nil
}

// ParseEIP decodes an eip record (key and value come from peers).
func ParseEIP(key string, value []byte) (netip.Addr, EIP, error) {
	ip, err := netip.ParseAddr(strings.TrimPrefix(key, EIPPrefix))
	if err != nil || !strings.HasPrefix(key, EIPPrefix) || !ip.Is4() {
		return netip.Addr{}, EIP{}, fmt.Errorf("egress record %q: not eip/<IPv4>", key)
	}
	var r EIP
	if err := json.Unmarshal(value, &r); err != nil {
		return netip.Addr{}, EIP{}, fmt.Errorf("egress record %s: %w", key, err)
	}
	if err := ids.App(r.App); err != nil {
		return netip.Addr{}, EIP{}, fmt.Errorf("egress record %s: %w", key, err)
	}
	if r.AssignedAt.IsZero() {
		return netip.Addr{}, EIP{}, fmt.Errorf("egress record %s: no assigned_at", key)
	}
	return ip, r, nil
}

// Request actions (EgressRequest.Action).
const (
	ActionEnable  = "enable"
	ActionDisable = "disable"
)

// EgressRequest is the value of ereq/<app>. For enable, IPs names the IP
// each gateway is asked to give the app; a disable releases every IP of
// the app and names none.
type EgressRequest struct {
	Action string       `json:"action"`
	ID     string       `json:"id"`
	IPs    []EgressPick `json:"ips,omitempty"`
}

// EgressPick is one IP asked of one gateway.
type EgressPick struct {
	IP      netip.Addr `json:"ip"`
	Gateway string     `json:"gateway"`
}

// MaxRequestIPs bounds what a peer's request can make a gateway look at.
const MaxRequestIPs = 16

// Encode returns the record's value.
func (r EgressRequest) Encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode egress request: %w", err)
	}
	return b, nil
}

// ParseEgressRequest decodes an ereq record (key and value come from
// peers).
func ParseEgressRequest(key string, value []byte) (string, EgressRequest, error) {
	app, ok := strings.CutPrefix(key, EgressRequestPrefix)
	if !ok {
		return "", EgressRequest{}, fmt.Errorf("egress request %q: not ereq/<app>", key)
	}
	if err := ids.App(app); err != nil {
		return "", EgressRequest{}, fmt.Errorf("egress request %q: %w", key, err)
	}
	var r EgressRequest
	if err := json.Unmarshal(value, &r); err != nil {
		return "", EgressRequest{}, fmt.Errorf("egress request %s: %w", key, err)
	}
	if r.Action != ActionEnable && r.Action != ActionDisable {
		return "", EgressRequest{}, fmt.Errorf("egress request %s: unknown action %q", key, r.Action)
	}
	if len(r.IPs) > MaxRequestIPs {
		return "", EgressRequest{}, fmt.Errorf("egress request %s: %d IPs", key, len(r.IPs))
	}
	for _, p := range r.IPs {
		if !p.IP.Is4() || p.Gateway == "" {
			return "", EgressRequest{}, fmt.Errorf("egress request %s: bad IP %v of gateway %q", key, p.IP, p.Gateway)
		}
	}
	return app, r, nil
}
