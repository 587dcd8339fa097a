package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetherhq/tether/server/audit"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/agent"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/registry/memstore"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServer runs a replica on a real loopback socket until the test ends.
func startServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Store == nil {
		cfg.Store = memstore.New(memstore.Options{})
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv
}

func dialServer(t *testing.T, srv *server.Server, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(srv.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func helloMsg(id string) *tetherv1.ConnectRequest {
	return &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: &tetherv1.Hello{
		DeviceId: id, AgentVersion: "test",
		Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG},
	}}}
}

// helloAs opens a Connect stream, sends Hello(id) and returns the stream
// and its first answer (a message, or the error that ended the stream).
func helloAs(t *testing.T, conn *grpc.ClientConn, id string) (tetherv1.AgentService_ConnectClient, *tetherv1.ConnectResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := tetherv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := stream.Send(helloMsg(id)); err != nil && err != io.EOF {
		return nil, nil, err
	}
	m, err := stream.Recv()
	return stream, m, err
}

func tlsClient(t *testing.T, ca *testCA, certFile, keyFile string) grpc.DialOption {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

func withKey(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

func assertNotClaimed(t *testing.T, srv *server.Server, id string) {
	t.Helper()
	if _, err := srv.Store().Get(context.Background(), id); err == nil {
		t.Fatalf("device %s was claimed by a refused Hello", id)
	}
}

var secret = []byte("0123456789abcdef0123456789abcdef-test-secret")

func TestADeviceCredentialForOneIDCannotHelloAsAnother(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "server", "server", nil, true)

	t.Run("mTLS", func(t *testing.T) {
		srv := startServer(t, server.Config{Security: server.Security{TLSCert: srvCert, TLSKey: srvKey, ClientCA: ca.file()}})
		devCert, devKey := ca.issue(t, "dev-a", "ignored-cn", []string{"tether://device/dev-a"}, false)
		conn := dialServer(t, srv, tlsClient(t, ca, devCert, devKey))
		if _, _, err := helloAs(t, conn, "dev-b"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Hello as dev-b with dev-a's certificate: %v; want PERMISSION_DENIED", err)
		}
		assertNotClaimed(t, srv, "dev-b")
		if _, m, err := helloAs(t, conn, "dev-a"); err != nil || m.GetHelloAck() == nil {
			t.Fatalf("Hello as dev-a: %v %v; want HelloAck", m, err)
		}
		// The CN names no device unless --cert-cn-device.
		cnCert, cnKey := ca.issue(t, "dev-cn", "dev-cn", nil, false)
		if _, _, err := helloAs(t, dialServer(t, srv, tlsClient(t, ca, cnCert, cnKey)), "dev-cn"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Hello as the certificate's CN by default: %v; want UNAUTHENTICATED", err)
		}
		cnSrv := startServer(t, server.Config{Security: server.Security{TLSCert: srvCert, TLSKey: srvKey, ClientCA: ca.file(), CertCN: true}})
		if _, m, err := helloAs(t, dialServer(t, cnSrv, tlsClient(t, ca, cnCert, cnKey)), "dev-cn"); err != nil || m.GetHelloAck() == nil {
			t.Fatalf("Hello as the certificate's CN with CertCN: %v %v; want HelloAck", m, err)
		}
		// A peer certificate must name a node of the cluster.
		fwd := &tetherv1.ForwardDisconnectRequest{}
		for node, want := range map[string]codes.Code{"node-evil": codes.PermissionDenied, srv.Node(): codes.InvalidArgument} {
			pc, pk := ca.issue(t, "peer-"+node, "peer", []string{"tether://peer/" + node}, false)
			peer := tetherv1.NewPeerServiceClient(dialServer(t, srv, tlsClient(t, ca, pc, pk)))
			if _, err := peer.ForwardDisconnect(context.Background(), fwd); status.Code(err) != want {
				t.Errorf("PeerService with a peer certificate for %s: %v; want %v", node, err, want)
			}
		}
		if _, _, err := helloAs(t, dialServer(t, srv, tlsClient(t, ca, "", "")), "dev-a"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Hello without a certificate or token: %v; want UNAUTHENTICATED", err)
		}
		other := newTestCA(t)
		fCert, fKey := other.issue(t, "forged", "dev-a", nil, false)
		if _, _, err := helloAs(t, dialServer(t, srv, tlsClient(t, ca, fCert, fKey)), "dev-a"); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})

	t.Run("token", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		srv := startServer(t, server.Config{Registry: reg, Security: server.Security{TLSCert: srvCert, TLSKey: srvKey, TokenSecret: secret}})
		signer, _ := access.NewSigner(secret)
		tok, _, err := signer.Issue("dev-a", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		conn := dialServer(t, srv, tlsClient(t, ca, "", ""), grpc.WithPerRPCCredentials(bearer(tok)))
		if _, _, err := helloAs(t, conn, "dev-b"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Hello as dev-b with dev-a's token: %v; want PERMISSION_DENIED", err)
		}
		assertNotClaimed(t, srv, "dev-b")
		if got := refusals(t, reg)["device_mismatch"]; got != 1 {
			t.Errorf("tether_auth_refusals_total{reason=device_mismatch} = %v, want 1", got)
		}
		if _, m, err := helloAs(t, conn, "dev-a"); err != nil || m.GetHelloAck() == nil {
			t.Fatalf("Hello as dev-a: %v %v; want HelloAck", m, err)
		}
		forged := tok[:strings.LastIndexByte(tok, '.')+1] + "AAAA"
		for name, opt := range map[string]grpc.DialOption{
			"no token":      grpc.EmptyDialOption{},
			"forged token":  grpc.WithPerRPCCredentials(bearer(forged)),
			"expired token": grpc.WithPerRPCCredentials(bearer(must(signer.Issue("dev-a", time.Second, time.Now().Add(-time.Hour))))),
		} {
			if _, _, err := helloAs(t, dialServer(t, srv, tlsClient(t, ca, "", ""), opt), "dev-a"); status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s: %v; want UNAUTHENTICATED", name, err)
			}
		}
	})
}

