// Package fakeagent is the scripted agent of tests and benchmarks: after its
// Hello, it answers every Ping with a Pong and each Command as the caller
// scripts it, one Send at a time (grpc-go allows one sender per stream).
package fakeagent

import (
	"sync"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Reply scripts the answer to one command: its output, sent after the
// given delay (0: at once); ok false leaves the command unanswered.
type Reply func(c *tetherv1.Command) (output string, after time.Duration, ok bool)

// Serve reads stream until it ends. Delayed answers are sent from their own
// goroutines, which may outlive Serve (their Send then fails, unseen).
func Serve(stream tetherv1.AgentService_ConnectClient, reply Reply) {
	var mu sync.Mutex
	send := func(m *tetherv1.ConnectRequest) {
		mu.Lock()
		defer mu.Unlock()
		_ = stream.Send(m)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		switch x := m.Msg.(type) {
		case *tetherv1.ConnectResponse_Ping:
			send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: x.Ping.Seq, PingSentAt: x.Ping.SentAt}}})
		case *tetherv1.ConnectResponse_Command:
			out, after, ok := reply(x.Command)
			if !ok {
				continue
			}
			res := &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: &tetherv1.CommandResult{
				CommandId: x.Command.CommandId, Output: out,
			}}}
			if after <= 0 {
				send(res)
				continue
			}
			go func() {
				time.Sleep(after)
				send(res)
			}()
		}
	}
}
