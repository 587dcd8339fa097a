package access

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// PeerHeader carries the cluster proof on PeerService calls.
const PeerHeader = "x-tether-peer"

// PeerWindow is how far a proof's time may be from the receiver's clock,
// either way. Replicas' clocks must agree to within it (NTP).
const PeerWindow = 30 * time.Second

// DefaultReplayEntries bounds the replay cache: proofs seen within the last
// 2×PeerWindow. When it is full of live entries, new proofs are refused
// (UNAVAILABLE) rather than an entry dropped, which would reopen a replay.
const DefaultReplayEntries = 1 << 17

// PeerCall is what a proof is bound to.
type PeerCall struct {
	From, To string // calling and receiving node names
	Method   string // full gRPC method name
	Digest   string // hex SHA-256 of the request (RequestDigest)
}

// RequestDigest is the hex SHA-256 of a request's deterministic protobuf
// encoding ("" for a message that cannot be encoded).
func RequestDigest(req any) string {
	m, ok := req.(proto.Message)
	if !ok {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// PeerProof is the PeerHeader value for c at now:
//
//	v2;<from>;<to>;<unix>;<nonce>;<hex HMAC-SHA256(secret, "tether-peer-v2|from|to|method|unix|nonce|digest")>
//
// The secret never crosses the wire; a proof is good for one call of one
// method with one request body, from one node to one node, within
// ±PeerWindow, once.
func PeerProof(secret []byte, c PeerCall, now time.Time) string {
	var n [12]byte
	_, _ = rand.Read(n[:])
	ts := strconv.FormatInt(now.Unix(), 10)
	nonce := hex.EncodeToString(n[:])
	return strings.Join([]string{"v2", c.From, c.To, ts, nonce, peerMAC(secret, c, ts, nonce)}, ";")
}

func peerMAC(secret []byte, c PeerCall, ts, nonce string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("tether-peer-v2|" + c.From + "|" + c.To + "|" + c.Method + "|" + ts + "|" + nonce + "|" + c.Digest))
	return hex.EncodeToString(m.Sum(nil))
}

// Reasons a proof is refused (also the refusal counter's reasons).
var (
	errBadProof   = errors.New("bad_peer_proof")
	errReplay     = errors.New("peer_replay")
	errReplayFull = errors.New("peer_replay_cache_full")
)

// parsedProof is a proof's fields after a successful check.
type parsedProof struct {
	from, nonce string
	at          time.Time
}

// checkProof verifies proof for a call of method with digest received by
// node self, in constant time; it does not consult the replay cache.
func checkProof(secret []byte, proof, self, method, digest string, now time.Time) (parsedProof, error) {
	parts := strings.Split(proof, ";")
	if len(parts) != 6 || parts[0] != "v2" || parts[1] == "" || len(parts[4]) != 24 {
		return parsedProof{}, errBadProof
	}
	ts, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return parsedProof{}, errBadProof
	}
	at := time.Unix(ts, 0)
	if d := now.Sub(at); d > PeerWindow || d < -PeerWindow {
		return parsedProof{}, errBadProof
	}
	c := PeerCall{From: parts[1], To: parts[2], Method: method, Digest: digest}
	if !hmac.Equal([]byte(parts[5]), []byte(peerMAC(secret, c, parts[3], parts[4]))) || parts[2] != self {
		return parsedProof{}, errBadProof
	}
	return parsedProof{from: parts[1], nonce: parts[4], at: at}, nil
}

// replayCache remembers the nonces of accepted proofs until they can no
// longer be valid.
type replayCache struct {
	max int

	mu    sync.Mutex
	seen  map[string]time.Time // nonce -> forget after
	order []string             // nonces in insertion order
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: map[string]time.Time{}}
}

// add records nonce, valid until forget; it reports errReplay when the
// nonce was already seen and errReplayFull when the cache is full of live
// entries.
func (c *replayCache) add(nonce string, forget, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Forget expired entries from the front (insertion order is close to
	// expiry order; a later-expiring one only delays the sweep).
	for len(c.order) > 0 {
		n := c.order[0]
		if t, ok := c.seen[n]; ok && now.Before(t) {
			break
		}
		delete(c.seen, n)
		c.order = c.order[1:]
	}
	if _, ok := c.seen[nonce]; ok {
		return errReplay
	}
	if len(c.seen) >= c.max {
		return errReplayFull
	}
	c.seen[nonce] = forget
	c.order = append(c.order, nonce)
	if len(c.order) > 2*c.max { // compact the backing array now and then
		c.order = append([]string(nil), c.order...)
	}
	return nil
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

type peerTargetKey struct{}

// ToPeer returns ctx for a PeerService call to the replica named node: the
// proof is bound to it.
func ToPeer(ctx context.Context, node string) context.Context {
	return context.WithValue(ctx, peerTargetKey{}, node)
}

// PeerInterceptor is the client interceptor replicas use on PeerService
// calls: it adds a proof bound to this node (self), the target node (from
// ToPeer), the method and the request.
func PeerInterceptor(secret []byte, self string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		to, _ := ctx.Value(peerTargetKey{}).(string)
		proof := PeerProof(secret, PeerCall{From: self, To: to, Method: method, Digest: RequestDigest(req)}, time.Now())
		return invoker(metadata.AppendToOutgoingContext(ctx, PeerHeader, proof), method, req, reply, cc, opts...)
	}
}