func must(tok string, _ access.Token, err error) string {
	if err != nil {
		panic(err)
	}
	return tok
}

func TestARevokedTokensLiveSessionEnds(t *testing.T) {
	store := memstore.New(memstore.Options{})
	srv := startServer(t, server.Config{Store: store, Security: server.Security{TokenSecret: secret}})
	signer, _ := access.NewSigner(secret)
	tok, info, _ := signer.Issue("dev-r", time.Hour, time.Now())
	other, _, _ := signer.Issue("dev-s", time.Hour, time.Now())
	stream, m, err := helloAs(t, dialServer(t, srv, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(tok))), "dev-r")
	if err != nil || m.GetHelloAck() == nil {
		t.Fatalf("Hello: %v %v", m, err)
	}
	bystander, m, err := helloAs(t, dialServer(t, srv, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(other))), "dev-s")
	if err != nil || m.GetHelloAck() == nil {
		t.Fatalf("Hello: %v %v", m, err)
	}
	if err := store.Revoke(context.Background(), info.ID, info.Expiry); err != nil {
		t.Fatal(err)
	}
	// The bound is the test's 10 s stream deadline, not a timing assertion.
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream ended without Close(AUTH_REVOKED): %v", err)
		}
		if c := m.GetClose(); c != nil {
			if c.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED {
				t.Fatalf("Close(%v); want AUTH_REVOKED", c.GetReason())
			}
			break
		}
	}
	if _, _, err := helloAs(t, dialServer(t, srv, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(tok))), "dev-r"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Hello with a revoked token: %v; want UNAUTHENTICATED", err)
	}
	if s := srv.Hub().Lookup("dev-s"); s == nil || s.Ended() != nil {
		t.Fatal("the session of another token ended too")
	}
	_ = bystander
}

