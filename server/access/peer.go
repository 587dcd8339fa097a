package access

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// PeerHeader carries the cluster proof on PeerService calls.
const PeerHeader = "x-tether-peer"

// peerSkew is how far a proof's time may be from the receiver's clock.
const peerSkew = 5 * time.Minute

// PeerProof is the PeerHeader value for now: "v1.<unix>.<hex HMAC-SHA256(secret,
// "tether-peer|<unix>")>". The secret itself never crosses the wire, and a
// recorded proof is useless after peerSkew.
func PeerProof(secret []byte, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	return "v1." + ts + "." + peerMAC(secret, ts)
}

func peerMAC(secret []byte, ts string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("tether-peer|" + ts))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckPeerProof verifies a PeerProof in constant time.
func CheckPeerProof(secret []byte, proof string, now time.Time) bool {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return false
	}
	ts, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > peerSkew || d < -peerSkew {
		return false
	}
	return hmac.Equal([]byte(parts[2]), []byte(peerMAC(secret, parts[1])))
}

// PeerCredentials are the per-RPC credentials a replica sends on
// PeerService calls. Secure says whether the connection is TLS (grpc-go
// then refuses to send them over plaintext).
func PeerCredentials(secret []byte, secure bool) credentials.PerRPCCredentials {
	return peerCreds{secret: secret, secure: secure}
}

type peerCreds struct {
	secret []byte
	secure bool
}

func (p peerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{PeerHeader: PeerProof(p.secret, time.Now())}, nil
}

func (p peerCreds) RequireTransportSecurity() bool { return p.secure }
