package e2e

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// docCommands returns the curl and grpcurl lines of the ```sh blocks of a
// Markdown file, exactly as written. With strict, any other non-blank,
// non-comment line in an sh block fails the test: every command the document
// shows is run. (The README's blocks also hold make and install lines.)
func docCommands(t *testing.T, path string, strict bool) []string {
	t.Helper()
	return docBlockCommands(t, path, "sh", strict)
}

// docBlockCommands is docCommands for the blocks whose fence is exactly
// "```"+info ("sh", or "sh roles" for the blocks run with API keys).
func docBlockCommands(t *testing.T, path, info string, strict bool) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "```"+info:
			in = true
		case strings.HasPrefix(line, "```"):
			in = false
		case !in || line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "grpcurl "):
			cmds = append(cmds, line)
		case !strict:
		default:
			t.Errorf("%s:%d: an sh block holds a line that is not a curl or grpcurl command (so it would not be tested): %s", path, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// adminCheck is what a docs/ADMIN.md command must do: exit with exit and
// print every string of want.
type adminCheck struct {
	match string // the first check whose match the command contains applies
	exit  int
	want  []string
}

// docJobID is the job id the docs/ADMIN.md job recipes use; the test runs
// them with the id its CreateJob printed.
const docJobID = "0193a1b2c3d4-9f8e7d6c"

var jobIDField = regexp.MustCompile(`"jobId": "([^"]+)"`)

var adminChecks = []adminCheck{
	// Jobs (docs/ADMIN.md shows a placeholder id; see docJobID).
	{"JobService/CreateJob", 0, []string{`"jobId"`, "JOB_STATE_RUNNING"}},
	{"JobService/GetJob", 0, []string{`"jobId"`, `"total": 1`}},
	{"JobService/ListJobResults", 0, []string{`"deviceId": "demo-1"`}},
	{"JobService/ListJobs", 0, []string{`"jobs"`}},
	{"JobService/CancelJob", 0, []string{`"jobId"`}},
	// The fleet views (before the generic DeviceService and /v1/devices checks).
	{"DeviceService/GetDeviceHistory", 0, []string{`"reason": "DISCONNECT_REASON_KICKED"`, `"connectedAt"`, `"endedAt"`}},
	{"/v1/devices/demo-1/history", 0, []string{`"reason":"DISCONNECT_REASON_KICKED"`}},
	{"DeviceService/GetInventory", 0, []string{`"total": "1"`, `"online": "1"`, `"labelKey": "env"`, `"value": "demo"`}},
	{"/v1/inventory", 0, []string{`"total":"1"`, `"value":"demo"`}},
	{"DeviceService/ListNodes", 0, []string{`"alive": true`, `"sessions": "1"`}},
	{"/v1/nodes", 0, []string{`"alive":true`}},
	{"DeviceService/PreRegisterDevice", 0, []string{`"deviceId": "kiosk-7"`, "DEVICE_STATE_NEVER_CONNECTED", `"site": "lobby"`}},
	{"8080/v1/devices -H", 0, []string{`"deviceId":"kiosk-8"`, "DEVICE_STATE_NEVER_CONNECTED"}},
	{"DeviceService/DeleteDevice", 0, []string{"{"}},
	{"-X DELETE", 0, []string{"{"}},
	// The watches end by their time limit: grpcurl exits 64+DEADLINE_EXCEEDED,
	// curl 28 (operation timed out). The snapshot must have been complete.
	{"DeviceService/WatchDevices", 68, []string{"EVENT_TYPE_SNAPSHOT", "demo-1", "EVENT_TYPE_SNAPSHOT_END", "DeadlineExceeded"}},
	{"/v1/devices:watch", 28, []string{`"EVENT_TYPE_SNAPSHOT"`, `"demo-1"`, `"EVENT_TYPE_SNAPSHOT_END"`}},
	{"7070 list", 0, []string{"tether.v1.AgentService", "tether.v1.DeviceService", "grpc.health.v1.Health", "grpc.reflection"}},
	{"describe tether.v1.DeviceService", 0, []string{"rpc ListDevices", "rpc GetDevice", "rpc WatchDevices", "rpc SendCommand", "rpc DisconnectDevice"}},
	{"describe tether.v1.SendCommandRequest", 0, []string{"message SendCommandRequest", "device_id", "timeout"}},
	{"/openapi.json", 0, []string{`"swagger"`, `/v1/devices/{deviceId}:command`}},
	{"DeviceService/SendCommand", 0, []string{`"output": "hello admin\n"`}},
	{"/v1/devices/demo-1:command", 0, []string{`"output":"hello admin\n"`}},
	{"DeviceService/DisconnectDevice", 0, []string{`"leaseId"`, `"node"`}},
	{"/v1/devices/demo-1:disconnect", 0, []string{`"leaseId"`, `"node"`}},
	{"Health/Check", 0, []string{`"status": "SERVING"`}},
	{"7075/healthz", 0, []string{"ok"}},
	{"7075/readyz", 0, []string{"ready"}},
	{"8080/healthz", 0, []string{`{"status":"ok"}`}},
	{"8080/readyz", 0, []string{`{"status":"ok"}`}},
	{"^tether_(sessions|", 0, []string{`tether_sessions{mode="app_pong"} 1`, "tether_connects_total "}},
	{"^tether_(commands_total|", 0, []string{`tether_commands_total{outcome="OK"} 2`, "tether_command_duration_seconds_count 2"}},
	{"^grpc_server_handled_total", 0, []string{`grpc_server_handled_total{grpc_code="OK",grpc_method="SendCommand",grpc_service="tether.v1.DeviceService",grpc_type="unary"} 2`}},
	{"^tether_build_info", 0, []string{`tether_build_info{goversion="go`, ` 1`}},
	{"label_selector", 0, []string{"demo-1", "env"}},
	{"DeviceService/ListDevices", 0, []string{`"deviceId": "demo-1"`, `"online": true`}},
	{"DeviceService/GetDevice", 0, []string{`"deviceId": "demo-1"`, "LIVENESS_MODE_APP_PONG"}},
	{"/v1/devices", 0, []string{`"deviceId":"demo-1"`, `"online":true`}},
}

// runDocCommand runs one curl or grpcurl line of a document with bash in dir
// ("" = here) and env, within 30 s, and returns its output and exit status.
// A curl line fails on an HTTP error status, also in a pipe.
func runDocCommand(t *testing.T, c, dir string, env []string) ([]byte, int) {
	t.Helper()
	line := c
	if strings.HasPrefix(c, "curl ") {
		line = "set -o pipefail; curl --fail-with-body " + strings.TrimPrefix(c, "curl ")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s\n  could not run: %v", c, err)
	}
	return out, code
}

func checkFor(cmd string) (adminCheck, bool) {
	for _, c := range adminChecks {
		if strings.Contains(cmd, c.match) {
			return c, true
		}
	}
	return adminCheck{}, false
}

// sessionLogLine matches the lifecycle log lines docs/ADMIN.md describes.
var (
	startedLine = regexp.MustCompile(`msg="session started" device=demo-1 lease=\d+ node=\S+ remote=127\.0\.0\.1:\d+ mode=app_pong`)
	kickedLine  = regexp.MustCompile(`msg="session ended" device=demo-1 lease=\d+ node=\S+ remote=127\.0\.0\.1:\d+ reason=kicked detail=maintenance`)
)

// TestAdminDocCommandsWorkAsWritten starts the system the way docs/ADMIN.md
// (and `make run`) describes it, and runs every command of the document in
// order. It uses the same fixed ports as the README test, so neither may run
// in parallel.
func TestAdminDocCommandsWorkAsWritten(t *testing.T) {
	cmds := docCommands(t, "../docs/ADMIN.md", true)
	if len(cmds) < 20 {
		t.Fatalf("found only %d commands in docs/ADMIN.md", len(cmds))
	}
	for _, c := range cmds {
		if _, ok := checkFor(c); !ok {
			t.Fatalf("no output check for %s (add one to adminChecks)", c)
		}
	}
	for _, addr := range []string{"127.0.0.1:7070", "127.0.0.1:8080", "127.0.0.1:7075"} {
		if c, err := netDial(addr); err == nil {
			c.Close()
			t.Fatalf("%s is already in use; the docs/ADMIN.md examples need it free", addr)
		}
	}
	grpcurl := grpcurlPath(t)
	srv := start(t, "tether-server", "--listen", "127.0.0.1:7070", "--http", "127.0.0.1:8080", "--metrics", "127.0.0.1:7075")
	waitListening(t, "127.0.0.1:7070")
	waitListening(t, "127.0.0.1:8080")
	waitListening(t, "127.0.0.1:7075")
	demo, err := os.ReadFile("../scripts/demo-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	start(t, "tether-agent", "--server", "127.0.0.1:7070", "--device-id", "demo-1", "--config", writeFile(t, "demo-agent.yaml", demo))
	const base = "http://127.0.0.1:8080"
	waitOnline(t, base, "demo-1", 20*time.Second)

	path := filepath.Dir(grpcurl) + ":" + os.Getenv("PATH")
	jobID := docJobID
	for _, c := range cmds {
		check, _ := checkFor(c)
		before, _ := getDevice(base, "demo-1")
		out, code := runDocCommand(t, strings.ReplaceAll(c, docJobID, jobID), "", append(os.Environ(), "PATH="+path))
		s := string(out)
		if m := jobIDField.FindStringSubmatch(s); m != nil && strings.Contains(c, "CreateJob") {
			jobID = m[1]
		}
		if code != check.exit {
			t.Errorf("%s\n  exit status %d, want %d:\n%s", c, code, check.exit, s)
			continue
		}
		for _, w := range check.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s\n  output lacks %q:\n%s", c, w, s)
			}
		}
		t.Logf("ok (exit %d): %s", code, c)

		if strings.Contains(c, "DisconnectDevice") || strings.Contains(c, ":disconnect") {
			// The kick ended the session; the agent comes back with a new
			// lease, ready for the next command.
			eventually(t, 20*time.Second, func() error {
				d, err := getDevice(base, "demo-1")
				switch {
				case err != nil:
					return err
				case !d.Online || d.Session == nil:
					return errors.New("demo-1 has not reconnected after the kick")
				case before.Session != nil && d.Session.LeaseID == before.Session.LeaseID:
					return errors.New("demo-1 still has its old lease")
				}
				return nil
			})
		}
	}

	// The log lines docs/ADMIN.md shows.
	logs := srv.out.String()
	if !startedLine.MatchString(logs) {
		t.Errorf("no log line matching %s", startedLine)
	}
	if n := len(kickedLine.FindAllString(logs, -1)); n != 2 {
		t.Errorf("%d log lines matching %s, want 2 (one per kick)", n, kickedLine)
	}
}