func testKeys(t *testing.T) *access.APIKeys {
	t.Helper()
	k, err := access.ParseAPIKeys([]byte(
		access.HashLine("viewer-key-0123456789", access.RoleViewer, "v") + "\n" +
			access.HashLine("operator-key-0123456789", access.RoleOperator, "o") + "\n" +
			access.HashLine("admin-key-0123456789", access.RoleAdmin, "a") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestAPIKeyRolesAreEnforcedOnGRPCAndThroughTheGateway(t *testing.T) {
	srv := startServer(t, server.Config{Security: server.Security{APIKeys: testKeys(t)}})
	conn := dialServer(t, srv)
	api := tetherv1.NewDeviceServiceClient(conn)
	cmd := &tetherv1.SendCommandRequest{DeviceId: "nobody", Name: "echo"}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no key", context.Background(), codes.Unauthenticated},
		{"unknown key", withKey("not-a-key-0123456789"), codes.Unauthenticated},
		{"viewer", withKey("viewer-key-0123456789"), codes.PermissionDenied},
		{"operator", withKey("operator-key-0123456789"), codes.NotFound}, // past auth: the device is unknown
	} {
		if _, err := api.SendCommand(tc.ctx, cmd); status.Code(err) != tc.want {
			t.Errorf("SendCommand with %s: %v; want %v", tc.name, err, tc.want)
		}
	}
	if _, err := api.ListDevices(withKey("viewer-key-0123456789"), &tetherv1.ListDevicesRequest{}); err != nil {
		t.Errorf("ListDevices as viewer: %v", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without a key: %v", err)
	}
	// Reflection: the whole schema for any key, the health service only
	// without one (grpcurl needs it for a health check), nothing for a bad key.
	reflect := func(ctx context.Context) ([]string, error) {
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			return nil, err
		}
		resp, err := s.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, svc := range resp.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "tether.v1.DeviceService"}}); err != nil {
			return nil, err
		}
		if resp, err = s.Recv(); err != nil {
			return nil, err
		}
		if resp.GetErrorResponse() == nil {
			names = append(names, "file:tether.v1.DeviceService")
		}
		return names, nil
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want string
		code codes.Code
	}{
		{"viewer", withKey("viewer-key-0123456789"), "grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection tether.v1.AdminService tether.v1.AgentService tether.v1.DeviceService tether.v1.JobService tether.v1.PeerService file:tether.v1.DeviceService", codes.OK},
		{"admin", withKey("admin-key-0123456789"), "grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection tether.v1.AdminService tether.v1.AgentService tether.v1.DeviceService tether.v1.JobService tether.v1.PeerService file:tether.v1.DeviceService", codes.OK},
		{"no key", context.Background(), "grpc.health.v1.Health", codes.OK},
		{"unknown key", withKey("not-a-key-0123456789"), "", codes.Unauthenticated},
	} {
		names, err := reflect(tc.ctx)
		slices.Sort(names[:min(len(names), 7)])
		if status.Code(err) != tc.code || strings.Join(names, " ") != tc.want {
			t.Errorf("reflection as %s: %q, %v; want %q, %v", tc.name, names, err, tc.want, tc.code)
		}
	}
	admin := tetherv1.NewAdminServiceClient(conn)
	revoke := &tetherv1.RevokeTokenRequest{TokenId: "0123456789abcdef0123"}
	if _, err := admin.RevokeToken(withKey("operator-key-0123456789"), revoke); status.Code(err) != codes.PermissionDenied {
		t.Errorf("RevokeToken as operator: %v; want PERMISSION_DENIED", err)
	}
	if _, err := admin.RevokeToken(withKey("admin-key-0123456789"), revoke); err != nil {
		t.Errorf("RevokeToken as admin: %v", err)
	}

	// The JSON gateway forwards Authorization; the server's answer maps to
	// 401/403 with the JSON error body.
	h, err := gateway.NewHandler(t.Context(), conn, gateway.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth     string
		status   int
		grpcCode float64
	}{
		{"", http.StatusUnauthorized, 16},
		{"Bearer viewer-key-0123456789", http.StatusForbidden, 7},
	} {
		req := httptest.NewRequest(http.MethodPost, "/v1/devices/d1:command", strings.NewReader(`{"name":"echo"}`))
		req.Header.Set("Content-Type", "application/json")
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != tc.status || body["code"] != tc.grpcCode {
			t.Errorf("POST :command with %q: %d %s; want %d with code %v", tc.auth, rec.Code, rec.Body, tc.status, tc.grpcCode)
		}
	}
}

