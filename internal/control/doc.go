// Package control implements the daemon's control socket: the wire protocol
// between the vrouter CLI and `vrouter run`.
//
// Transport: a unix SOCK_SEQPACKET socket (mode 0600), one request per
// connection.
//
//   - The client sends ONE packet holding the JSON Request (at most
//     MaxMessage bytes). An "attach" request carries exactly one file
//     descriptor (the TUN) as SCM_RIGHTS ancillary data of that packet; any
//     other op carries none.
//   - The server answers with the JSON Response, split into packets of at
//     most MaxMessage bytes, and then closes the connection: the response
//     is the concatenation of all packets up to end of file. (A container
//     listing can outgrow the socket's largest single packet.)
//
// Both sides give up after a per-connection deadline so that a stuck peer
// cannot pin a goroutine.
package control