// roleChecks are the outputs of the "sh roles" blocks of docs/ADMIN.md.
var roleChecks = []adminCheck{
	{"7070 grpc.health.v1.Health/Check", 0, []string{`"status": "SERVING"`}},
	{"-plaintext 127.0.0.1:7070 list", 0, []string{"grpc.health.v1.Health"}},
	{"$VIEWER_KEY\" 127.0.0.1:7070 list", 0, []string{"tether.v1.DeviceService", "tether.v1.AdminService", "grpc.health.v1.Health"}},
	{"DeviceService/GetDevice", 0, []string{`"deviceId": "demo-1"`}},
	{"/v1/devices/demo-1:command", 0, []string{`"output":"hello operator\n"`}},
	{"http://127.0.0.1:8080/v1/devices/demo-1", 0, []string{`"deviceId":"demo-1"`}},
	{"$VIEWER_KEY\" -d '{\"device_id\": \"demo-1\", \"name\": \"echo\"}'", 71, []string{"PermissionDenied", "needs operator"}},
	{"$OPERATOR_KEY\" -d", 0, []string{`"output": "hello operator\n"`}},
	{"AdminService/RevokeToken", 0, []string{`"tokenId": "0123456789abcdef0123"`}},
	{"-import-path api -proto", 0, []string{`"deviceId": "demo-1"`}},
}

