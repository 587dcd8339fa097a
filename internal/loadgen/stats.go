package loadgen

import (
	"context"
	"errors"
	"io"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// maxSampleLen caps the error texts kept as samples.
const maxSampleLen = 300

// stats are the run's counters, updated by every agent goroutine.
type stats struct {
	start  time.Time
	target int64

	connected     atomic.Int64 // sessions up now
	maxConnected  atomic.Int64
	everConnected atomic.Int64 // agents that completed at least one handshake
	allAt         atomic.Int64 // ns from start when everConnected reached target; 0 = not yet

	attempts  atomic.Int64
	successes atomic.Int64
	failures  atomic.Int64

	pingsAnswered    atomic.Int64
	pingsIgnored     atomic.Int64 // Pings received by legacy agents
	commandsAnswered atomic.Int64 // Commands answered by the agents

	cmdSent    atomic.Int64
	cmdOK      atomic.Int64
	cmdSkipped atomic.Int64
	cmdLatency histogram

	mu           sync.Mutex
	failuresBy   map[string]int64  // connect failures by gRPC code (or Close reason)
	closedBy     map[string]int64  // sessions the server closed, by Close reason
	streamErrsBy map[string]int64  // sessions that broke without a Close, by code
	cmdErrsBy    map[string]int64  // SendCommand errors by code
	samples      map[string]string // the first error text per kind and key
}

func newStats(target int) *stats {
	return &stats{
		start:        time.Now(),
		target:       int64(target),
		failuresBy:   map[string]int64{},
		closedBy:     map[string]int64{},
		streamErrsBy: map[string]int64{},
		cmdErrsBy:    map[string]int64{},
		samples:      map[string]string{},
	}
}

func (s *stats) add(m map[string]int64, kind, key string, err error) {
	s.mu.Lock()
	m[key]++
	if err != nil {
		k := kind + " " + key
		if _, ok := s.samples[k]; !ok {
			msg := err.Error()
			if len(msg) > maxSampleLen {
				msg = msg[:maxSampleLen] + "..."
			}
			s.samples[k] = msg
		}
	}
	s.mu.Unlock()
}

func (s *stats) connectFailed(key string, err error) {
	s.failures.Add(1)
	s.add(s.failuresBy, "connect", key, err)
}

func (s *stats) sessionUp(first bool) {
	n := s.connected.Add(1)
	for {
		m := s.maxConnected.Load()
		if n <= m || s.maxConnected.CompareAndSwap(m, n) {
			break
		}
	}
	s.successes.Add(1)
	if first && s.everConnected.Add(1) == s.target {
		s.allAt.Store(max(1, int64(time.Since(s.start))))
	}
}

func (s *stats) sessionClosed(c *tetherv1.Close) {
	s.add(s.closedBy, "close", reasonKey(c.GetReason()), nil)
}

func (s *stats) sessionBroke(key string, err error) {
	s.add(s.streamErrsBy, "stream", key, err)
}

func (s *stats) commandFailed(key string, err error) {
	s.add(s.cmdErrsBy, "command", key, err)
}

// reasonKey is a DisconnectReason without its enum prefix ("DRAINING").
func reasonKey(r tetherv1.DisconnectReason) string {
	return strings.TrimPrefix(r.String(), "DISCONNECT_REASON_")
}

// codeKey names the error's gRPC code ("Unavailable"); io.EOF, a stream the
// server ended without a status, is "EOF".
func codeKey(err error) string {
	switch {
	case err == nil:
		return "OK"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded.String()
	case errors.Is(err, context.Canceled):
		return codes.Canceled.String()
	}
	return status.Code(err).String()
}

func (s *stats) copyMaps() (failures, closed, streamErrs, cmdErrs map[string]int64, samples map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.failuresBy), maps.Clone(s.closedBy), maps.Clone(s.streamErrsBy), maps.Clone(s.cmdErrsBy), maps.Clone(s.samples)
}