func TestClientsCannotReachPeerService(t *testing.T) {
	fwd := &tetherv1.ForwardDisconnectRequest{}
	t.Run("with a cluster secret", func(t *testing.T) {
		srv := startServer(t, server.Config{Security: server.Security{APIKeys: testKeys(t), ClusterSecret: secret, PeerNodes: []string{"node-a"}}})
		peer := tetherv1.NewPeerServiceClient(dialServer(t, srv))
		const method = "/tether.v1.PeerService/ForwardDisconnect"
		proof := func(sec []byte, from, to string, at time.Time) context.Context {
			p := access.PeerProof(sec, access.PeerCall{From: from, To: to, Method: method, Digest: access.RequestDigest(fwd)}, at)
			return metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, p)
		}
		good := access.PeerProof(secret, access.PeerCall{From: "node-a", To: srv.Node(), Method: method, Digest: access.RequestDigest(fwd)}, time.Now())
		for name, ctx := range map[string]context.Context{
			"nothing":              context.Background(),
			"admin key":            withKey("admin-key-0123456789"),
			"wrong secret":         proof([]byte("another-secret-0123456789abcdef0123"), "node-a", srv.Node(), time.Now()),
			"old proof":            proof(secret, "node-a", srv.Node(), time.Now().Add(-time.Hour)),
			"290s in the future":   proof(secret, "node-a", srv.Node(), time.Now().Add(290*time.Second)),
			"a foreign node name":  proof(secret, "node-evil", srv.Node(), time.Now()),
			"for another replica":  proof(secret, "node-a", "node-c", time.Now()),
			"the v1 bearer format": metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, "v1.1800000000."+strings.Repeat("ab", 32)),
		} {
			if _, err := peer.ForwardDisconnect(ctx, fwd); status.Code(err) != codes.PermissionDenied {
				t.Errorf("PeerService with %s: %v; want PERMISSION_DENIED", name, err)
			}
		}
		// Another request under a proof made for this one.
		other := &tetherv1.ForwardDisconnectRequest{LeaseId: 9, Request: &tetherv1.DisconnectDeviceRequest{DeviceId: "d1"}}
		if _, err := peer.ForwardDisconnect(metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, good), other); status.Code(err) != codes.PermissionDenied {
			t.Errorf("PeerService with a proof for another request: %v; want PERMISSION_DENIED", err)
		}
		ok := metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, good)
		if _, err := peer.ForwardDisconnect(ok, fwd); status.Code(err) != codes.InvalidArgument {
			t.Errorf("PeerService with the cluster proof: %v; want to reach the handler (INVALID_ARGUMENT)", err)
		}
		for i := range 3 {
			if _, err := peer.ForwardDisconnect(ok, fwd); status.Code(err) != codes.PermissionDenied {
				t.Errorf("replay %d of the proof: %v; want PERMISSION_DENIED", i+1, err)
			}
		}
	})
	t.Run("authenticated server without a secret", func(t *testing.T) {
		srv := startServer(t, server.Config{Security: server.Security{APIKeys: testKeys(t)}})
		peer := tetherv1.NewPeerServiceClient(dialServer(t, srv))
		if _, err := peer.ForwardDisconnect(withKey("admin-key-0123456789"), fwd); status.Code(err) != codes.PermissionDenied {
			t.Errorf("PeerService from loopback with an admin key: %v; want PERMISSION_DENIED", err)
		}
	})
	t.Run("dev mode", func(t *testing.T) {
		srv := startServer(t, server.Config{})
		peer := tetherv1.NewPeerServiceClient(dialServer(t, srv))
		if _, err := peer.ForwardDisconnect(context.Background(), fwd); status.Code(err) != codes.InvalidArgument {
			t.Errorf("PeerService from loopback in dev mode: %v; want to reach the handler", err)
		}
	})
}

func TestPlaintextOnANonLoopbackAddressIsRefused(t *testing.T) {
	for _, cfg := range []server.Config{
		{Listen: "0.0.0.0:0"},
		{Listen: ":0"},
		{Listen: "127.0.0.1:0", HTTP: "0.0.0.0:0"},
		{Listen: "0.0.0.0:0", Security: server.Security{APIKeys: testKeys(t), TokenSecret: secret}},
	} {
		cfg.Store, cfg.Logger = memstore.New(memstore.Options{}), quiet
		_, err := server.New(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("listen %q http %q without TLS: %v; want a refusal naming --insecure", cfg.Listen, cfg.HTTP, err)
		}
	}
	srv := startServer(t, server.Config{Listen: "0.0.0.0:0", Security: server.Security{Insecure: true}})
	if srv.Addr() == nil {
		t.Fatal("no address")
	}
}

