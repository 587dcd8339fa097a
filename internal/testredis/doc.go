// Package testredis owns the throwaway Redis deployments tests run against,
// all real redis-server processes from PATH on free loopback ports, without
// persistence, in the test's temporary directory, stopped when the test
// ends:
//
//   - Server: one server. It can be restarted (same port, data lost,
//     optionally with other arguments), frozen (SIGSTOP), and made to answer
//     error replies while up: OOM (maxmemory + noeviction), READONLY
//     (REPLICAOF a master that does not exist), BUSY (a long script with a
//     low busy-reply-threshold).
//   - Cluster: n masters (--cluster-enabled, slots assigned by redis-cli
//     --cluster create); one master can be restarted empty and serve its
//     slots again.
//   - Sentinel: a master, a replica fed through a delaying proxy
//     (internal/lostreply) and one Sentinel, so that killing the master loses
//     the writes it acknowledged last.
//
// It is for tests only and must not be imported by production code.
package testredis
