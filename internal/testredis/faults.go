package testredis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Error replies a real Redis gives while it is up and answering. Each
// method changes the running server (CONFIG SET, REPLICAOF, a script) and
// has an inverse; none loses data.

// admin is a short-lived client for one administrative command.
func (s *Server) admin() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
}

func (s *Server) do(args ...any) {
	s.tb.Helper()
	c := s.admin()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, args...).Err(); err != nil {
		s.tb.Fatalf("testredis: %v: %v", args, err)
	}
}

// OOM makes every write answer "-OOM command not allowed when used memory >
// 'maxmemory'": maxmemory 1 byte with the noeviction policy. Reads still
// work. NoOOM undoes it.
func (s *Server) OOM() {
	s.tb.Helper()
	s.do("CONFIG", "SET", "maxmemory-policy", "noeviction")
	s.do("CONFIG", "SET", "maxmemory", "1")
}

// NoOOM lifts the memory limit set by OOM.
func (s *Server) NoOOM() {
	s.tb.Helper()
	s.do("CONFIG", "SET", "maxmemory", "0")
}

// ReadOnly makes the server a replica of a master that does not exist (a
// free loopback port nothing listens on): it keeps its data, serves reads
// and answers every write "-READONLY You can't write against a read only
// replica", as a demoted master does during a failover. Writable undoes it.
func (s *Server) ReadOnly() {
	s.tb.Helper()
	port, err := freePort()
	if err != nil {
		s.tb.Fatalf("testredis: %v", err)
	}
	s.do("REPLICAOF", "127.0.0.1", strconv.Itoa(port))
}

// Writable makes the server a master again (REPLICAOF NO ONE), data kept.
func (s *Server) Writable() {
	s.tb.Helper()
	s.do("REPLICAOF", "NO", "ONE")
}

// busyScript spins (read-only, so SCRIPT KILL could end it) until Redis
// TIME has advanced ARGV[1] microseconds.
const busyScript = `
local t = redis.call('TIME')
local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
while true do
  local n = redis.call('TIME')
  if tonumber(n[1]) * 1000000 + tonumber(n[2]) >= stop then return 1 end
end`

// Busy runs a script that keeps the server busy for d, from a client of its
// own, after lowering busy-reply-threshold (lua-time-limit) to threshold:
// once the script has run that long, every other command is answered
// "-BUSY Redis is busy running a script". It returns at once; the returned
// function waits for the script to end and restores the threshold (5 s).
func (s *Server) Busy(d, threshold time.Duration) (wait func() error) {
	s.tb.Helper()
	s.do("CONFIG", "SET", "busy-reply-threshold", strconv.FormatInt(threshold.Milliseconds(), 10))
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, ReadTimeout: d + 30*time.Second})
	done := make(chan error, 1)
	go func() {
		done <- c.Eval(context.Background(), busyScript, nil, d.Microseconds()).Err()
		c.Close()
	}()
	return func() error {
		err := <-done
		c := s.admin()
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if rerr := c.Do(ctx, "CONFIG", "SET", "busy-reply-threshold", "5000").Err(); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return fmt.Errorf("testredis: busy script: %w", err)
		}
		return nil
	}
}
