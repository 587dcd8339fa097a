package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "tether-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/tether-server", "../cmd/tether-agent", "../cmd/tether-gateway")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a running binary whose output is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs bin with args; the process is stopped (SIGTERM, then SIGKILL)
// when the test ends, and its output is logged if the test failed.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return startIn(t, "", bin, args...)
}

// startIn is start with a working directory ("" = the test's own).
func startIn(t *testing.T, dir, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TETHER_LOG_LEVEL=debug")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: bin, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- %s %s output:\n%s", bin, strings.Join(args, " "), out.String())
		}
	})
	return p
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// stop sends SIGTERM and waits up to grace before SIGKILL; it returns the
// exit error.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// wait waits for the process to exit on its own.
func (p *proc) wait(t *testing.T, limit time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %v", p.name, limit)
		return nil
	}
}

// eventually polls f every 50ms until it returns nil or limit passes. It is
// for waiting on processes, not for asserting on durations.
func eventually(t *testing.T, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", limit, err)
}

// getJSON fetches url and decodes the JSON body into v; non-2xx is an error.
func getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// device is the JSON shape of a device, as the gateway returns it (the
// fields the e2e tests read).
type device struct {
	DeviceID string `json:"deviceId"`
	Online   bool   `json:"online"`
	Info     struct {
		Hostname     string            `json:"hostname"`
		Mac          string            `json:"mac"`
		AgentVersion string            `json:"agentVersion"`
		Labels       map[string]string `json:"labels"`
		BootID       string            `json:"bootId"`
	} `json:"info"`
	Session *struct {
		LeaseID       string    `json:"leaseId"`
		Node          string    `json:"node"`
		LivenessMode  string    `json:"livenessMode"`
		RemoteAddress string    `json:"remoteAddress"`
		ConnectedAt   time.Time `json:"connectedAt"`
	} `json:"session"`
	LastDisconnect *struct {
		Reason  string    `json:"reason"`
		LeaseID string    `json:"leaseId"`
		Restart string    `json:"restart"`
		Node    string    `json:"node"`
		Time    time.Time `json:"time"`
		Message string    `json:"message"`
	} `json:"lastDisconnect"`
}

func getDevice(base, id string) (device, error) {
	var resp struct {
		Device device `json:"device"`
	}
	err := getJSON(base+"/v1/devices/"+id, &resp)
	return resp.Device, err
}

// waitOnline waits until the device reads online through the gateway.
func waitOnline(t *testing.T, base, id string, limit time.Duration) device {
	t.Helper()
	var d device
	eventually(t, limit, func() error {
		var err error
		if d, err = getDevice(base, id); err != nil {
			return err
		}
		if !d.Online {
			return fmt.Errorf("device %s offline: %+v", id, d.LastDisconnect)
		}
		return nil
	})
	return d
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// lines scans r line by line into a channel (for watch streams).
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 1024)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

func netDial(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 200*time.Millisecond)
}
