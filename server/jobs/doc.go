// Package jobs owns commands by selector: JobService (create, watch,
// list, cancel jobs) and the Runner that sends a job's command to its
// devices at the job's rate and concurrency, through the fleet router
// (server/router), wherever each device's session is held.
//
// A job's state lives in the registry (registry.Jobs), so it outlives the
// replica running it: each replica's Runner takes the runner lease of
// running jobs nobody holds (a TTL the runner renews) and resumes them.
// Before a command is sent to a device, the session lease it is sent to is
// recorded atomically (PENDING -> DISPATCHED); a device already DISPATCHED
// is never sent the command again, by this runner or a resumed one, even
// when it has reconnected with a new lease: a resumed runner reports such
// a device as UNKNOWN (the command may or may not have run).
package jobs
