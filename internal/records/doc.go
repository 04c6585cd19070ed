// Package records owns what the daemon writes in the cluster store: the
// key and value of every record family, their decoders (which read bytes
// that peers gossip, so they never panic and have fuzz targets), the one
// container view that follows those records through the store's journal,
// and the one journal follower that every reconciler of the data path
// uses to turn record changes into router changes.
//
// Record families (key → value; the owner of an entry is the node that
// put it):
//
//	c/<pn>/<ip>              the container holding ip in pn (Container, JSON)
//	n/<app>/<type>/<number>  the container holding that number (its id)
//	eip/<ip>                 the app holding the egress IP; owned by the
//	                         gateway that has ip, the only node that writes it (EIP)
//	ereq/<app>               an enable or disable of app's dedicated egress
//	                         in progress; owned by the node serving the CLI
//	                         call (EgressRequest)
//	v/<vni>                  a claim of the VNI for a network (its id); owned
//	                         by every node that has containers of it (vni.go)
//	o/<addr>                 a node's claim of its overlay address (its name;
//	                         overlay.go)
//
// c/ and n/ keys are claims: the first node to put one wins it
// (cluster.Store.Winner), which is what makes addresses and container
// numbers unique cluster-wide.
//
// A network's VNI is a claim (vni.go: its hash is the first candidate, the
// first claim wins, a network whose candidate another holds takes the
// next); so is a node's overlay address (overlay.go). An app's egress VNI
// is a hash (ids.go).
//
// Locking: ContainerView.mu guards the view; it is taken outside the
// store's lock and the view calls nothing but the store. A Follower has no
// lock: its owner (one reconcile goroutine, or a caller holding the
// owner's lock) serialises it.
package records
