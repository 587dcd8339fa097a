// Package registry owns the session registry's contract: which devices are
// known, which session (lease) is current for each, how sessions end, and the
// ordered stream of presence events.
//
// The Store interface is the whole contract, split into the roles its
// consumers take (Leases for the session hub, Reader for the APIs and the
// router, Events for the event feed, Nodes for node liveness); Jobs is the
// role of the job service and runners (jobs.go). Every session mutation
// names the lease it acts for and is refused with ErrStaleLease when that
// lease is no longer the device's current one: this fencing is what keeps a
// rebooted device's old connection from removing its new session. Lease ids
// are allocated by the store, strictly increasing per device and never reused.
//
// Implementations live in sub-packages (memstore, redisstore); storetest holds
// the contract test suite every implementation must pass. This package must
// not know about gRPC streams or any particular store.
package registry
