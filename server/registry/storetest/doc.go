// Package storetest owns the contract test suite of registry.Store (and of
// registry.Jobs, for stores that implement it: jobs.go): one
// set of tests, run by every implementation's own tests through Run with a
// Harness that knows how to make (and lose) that implementation's storage.
//
// The suite tests behaviour through the Store interface only. It must not
// depend on any implementation; implementation details (Redis commands,
// scripts, synctest) belong in the implementations' own tests. Timing is
// checked by polling with a bounded deadline, never by asserting elapsed
// wall time, so it runs both on a real clock (Redis) and inside a
// testing/synctest bubble (memstore), where the polling sleeps are instant.
package storetest
