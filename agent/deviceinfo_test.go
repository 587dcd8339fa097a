package agent

import (
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestPrimaryMACIsTheFirstUpNonLoopbackInterfaceByName(t *testing.T) {
	up := net.FlagUp | net.FlagBroadcast
	for _, tc := range []struct {
		name   string
		ifaces []net.Interface
		want   string
	}{
		{"sorted by name", []net.Interface{
			{Name: "wlan0", Flags: up, HardwareAddr: mac("02:00:00:00:00:03")},
			{Name: "eth1", Flags: up, HardwareAddr: mac("02:00:00:00:00:02")},
			{Name: "eth0", Flags: up, HardwareAddr: mac("02:00:00:00:00:01")},
		}, "02:00:00:00:00:01"},
		{"skips down, loopback, no address and all-zero", []net.Interface{
			{Name: "a-down", Flags: net.FlagBroadcast, HardwareAddr: mac("02:00:00:00:00:0a")},
			{Name: "b-lo", Flags: up | net.FlagLoopback, HardwareAddr: mac("02:00:00:00:00:0b")},
			{Name: "c-tun", Flags: up},
			{Name: "d-zero", Flags: up, HardwareAddr: mac("00:00:00:00:00:00")},
			{Name: "e-eth", Flags: up, HardwareAddr: mac("02:00:00:00:00:0e")},
		}, "02:00:00:00:00:0e"},
		{"none", []net.Interface{{Name: "lo", Flags: up | net.FlagLoopback}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PrimaryMAC(tc.ifaces)
			if (got == nil && tc.want != "") || (got != nil && got.String() != tc.want) {
				t.Fatalf("PrimaryMAC = %v, want %q", got, tc.want)
			}
		})
	}
}

func TestPrettyNameFromOSRelease(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n", "Debian GNU/Linux 12 (bookworm)"},
		{"PRETTY_NAME='Alpine Linux v3.20'\n", "Alpine Linux v3.20"},
		{"PRETTY_NAME=Plain\n", "Plain"},
		{"# comment\nID=x\n", ""},
		{"", ""},
	} {
		if got := prettyName([]byte(tc.in)); got != tc.want {
			t.Errorf("prettyName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSystemInfoDescribesThisMachine(t *testing.T) {
	info, err := SystemInfo()
	if err != nil {
		t.Logf("partial info: %v", err)
	}
	if info.GetArch() != runtime.GOARCH || !strings.HasPrefix(info.GetOs(), runtime.GOOS) {
		t.Fatalf("os/arch = %q/%q", info.GetOs(), info.GetArch())
	}
	if h, _ := os.Hostname(); info.GetHostname() != h {
		t.Fatalf("hostname = %q, want %q", info.GetHostname(), h)
	}
	for _, ip := range info.GetIpAddresses() {
		if p := net.ParseIP(ip); p == nil || p.IsLoopback() {
			t.Errorf("ip %q: want a parsable, non-loopback address", ip)
		}
	}
	if m := info.GetMac(); m != "" && (m != strings.ToLower(m) || strings.Count(m, ":") < 5) {
		t.Errorf("mac %q: want lowercase, colon separated", m)
	}
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err == nil && len(info.GetBootId()) != 36 {
			t.Errorf("boot id %q, want a UUID", info.GetBootId())
		}
	}
}
