package e2e

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/proxyproto"
)

// TestAgentGivenTwoReplicasFailsOverWhenItsReplicaStops: two replicas on one
// Redis, an agent given both (--server a,b); SIGTERM the replica it is on and
// the device is online on the other within seconds.
func TestAgentGivenTwoReplicasFailsOverWhenItsReplicaStops(t *testing.T) {
	redis := testredis.Start(t)
	g1, h1, g2, h2 := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	r1 := start(t, "tether-server", "--listen", g1, "--http", h1, "--node", "fo-r1", "--redis", redis.URL())
	start(t, "tether-server", "--listen", g2, "--http", h2, "--node", "fo-r2", "--redis", redis.URL())
	for _, a := range []string{g1, h1, g2, h2} {
		waitListening(t, a)
	}
	agent := start(t, "tether-agent", "--server", g1+","+g2, "--device-id", "fo-1", "--config", writeAgentConfig(t, ""))
	d := waitOnline(t, "http://"+h2, "fo-1", 20*time.Second)
	if d.Session.Node != "fo-r1" {
		t.Fatalf("the agent started on %s, want fo-r1 (the first address)", d.Session.Node)
	}
	r1.stop(15 * time.Second)
	// A few seconds: the drain's Close, then the agent's backoff (1s
	// initial, jittered) before it dials the next address.
	eventually(t, 10*time.Second, func() error {
		d, err := getDevice("http://"+h2, "fo-1")
		if err != nil {
			return err
		}
		if !d.Online || d.Session.Node != "fo-r2" {
			return fmt.Errorf("not online on fo-r2: online=%v last=%+v", d.Online, d.LastDisconnect)
		}
		return nil
	})
	out := agent.out.String()
	if !strings.Contains(out, "reason=draining") || !strings.Contains(out, "next_server="+g2) {
		t.Errorf("the agent's log does not say it moved on after the drain:\n%s", out)
	}
}

// TestProxyProtocolNamesTheClientBehindABalancer: a server trusting
// 127.0.0.1 for PROXY protocol v2, and a minimal balancer in the test that
// prepends a header naming 203.0.113.7: the session's remote address is
// the one in the header, not the balancer's.
func TestProxyProtocolNamesTheClientBehindABalancer(t *testing.T) {
	g, h := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", g, "--http", h, "--proxy-protocol-from", "127.0.0.1/32")
	waitListening(t, g)
	waitListening(t, h)

	lb, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	client := netip.MustParseAddrPort("203.0.113.7:40123")
	go func() {
		for {
			c, err := lb.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", g)
				if err != nil {
					return
				}
				defer up.Close()
				dst := netip.MustParseAddrPort(g)
				if _, err := up.Write(proxyproto.Append(nil, client, dst)); err != nil {
					return
				}
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	start(t, "tether-agent", "--server", lb.Addr().String(), "--device-id", "pp-1", "--config", writeAgentConfig(t, ""))
	d := waitOnline(t, "http://"+h, "pp-1", 20*time.Second)
	if d.Session.RemoteAddress != client.String() {
		t.Fatalf("remote address %q, want %q (from the PROXY header)", d.Session.RemoteAddress, client)
	}
	// The in-process gateway that answered above dials the listener from
	// the trusted address without a header: it keeps working.
}
