package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
		cnCert, cnKey := ca.issue(t, "dev-cn", "dev-cn", nil, false)
		if _, m, err := helloAs(t, dialServer(t, srv, tlsClient(t, ca, cnCert, cnKey)), "dev-cn"); err != nil || m.GetHelloAck() == nil {
			t.Fatalf("Hello as the certificate's CN: %v %v; want HelloAck", m, err)
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
		srv := startServer(t, server.Config{Security: server.Security{TLSCert: srvCert, TLSKey: srvKey, TokenSecret: secret}})
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
	reflect := func(ctx context.Context) error {
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			return err
		}
		_, err = s.Recv()
		return err
	}
	if err := reflect(withKey("operator-key-0123456789")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("reflection as operator: %v; want PERMISSION_DENIED", err)
	}
	if err := reflect(withKey("admin-key-0123456789")); err != nil {
		t.Errorf("reflection as admin: %v", err)
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
		srv := startServer(t, server.Config{Security: server.Security{APIKeys: testKeys(t), ClusterSecret: secret}})
		peer := tetherv1.NewPeerServiceClient(dialServer(t, srv))
		for name, ctx := range map[string]context.Context{
			"nothing":     context.Background(),
			"admin key":   withKey("admin-key-0123456789"),
			"wrong proof": metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, access.PeerProof([]byte("another-secret-0123456789abcdef0123"), time.Now())),
			"old proof":   metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, access.PeerProof(secret, time.Now().Add(-time.Hour))),
		} {
			if _, err := peer.ForwardDisconnect(ctx, fwd); status.Code(err) != codes.PermissionDenied {
				t.Errorf("PeerService with %s: %v; want PERMISSION_DENIED", name, err)
			}
		}
		ok := metadata.AppendToOutgoingContext(context.Background(), access.PeerHeader, access.PeerProof(secret, time.Now()))
		if _, err := peer.ForwardDisconnect(ok, fwd); status.Code(err) != codes.InvalidArgument {
			t.Errorf("PeerService with the cluster proof: %v; want to reach the handler (INVALID_ARGUMENT)", err)
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
