package access

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestATokenVerifiesOnlyUntouchedAndUnexpired(t *testing.T) {
	s, err := NewSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	tok, info, err := s.Issue("dev-1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Verify(tok, now); err != nil || got != info {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, info)
	}
	other, _ := NewSigner([]byte(strings.Repeat("x", 32)))
	forged, _, _ := other.Issue("dev-1", time.Hour, now)
	payload, sig, _ := strings.Cut(tok, ".")
	evil, _, _ := s.Issue("dev-2", time.Hour, now)
	evilPayload, _, _ := strings.Cut(evil, ".")
	for name, bad := range map[string]string{
		"another secret":   forged,
		"swapped payload":  evilPayload + "." + sig,
		"no signature":     payload,
		"garbage":          "!!!.???",
		"truncated sig":    payload + "." + sig[:10],
		"empty":            "",
		"payload only dot": payload + ".",
	} {
		if _, err := s.Verify(bad, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := s.Verify(tok, now.Add(time.Hour)); err == nil {
		t.Error("expired token accepted")
	}
	if _, err := NewSigner([]byte("short")); err == nil {
		t.Error("short secret accepted")
	}
}

func TestAPIKeysParseBothFormatsAndRefusePlainKeys(t *testing.T) {
	line := HashLine("the-key-0123456789", RoleOperator, "ci bot")
	for name, doc := range map[string]string{
		"lines":     "# comment\n\n" + line + "\n",
		"semicolon": HashLine("x-0123456789abcdef", RoleViewer, "v") + ";" + line,
		"yaml":      "keys:\n  - {sha256: " + strings.Fields(line)[0] + ", role: operator, name: ci bot}\n",
	} {
		k, err := ParseAPIKeys([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, ok := k.Lookup("the-key-0123456789")
		if !ok || got.Role != RoleOperator || got.Name != "ci bot" {
			t.Errorf("%s: Lookup = %+v %v", name, got, ok)
		}
		if _, ok := k.Lookup("the-key-012345678"); ok {
			t.Errorf("%s: a different key matched", name)
		}
	}
	for _, bad := range []string{"the-key operator ci", "sha256:abcd operator x", line[:72] + " root x", ""} {
		if _, err := ParseAPIKeys([]byte(bad)); err == nil {
			t.Errorf("ParseAPIKeys(%q) accepted", bad)
		}
	}
}

func TestRequiredRoleDeniesUnknownMethodsByDefault(t *testing.T) {
	for m, want := range map[string]Role{
		"/tether.v1.DeviceService/GetDevice":                             RoleViewer,
		"/tether.v1.DeviceService/SendCommand":                           RoleOperator,
		"/tether.v1.DeviceService/SomethingNew":                          RoleAdmin,
		"/tether.v1.DeviceService/GetDeviceHistory":                      RoleViewer,
		"/tether.v1.DeviceService/GetInventory":                          RoleViewer,
		"/tether.v1.DeviceService/ListNodes":                             RoleViewer,
		"/tether.v1.DeviceService/PreRegisterDevice":                     RoleOperator,
		"/tether.v1.DeviceService/DeleteDevice":                          RoleAdmin,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      RoleViewer,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": RoleViewer,
		"/grpc.health.v1.Health/Check":                                   RoleNone,
		"/tether.v1.AgentService/Connect":                                RoleNone,
		"/tether.v1.PeerService/ForwardCommand":                          RoleNone,
		"/tether.v1.PeerService/Invoke":                                  RoleNone,
		"/tether.v1.JobService/CreateJob":                                RoleOperator,
		"/tether.v1.JobService/GetJob":                                   RoleOperator,
		"/tether.v1.JobService/ListJobs":                                 RoleOperator,
		"/tether.v1.JobService/ListJobResults":                           RoleOperator,
		"/tether.v1.JobService/CancelJob":                                RoleOperator,
		"/tether.v1.JobService/SomethingNew":                             RoleAdmin,
	} {
		if got := RequiredRole(m); got != want {
			t.Errorf("RequiredRole(%s) = %v; want %v", m, got, want)
		}
	}
}

func TestTheLimiterRefillsAndStaysBounded(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLimiter(1, 2, []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")})
	l.now = func() time.Time { return now }
	l.max = 100
	a := netip.MustParseAddr("192.0.2.1")
	if !l.Allow(a) || !l.Allow(a) || l.Allow(a) {
		t.Fatal("burst of 2 not enforced")
	}
	now = now.Add(time.Second)
	if !l.Allow(a) || l.Allow(a) {
		t.Fatal("refill of 1/s not enforced")
	}
	for range 10 {
		if !l.Allow(netip.MustParseAddr("10.9.1.1")) {
			t.Fatal("exempt address limited")
		}
	}
	for i := range 1000 {
		l.Allow(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}))
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("limiter tracks %d addresses; bound is 100", n)
	}
}

func TestTheLimiterKeysIPv6By64(t *testing.T) {
	l := NewLimiter(1, 2, nil)
	l.now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	a := netip.MustParseAddr("2001:db8:1:2::1")
	b := netip.MustParseAddr("2001:db8:1:2:ffff::9") // same /64
	c := netip.MustParseAddr("2001:db8:1:3::1")      // another /64
	if !l.Allow(a) || !l.Allow(b) {
		t.Fatal("burst of 2 refused")
	}
	if l.Allow(netip.MustParseAddr("2001:db8:1:2:1234::")) {
		t.Fatal("a third address of the same /64 escaped the bucket")
	}
	if !l.Allow(c) {
		t.Fatal("another /64 shares the bucket")
	}
}