// goodAgent runs a real agent and returns a DeviceService client; the
// hostile tests check the agent's session survives with a command.
func goodAgent(t *testing.T, srv *server.Server, id string) tetherv1.DeviceServiceClient {
	t.Helper()
	a, err := agent.New(agent.Config{ServerAddr: srv.Addr().String(), DeviceID: id, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	api := tetherv1.NewDeviceServiceClient(dialServer(t, srv))
	deadline := time.Now().Add(10 * time.Second)
	for srv.Hub().Lookup(id) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent %s never connected", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return api
}

func stillServes(t *testing.T, srv *server.Server, api tetherv1.DeviceServiceClient, id string, lease uint64) {
	t.Helper()
	s := srv.Hub().Lookup(id)
	if s == nil || s.Lease != lease {
		t.Fatalf("the good agent's session %d did not survive (now %v)", lease, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: id, Name: "echo", Args: []string{"alive"}})
	if err != nil || strings.TrimSpace(r.GetOutput()) != "alive" {
		t.Fatalf("command to the good agent: %v %v", r, err)
	}
}

func TestHostileClientsAreRefusedWhileOtherSessionsStayUp(t *testing.T) {
	t.Run("oversized message", func(t *testing.T) {
		srv := startServer(t, server.Config{})
		api := goodAgent(t, srv, "good")
		lease := srv.Hub().Lookup("good").Lease
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := tetherv1.NewAgentServiceClient(dialServer(t, srv)).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		big := helloMsg("big")
		big.GetHello().Info = &tetherv1.DeviceInfo{Hostname: strings.Repeat("x", 1<<20+1)}
		_ = stream.Send(big)
		if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a %d-byte message: %v; want RESOURCE_EXHAUSTED", 1<<20+1, err)
		}
		stillServes(t, srv, api, "good", lease)
	})

	t.Run("flood of Hellos from one address", func(t *testing.T) {
		srv := startServer(t, server.Config{Security: server.Security{HelloRate: 1, HelloBurst: 5, RateLimitLoopback: true}})
		api := goodAgent(t, srv, "good") // takes one token
		lease := srv.Hub().Lookup("good").Lease
		conn := dialServer(t, srv)
		limited := 0
		for i := range 20 {
			_, _, err := helloAs(t, conn, "flood-"+string(rune('a'+i)))
			if status.Code(err) == codes.ResourceExhausted {
				limited++
			}
		}
		if limited < 10 {
			t.Fatalf("%d of 20 Hellos were rate-limited; want most of them", limited)
		}
		stillServes(t, srv, api, "good", lease)
	})

	t.Run("stream that never sends Hello", func(t *testing.T) {
		cfg := server.Config{}
		cfg.Session.HelloTimeout = 300 * time.Millisecond
		srv := startServer(t, cfg)
		api := goodAgent(t, srv, "good")
		lease := srv.Hub().Lookup("good").Lease
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := tetherv1.NewAgentServiceClient(dialServer(t, srv)).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("silent stream: %v; want DEADLINE_EXCEEDED from the Hello deadline", err)
		}
		stillServes(t, srv, api, "good", lease)
	})

	t.Run("HTTP/2 ping flood", func(t *testing.T) {
		srv := startServer(t, server.Config{})
		api := goodAgent(t, srv, "good")
		lease := srv.Hub().Lookup("good").Lease
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
				break // the server may already have closed the connection
			}
		}
		var goaway *http2.GoAwayFrame
		for goaway == nil {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("connection ended without GOAWAY: %v", err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.GoAwayFrame:
				goaway = f
			}
		}
		if goaway.ErrCode != http2.ErrCodeEnhanceYourCalm || string(goaway.DebugData()) != "too_many_pings" {
			t.Fatalf("GOAWAY %v %q; want ENHANCE_YOUR_CALM too_many_pings", goaway.ErrCode, goaway.DebugData())
		}
		stillServes(t, srv, api, "good", lease)
	})
}

