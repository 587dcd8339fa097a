package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fakeManager is a unixgram listener standing in for systemd's notify
// socket.
type fakeManager struct {
	conn *net.UnixConn
	addr string
}

func listen(t *testing.T, addr string) *fakeManager {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeManager{conn: c, addr: addr}
}

func newFakeManager(t *testing.T) *fakeManager {
	return listen(t, filepath.Join(t.TempDir(), "notify.sock"))
}

// next returns the next datagram, failing after a generous real-time bound
// (this waits on a socket; it asserts nothing about durations).
func (m *fakeManager) next(t *testing.T) string {
	t.Helper()
	m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := m.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestMessagesReachTheNotifySocket(t *testing.T) {
	m := newFakeManager(t)
	n := New(m.addr, 0)
	for _, tc := range []struct {
		send func() error
		want string
	}{
		{n.Ready, "READY=1\n"},
		{func() error { return n.Status("connected to a:1\n(lease 7)") }, "STATUS=connected to a:1 (lease 7)\n"},
		{n.Watchdog, "WATCHDOG=1\n"},
		{n.Stopping, "STOPPING=1\n"},
		{func() error { return n.Notify("READY=1", "STATUS=up") }, "READY=1\nSTATUS=up\n"},
	} {
		if err := tc.send(); err != nil {
			t.Fatal(err)
		}
		if got := m.next(t); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestAbstractSocketNamesWork(t *testing.T) {
	m := listen(t, fmt.Sprintf("@tether-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := New(m.addr, 0).Ready(); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "READY=1\n" {
		t.Fatalf("got %q", got)
	}
}

func TestWithoutNotifySocketEverythingIsANoOp(t *testing.T) {
	t.Setenv(EnvSocket, "")
	t.Setenv(EnvWatchdog, "30000000")
	n, err := FromEnv(false)
	if err != nil {
		t.Fatal(err)
	}
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("enabled=%v watchdog=%v, want a no-op notifier", n.Enabled(), n.WatchdogInterval())
	}
	for _, f := range []func() error{n.Ready, n.Watchdog, n.Stopping} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	var nilN *Notifier
	if err := nilN.Ready(); err != nil || nilN.Enabled() {
		t.Fatal("a nil Notifier must be a no-op")
	}
}

func TestWatchdogIntervalIsHalfOfWATCHDOG_USEC(t *testing.T) {
	m := newFakeManager(t)
	t.Setenv(EnvSocket, m.addr)
	t.Setenv(EnvWatchdog, "30000000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	n, err := FromEnv(false)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.WatchdogInterval(); got != 15*time.Second {
		t.Fatalf("watchdog interval = %v, want 15s", got)
	}
	if err := n.Watchdog(); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "WATCHDOG=1\n" {
		t.Fatalf("got %q", got)
	}
}

func TestWatchdogForAnotherPIDIsIgnored(t *testing.T) {
	m := newFakeManager(t)
	t.Setenv(EnvSocket, m.addr)
	t.Setenv(EnvWatchdog, "30000000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()+1))
	n, err := FromEnv(false)
	if err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != 0 || !n.Enabled() {
		t.Fatalf("watchdog %v enabled %v: want notifications on, watchdog off", n.WatchdogInterval(), n.Enabled())
	}
}

func TestMalformedWatchdogIsReportedAndDisabled(t *testing.T) {
	m := newFakeManager(t)
	t.Setenv(EnvSocket, m.addr)
	t.Setenv(EnvWatchdog, "soon")
	t.Setenv(EnvWatchdogPID, "")
	n, err := FromEnv(false)
	if err == nil {
		t.Fatal("want an error for WATCHDOG_USEC=soon")
	}
	if !n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("enabled=%v watchdog=%v: want notifications still on, watchdog off", n.Enabled(), n.WatchdogInterval())
	}
}

func TestUnsetRemovesTheVariablesFromTheEnvironment(t *testing.T) {
	m := newFakeManager(t)
	t.Setenv(EnvSocket, m.addr)
	t.Setenv(EnvWatchdog, "2000000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	n, err := FromEnv(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{EnvSocket, EnvWatchdog, EnvWatchdogPID} {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s still set", k)
		}
	}
	if n.WatchdogInterval() != time.Second || !n.Enabled() {
		t.Fatal("the notifier must keep what it read")
	}
}

func TestUnsupportedSocketKindIsAnError(t *testing.T) {
	t.Setenv(EnvSocket, "vsock:2:1234")
	n, err := FromEnv(false)
	if err == nil || n.Enabled() {
		t.Fatalf("err=%v enabled=%v: want an error and a no-op notifier", err, n.Enabled())
	}
}

func TestSendingToAMissingSocketFails(t *testing.T) {
	n := New(filepath.Join(t.TempDir(), "absent.sock"), 0)
	if err := n.Ready(); err == nil {
		t.Fatal("want an error when nothing listens")
	}
}
