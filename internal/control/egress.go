package control

// EgressRequest is the body of the "egress" op (vrouter egress
// enable|disable|show). Placeholder: the dedicated egress work defines it.
type EgressRequest struct {
	Action string `json:"action"` // "enable", "disable", "show"
	App    string `json:"app,omitempty"`
}

// GatewayRequest is the body of the "gateway" op (vrouter gateway
// drain|undrain).
type GatewayRequest struct {
	Action string `json:"action"` // "drain", "undrain"
}
