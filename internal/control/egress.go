package control

// Dedicated egress (vrouter egress …, vrouter gateway …).

// Egress actions (EgressRequest.Action).
const (
	EgressEnable  = "enable"
	EgressDisable = "disable"
	EgressShow    = "show"
)

// Gateway actions (GatewayRequest.Action).
const (
	GatewayDrain   = "drain"
	GatewayUndrain = "undrain"
)

// Health of one dedicated egress IP (EgressIP.Health).
const (
	HealthHealthy  = "healthy"  // gateway alive and not draining
	HealthDraining = "draining" // gateway alive but drained: no new flows
	// HealthUnhealthy: gateway alive but its probe of the outside fails
	// (--egress-probe): no new flows.
	HealthUnhealthy = "unhealthy"
	HealthSuspect   = "suspect" // gateway failing its probes
	HealthDead      = "dead"    // gateway dead or gone (its last known assignment)
)

// EgressRequest is the body of the "egress" op (vrouter egress
// enable|disable|show). App is required for enable and disable; for show it
// narrows the listing to one app (not_found if it has no dedicated egress).
//
// Results: enable → EgressApp (the app's IPs after the call); disable →
// EgressApp (the IPs it released); show → []EgressApp.
type EgressRequest struct {
	Action string `json:"action"` // EgressEnable, EgressDisable, EgressShow
	App    string `json:"app,omitempty"`
}

// EgressApp is one app's dedicated egress: its IPs, primary first.
type EgressApp struct {
	App string     `json:"app"`
	IPs []EgressIP `json:"ips"`
}

// EgressIP is one dedicated egress IP of an app.
type EgressIP struct {
	IP      string `json:"ip"`
	Gateway string `json:"gateway"` // node name
	Health  string `json:"health"`  // see the Health constants
	// Active: new flows of the app leave through this IP: the primary if
	// healthy, else the first healthy standby; no IP is active when none
	// is healthy.
	Active bool `json:"active"`
	// Primary: the app's oldest assignment (ties: the lower IP); the
	// others are standbys.
	Primary bool `json:"primary"`
}

// GatewayRequest is the body of the "gateway" op (vrouter gateway
// drain|undrain). The result is GatewayState.
type GatewayRequest struct {
	Action string `json:"action"` // GatewayDrain, GatewayUndrain
}

// GatewayState is a gateway's state after a drain or undrain.
type GatewayState struct {
	Node      string   `json:"node"`
	Draining  bool     `json:"draining"`
	EgressIPs []string `json:"egress_ips"`
}