// syncBuffer is a log sink the server's goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines are the JSON log lines with message msg.
func (s *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if l == "" || json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestStateChangingCallsAndRefusalsAreAudited(t *testing.T) {
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	srv := startServer(t, server.Config{Registry: reg, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Security: server.Security{APIKeys: testKeys(t)}})
	goodAgent(t, srv, "aud-1")
	api := tetherv1.NewDeviceServiceClient(dialServer(t, srv))
	if _, err := api.SendCommand(withKey("operator-key-0123456789"), &tetherv1.SendCommandRequest{DeviceId: "aud-1", Name: "echo", Args: []string{"secret-arg", "b"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.SendCommand(withKey("operator-key-0123456789"), &tetherv1.SendCommandRequest{DeviceId: "nobody", Name: "echo"}); status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}
	if _, err := api.DisconnectDevice(withKey("operator-key-0123456789"), &tetherv1.DisconnectDeviceRequest{DeviceId: "aud-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tetherv1.NewAdminServiceClient(dialServer(t, srv)).RevokeToken(withKey("admin-key-0123456789"), &tetherv1.RevokeTokenRequest{TokenId: "0123456789abcdef0123"}); err != nil {
		t.Fatal(err)
	}
	for _, ctx := range []context.Context{withKey("not-a-key-0123456789"), context.Background(), withKey("viewer-key-0123456789")} {
		if _, err := api.SendCommand(ctx, &tetherv1.SendCommandRequest{DeviceId: "aud-1", Name: "echo"}); err == nil {
			t.Fatal("refused call succeeded")
		}
	}
	if _, err := api.ListDevices(withKey("viewer-key-0123456789"), &tetherv1.ListDevicesRequest{}); err != nil {
		t.Fatal(err)
	}

	got := logs.lines(t, "audit")
	want := []string{
		"send_command key:o aud-1 echo " + audit.ArgsDigest([]string{"secret-arg", "b"}) + " OK",
		"send_command key:o nobody echo " + audit.ArgsDigest(nil) + " NotFound",
		"disconnect_device key:o aud-1 <nil> <nil> OK",
		"admin_revoke_token key:a <nil> <nil> <nil> OK",
	}
	if len(got) != len(want) {
		t.Fatalf("%d audit lines, want %d (reads are not audited): %v", len(got), len(want), got)
	}
	for i, l := range got {
		s := fmt.Sprintf("%v %v %v %v %v %v", l["action"], l["caller"], l["device"], l["command"], l["args_sha256"], l["code"])
		if s != want[i] || l["remote"] == "" || l["level"] != "INFO" {
			t.Errorf("audit line %d = %v, want %s with a remote address", i, l, want[i])
		}
		if strings.Contains(fmt.Sprint(l), "secret-arg") {
			t.Errorf("audit line %d logs an argument: %v", i, l)
		}
	}
	refused := logs.lines(t, "auth refused")
	var reasons []string
	for _, l := range refused {
		reasons = append(reasons, fmt.Sprint(l["reason"]))
		if l["level"] != "WARN" || l["remote"] == "" {
			t.Errorf("refusal line %v: want WARN with a remote address", l)
		}
	}
	if strings.Join(reasons, " ") != "bad_api_key no_credentials role_denied" {
		t.Errorf("refusal reasons %v", reasons)
	}
	if counted := refusals(t, reg); counted["bad_api_key"] != 1 || counted["no_credentials"] != 1 || counted["role_denied"] != 1 {
		t.Errorf("tether_auth_refusals_total = %v", counted)
	}
}

// refusals reads tether_auth_refusals_total by reason.
func refusals(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "tether_auth_refusals_total" {
			for _, m := range mf.GetMetric() {
				counted[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return counted
}

func TestMetricsListenerFollowsTheLoopbackRuleAndHidesPprof(t *testing.T) {
	for _, cfg := range []server.Config{
		{Metrics: "0.0.0.0:0"},
		{Metrics: "[::]:0"},
	} {
		cfg.Store, cfg.Logger = memstore.New(memstore.Options{}), quiet
		if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "--metrics") {
			t.Errorf("--metrics %s without TLS: %v; want a refusal naming --metrics", cfg.Metrics, err)
		}
	}
	for _, pprof := range []bool{false, true} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		startServer(t, server.Config{Metrics: addr, Pprof: pprof})
		var code int
		for i := 0; i < 100; i++ {
			resp, err := http.Get("http://" + addr + "/debug/pprof/")
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if want := map[bool]int{false: 404, true: 200}[pprof]; code != want {
			t.Errorf("pprof=%v: /debug/pprof/ answered %d, want %d", pprof, code, want)
		}
	}
}

func TestMetricsOffLoopbackIsHTTPSWhenTLSIsOn(t *testing.T) {
	ca := newTestCA(t)
	cert, key := ca.issue(t, "metrics-server", "server", nil, true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	lis.Close()
	startServer(t, server.Config{Metrics: "0.0.0.0:" + port, Security: server.Security{TLSCert: cert, TLSKey: key}})
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca.file())
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var got error
	for i := 0; i < 100; i++ {
		var resp *http.Response
		if resp, got = hc.Get("https://127.0.0.1:" + port + "/metrics"); got == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				got = fmt.Errorf("status %s", resp.Status)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != nil {
		t.Fatalf("GET https /metrics: %v", got)
	}
	if resp, err := http.Get("http://127.0.0.1:" + port + "/metrics"); err == nil && resp.StatusCode == 200 {
		resp.Body.Close()
		t.Fatal("the metrics listener off loopback answered plaintext")
	}
}
