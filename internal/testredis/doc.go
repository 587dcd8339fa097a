// Package testredis owns the throwaway redis-server processes tests run
// against: a real server from PATH on a free loopback port, without
// persistence, in the test's temporary directory, stopped when the test ends.
// It can restart the server (same port, data lost) and freeze it (SIGSTOP)
// to let tests see what clients do when Redis goes away.
//
// It is for tests only and must not be imported by production code.
package testredis