// TestAdminDocRoleRecipesWorkAsWritten runs the "sh roles" blocks of
// docs/ADMIN.md against a server with a viewer, an operator and an admin
// key, from the repository root (for -import-path api), in order.
func TestAdminDocRoleRecipesWorkAsWritten(t *testing.T) {
	cmds := docBlockCommands(t, "../docs/ADMIN.md", "sh roles", true)
	if len(cmds) < 9 {
		t.Fatalf("found only %d commands in the sh roles blocks of docs/ADMIN.md", len(cmds))
	}
	check := func(cmd string) (adminCheck, bool) {
		for _, c := range roleChecks {
			if strings.Contains(cmd, c.match) {
				return c, true
			}
		}
		return adminCheck{}, false
	}
	for _, c := range cmds {
		if _, ok := check(c); !ok {
			t.Fatalf("no output check for %s (add one to roleChecks)", c)
		}
	}
	for _, addr := range []string{"127.0.0.1:7070", "127.0.0.1:8080"} {
		if c, err := netDial(addr); err == nil {
			c.Close()
			t.Fatalf("%s is already in use; the docs/ADMIN.md examples need it free", addr)
		}
	}
	keys := map[string]string{"VIEWER_KEY": "doc-viewer-key-0123456789", "OPERATOR_KEY": "doc-operator-key-0123456789", "ADMIN_KEY": "doc-admin-key-0123456789"}
	var lines []string
	env := os.Environ()
	for v, k := range keys {
		role := strings.ToLower(strings.TrimSuffix(v, "_KEY"))
		out, stderr, err := runBin(t, k+"\n", "tether-server", "apikey", "hash", "--role", role, "--name", role)
		if err != nil {
			t.Fatalf("apikey hash: %v %s", err, stderr)
		}
		lines = append(lines, strings.TrimSpace(out))
		env = append(env, v+"="+k)
	}
	keyFile := writeFile(t, "api-keys", []byte(strings.Join(lines, "\n")+"\n"))
	grpcurl := grpcurlPath(t)
	start(t, "tether-server", "--listen", "127.0.0.1:7070", "--http", "127.0.0.1:8080", "--api-keys-file", keyFile)
	waitListening(t, "127.0.0.1:7070")
	waitListening(t, "127.0.0.1:8080")
	start(t, "tether-agent", "--server", "127.0.0.1:7070", "--device-id", "demo-1", "--config", writeAgentConfig(t, ""))
	eventually(t, 20*time.Second, func() error {
		d, _, err := getDeviceWith(http.DefaultClient, "http://127.0.0.1:8080", "demo-1", keys["VIEWER_KEY"])
		if err == nil && !d.Online {
			err = errors.New("demo-1 offline")
		}
		return err
	})
	env = append(env, "PATH="+filepath.Dir(grpcurl)+":"+os.Getenv("PATH"))
	for _, c := range cmds {
		want, _ := check(c)
		out, code := runDocCommand(t, c, "..", env)
		if code != want.exit {
			t.Errorf("%s\n  exit status %d, want %d:\n%s", c, code, want.exit, out)
			continue
		}
		for _, w := range want.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s\n  output lacks %q:\n%s", c, w, out)
			}
		}
		if strings.Contains(c, "127.0.0.1:7070 list") && !strings.Contains(c, "Bearer") && strings.Contains(string(out), "tether.v1.") {
			t.Errorf("%s\n  reflection without a key describes more than health:\n%s", c, out)
		}
		t.Logf("ok (exit %d): %s", code, c)
	}
}
