package access

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/audit"
)

const fwdMethod = "/tether.v1.PeerService/ForwardCommand"

// peerPolicy is node-b's policy: node-a is the only other live node.
func peerPolicy(now *time.Time) *Policy {
	return &Policy{
		ClusterSecret: []byte(strings.Repeat("s", 32)),
		Node:          "node-b",
		KnownPeer: func(_ context.Context, n string) (bool, error) {
			return n == "node-a" || n == "node-b", nil
		},
		Audit: audit.New(nil, nil),
		Now:   func() time.Time { return *now },
	}
}

func incoming(proof string) context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 4000}})
	return metadata.NewIncomingContext(ctx, metadata.Pairs(PeerHeader, proof))
}

func fwd(device string) *tetherv1.ForwardCommandRequest {
	return &tetherv1.ForwardCommandRequest{LeaseId: 7, Request: &tetherv1.SendCommandRequest{DeviceId: device, Name: "reboot"}}
}

func proofFor(p *Policy, from, to, method string, req any, at time.Time) string {
	return PeerProof(p.ClusterSecret, PeerCall{From: from, To: to, Method: method, Digest: RequestDigest(req)}, at)
}

func TestAPeerProofIsGoodForOneCallOnly(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := peerPolicy(&now)
	req := fwd("dev-1")
	proof := proofFor(p, "node-a", "node-b", fwdMethod, req, now)
	ctx, err := p.authorize(incoming(proof), fwdMethod, req)
	if err != nil {
		t.Fatalf("fresh proof refused: %v", err)
	}
	if c, _ := audit.CallerFrom(ctx); c.String() != "peer:node-a" {
		t.Fatalf("caller = %v, want peer:node-a", c)
	}
	for i := range 3 {
		now = now.Add(time.Second)
		if _, err := p.authorize(incoming(proof), fwdMethod, req); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("replay %d: %v, want PermissionDenied", i+1, err)
		}
	}
	if got := count(p.Audit.Refusals().WithLabelValues("peer_replay")); got != 3 {
		t.Fatalf("peer_replay refusals = %v, want 3", got)
	}
}

func TestAPeerProofIsBoundToTime(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := peerPolicy(&now)
	req := fwd("dev-1")
	for _, tc := range []struct {
		name string
		skew time.Duration
		ok   bool
	}{
		{"20s in the future", 20 * time.Second, true},
		{"20s old", -20 * time.Second, true},
		{"290s in the future", 290 * time.Second, false},
		{"31s in the future", 31 * time.Second, false},
		{"31s old", -31 * time.Second, false},
		{"an hour old", -time.Hour, false},
	} {
		_, err := p.authorize(incoming(proofFor(p, "node-a", "node-b", fwdMethod, req, now.Add(tc.skew))), fwdMethod, req)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestAPeerProofIsBoundToNodesMethodAndRequest(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := peerPolicy(&now)
	req := fwd("dev-1")
	good := proofFor(p, "node-a", "node-b", fwdMethod, req, now)
	for name, tc := range map[string]struct {
		proof  string
		method string
		req    any
		reason string
	}{
		"a foreign node name": {proofFor(p, "node-evil", "node-b", fwdMethod, req, now), fwdMethod, req, "peer_unknown_node"},
		"another target node": {proofFor(p, "node-a", "node-c", fwdMethod, req, now), fwdMethod, req, "bad_peer_proof"},
		"another method":      {good, "/tether.v1.PeerService/ForwardDisconnect", &tetherv1.ForwardDisconnectRequest{LeaseId: 7, Request: &tetherv1.DisconnectDeviceRequest{DeviceId: "dev-1"}}, "bad_peer_proof"},
		"another request":     {good, fwdMethod, fwd("dev-2"), "bad_peer_proof"},
		"another secret":      {PeerProof([]byte(strings.Repeat("t", 32)), PeerCall{From: "node-a", To: "node-b", Method: fwdMethod, Digest: RequestDigest(req)}, now), fwdMethod, req, "bad_peer_proof"},
		"the raw secret":      {string(p.ClusterSecret), fwdMethod, req, "bad_peer_proof"},
		"the v1 format":       {"v1.1800000000." + strings.Repeat("0", 64), fwdMethod, req, "bad_peer_proof"},
		"a stream":            {good, fwdMethod, nil, "bad_peer_proof"},
	} {
		before := count(p.Audit.Refusals().WithLabelValues(tc.reason))
		if _, err := p.authorize(incoming(tc.proof), tc.method, tc.req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", name, err)
		}
		if got := count(p.Audit.Refusals().WithLabelValues(tc.reason)); got != before+1 {
			t.Errorf("%s: refusals{reason=%s} = %v, want %v", name, tc.reason, got, before+1)
		}
	}
	// The untouched proof still works: none of the above consumed it.
	if _, err := p.authorize(incoming(good), fwdMethod, req); err != nil {
		t.Fatalf("good proof refused: %v", err)
	}
}

func TestTheReplayCacheIsBoundedAndForgets(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newReplayCache(3)
	for _, n := range []string{"a", "b", "c"} {
		if err := c.add(n, now.Add(time.Minute), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.add("a", now.Add(time.Minute), now); err != errReplay {
		t.Fatalf("replay: %v", err)
	}
	if err := c.add("d", now.Add(time.Minute), now); err != errReplayFull {
		t.Fatalf("full: %v, want errReplayFull (never drop a live entry)", err)
	}
	now = now.Add(2 * time.Minute)
	if err := c.add("d", now.Add(time.Minute), now); err != nil || c.len() != 1 {
		t.Fatalf("after expiry: %v, len %d", err, c.len())
	}
}

func count(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
