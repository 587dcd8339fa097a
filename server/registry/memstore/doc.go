// Package memstore owns the embedded, in-memory registry.Store: the store a
// single server replica uses when no Redis is configured, and the reference
// implementation the contract suite (registry/storetest) is written against.
//
// Everything lives in one map guarded by one mutex. Time comes from
// time.Now, so the store works inside testing/synctest bubbles (node TTLs,
// retention and ReadEvents waits then take no real time). Nothing survives a
// process restart; leases still increase across restarts because a new lease
// is never below the current time in microseconds.
//
// It must not start goroutines: expiry (node liveness, device retention) is
// evaluated lazily when the store is used.
package memstore
