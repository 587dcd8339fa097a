// Package redisstore owns the Redis-backed registry.Store, shared by every
// server replica: device records, per-device lease fencing, node liveness
// keys, the device index and the presence event stream. docs/REDIS.md
// describes every key for people (and frontends) reading Redis directly.
//
// Every device mutation is one Lua script (scripts/*.lua, embedded) over the
// device's own hash, so the lease check and the write are atomic and all keys
// of a script share the device's hash tag (Redis Cluster safe). Keys that are
// not per device (the index, the event stream, node liveness) are written by
// separate commands around the script. Touch batches are one pipeline of
// script calls: at most one command per device per mirror interval.
//
// It must not keep state of its own beyond the client: everything a replica
// needs to know is in Redis, and Redis's TIME is the only clock used for
// leases.
package redisstore
