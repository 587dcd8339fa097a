package session_test

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/session"
)

// fakeStream is an in-memory AgentService_ConnectServer for fuzzing the
// message handler without a transport.
type fakeStream struct {
	ctx  context.Context
	in   []*tetherv1.ConnectRequest
	sent []*tetherv1.ConnectResponse
}

func (f *fakeStream) Recv() (*tetherv1.ConnectRequest, error) {
	if len(f.in) == 0 {
		return nil, io.EOF
	}
	m := f.in[0]
	f.in = f.in[1:]
	return m, nil
}
func (f *fakeStream) Send(m *tetherv1.ConnectResponse) error { f.sent = append(f.sent, m); return nil }
func (f *fakeStream) SetHeader(metadata.MD) error            { return nil }
func (f *fakeStream) SendHeader(metadata.MD) error           { return nil }
func (f *fakeStream) SetTrailer(metadata.MD)                 {}
func (f *fakeStream) Context() context.Context               { return f.ctx }
func (f *fakeStream) SendMsg(any) error                      { return nil }
func (f *fakeStream) RecvMsg(any) error                      { return nil }

// decodeMessages splits data into length-prefixed ConnectRequests; bytes
// that do not decode become empty messages (the handler must cope).
func decodeMessages(data []byte) []*tetherv1.ConnectRequest {
	var out []*tetherv1.ConnectRequest
	for len(data) > 0 && len(out) < 32 {
		n := int(data[0])
		data = data[1:]
		if n > len(data) {
			n = len(data)
		}
		m := &tetherv1.ConnectRequest{}
		_ = proto.Unmarshal(data[:n], m)
		out = append(out, m)
		data = data[n:]
	}
	return out
}

func encodeMessages(ms ...*tetherv1.ConnectRequest) []byte {
	var out []byte
	for _, m := range ms {
		b, _ := proto.Marshal(m)
		out = append(out, byte(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzAgentMessages feeds arbitrary message sequences to the session
// handler: it must never panic, always end the stream, and leave the
// registry consistent (the device offline once its only stream ended).
func FuzzAgentMessages(f *testing.F) {
	h := hello("fz-1", "boot", true)
	f.Add(encodeMessages(h))
	f.Add(encodeMessages(h, h))
	f.Add(encodeMessages(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: 9}}}))
	f.Add(encodeMessages(h, &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: 1 << 60}}}))
	f.Add(encodeMessages(h, &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: &tetherv1.CommandResult{CommandId: "nope"}}}))
	f.Add(encodeMessages(h, &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_InfoUpdate{InfoUpdate: &tetherv1.InfoUpdate{}}}))
	f.Add(encodeMessages(hello("bad id!", "", false)))
	f.Add([]byte{0xff, 0x01, 0x02})
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := decodeMessages(data)
		synctest.Test(t, func(t *testing.T) {
			store := newStore()
			hub, err := session.NewHub(testConfig("fz"), store, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hub.Register(ctx, "fz-addr")
			st := &fakeStream{ctx: ctx, in: msgs}
			done := make(chan error, 1)
			go func() { done <- hub.Connect(st) }()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Fatal("handler did not end within a minute of fake time")
			}
			if hub.Len() != 0 {
				t.Fatal("a session outlived its stream")
			}
			if hello := msgs; len(hello) > 0 && hello[0].GetHello() != nil {
				if r, err := store.Get(context.Background(), hello[0].GetHello().GetDeviceId()); err == nil && r.Online() {
					t.Fatalf("device online after its only stream ended: %+v", r)
				}
			}
		})
	})
}
