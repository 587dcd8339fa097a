//go:build linux

package command

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gone reports whether pid has exited (a zombie waiting for its reaper
// counts: it runs nothing).
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// leftovers runs script (which prints the pids it leaves behind, one a
// line, after "started") with and without cgroups, and checks that the
// command's own exit code is reported and that every pid is gone.
func leftovers(t *testing.T, script string, timeout time.Duration, wantCode int32) {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	sh := need(t, "/bin/sh")
	need(t, "sleep")
	for _, cg := range []bool{true, false} {
		t.Run(fmt.Sprintf("cgroups=%v", cg), func(t *testing.T) {
			defer func(old bool) { cgroupsEnabled = old }(cgroupsEnabled)
			cgroupsEnabled = cg
			r := newRunner(t, Options{Commands: map[string]Spec{"tree": {Argv: []string{sh, "-c", script}}}})
			res := run(r, "tree", timeout)
			if res.ExitCode != wantCode {
				t.Fatalf("result = %+v, want exit code %d", res, wantCode)
			}
			if wantCode >= 0 && res.Error != "" {
				t.Fatalf("result = %+v, want no error", res)
			}
			lines := strings.Fields(res.Output)
			if len(lines) < 2 || lines[0] != "started" {
				t.Fatalf("output %q, want started and pids", res.Output)
			}
			for _, l := range lines[1:] {
				pid, err := strconv.Atoi(l)
				if err != nil {
					t.Fatalf("output %q: %v", res.Output, err)
				}
				if !gone(pid) {
					t.Errorf("process %d still runs after the command ended (%s)", pid, res.Output)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
	}
}

func TestABackgroundChildDiesWhenTheCommandExits(t *testing.T) {
	// The child holds stdout: the exit code is still sh's own, at once.
	leftovers(t, "echo started; sleep 311 & echo $!; exit 3", 0, 3)
}

func TestASetsidChildDiesWhenTheCommandExits(t *testing.T) {
	need(t, "setsid")
	leftovers(t, "echo started; setsid sleep 312 & echo $!; sleep 0.1", 0, 0)
}

func TestASetsidChildDiesWhenTheCommandTimesOut(t *testing.T) {
	need(t, "setsid")
	leftovers(t, "echo started; setsid sleep 313 & echo $!; sleep 30", 300*time.Millisecond, ExitTimedOut)
}

func TestACommandRunsInItsOwnCgroupWhenTheAgentMayCreateOne(t *testing.T) {
	base := cgroupBase()
	if base == "" {
		t.Skip("no cgroup v2 here")
	}
	probe := base + "/tether-probe-" + strconv.Itoa(os.Getpid())
	if err := os.Mkdir(probe, 0o755); err != nil {
		t.Skipf("cannot create cgroups below %s (not delegated): %v", base, err)
	}
	os.Remove(probe)
	r := newRunner(t, Options{Commands: map[string]Spec{"cg": {Argv: []string{need(t, "/bin/cat"), "/proc/self/cgroup"}}}})
	res := run(r, "cg", 0)
	if res.ExitCode != 0 || !strings.Contains(res.Output, "/tether-cmd-") {
		t.Fatalf("result = %+v, want the command in a tether-cmd-* cgroup", res)
	}
	// and the cgroup is removed afterwards
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tether-cmd-") {
			t.Errorf("cgroup %s left behind", e.Name())
		}
	}
}
