package agent

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDialerSetsTCPUserTimeoutOnItsOwnSocket(t *testing.T) {
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(k, "")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dial := tcpDialer(l.Addr().String(), 30*time.Second)
	if dial == nil {
		t.Fatal("no dialer for a host:port target")
	}
	conn, err := dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil || got != 30000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms (%v), want 30000", got, gerr)
	}
}

func TestDialerStaysOutOfTheWay(t *testing.T) {
	for _, target := range []string{"passthrough:///bufnet", "unix:///run/tether.sock", "unix:rel.sock", "dns:///host:1"} {
		if tcpDialer(target, time.Second) != nil {
			t.Errorf("%s: got a custom dialer, want grpc-go's own", target)
		}
	}
	t.Setenv("HTTPS_PROXY", "http://proxy:3128")
	if tcpDialer("host:7070", time.Second) != nil {
		t.Error("with a proxy configured: got a custom dialer, which would bypass the proxy")
	}
}
