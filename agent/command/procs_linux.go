//go:build linux

package command

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// markerVar is set in every command's environment to a value unique to the
// run; processes that left the process group and the cgroup is unavailable
// are still found by it.
const markerVar = "TETHER_COMMAND_RUN"

// cgroupsEnabled lets tests force the process-group fallback.
var cgroupsEnabled = true

// procs is everything one command started: its process group, its own
// cgroup v2 (when the agent may create one below its own cgroup, e.g. a
// systemd unit with Delegate=yes, or root), and a marker in the environment.
type procs struct {
	marker string
	cg     string // cgroup directory; "" = none
	cgFD   *os.File
	pid    int
}

// cgroupBase is this process's own cgroup v2 directory, found once.
var cgroupBase = sync.OnceValue(func() string {
	mnt := cgroup2Mount()
	if mnt == "" {
		return ""
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, filepath.Clean("/"+p))
		}
	}
	return ""
})

func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return f[4]
		}
	}
	return ""
}

// prepare sets cmd up to run in a new process group, its own cgroup when
// possible, and with the run's marker in its environment.
func prepare(cmd *exec.Cmd, cgroup bool) *procs {
	var id [8]byte
	_, _ = rand.Read(id[:])
	p := &procs{marker: markerVar + "=" + hex.EncodeToString(id[:])}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env, p.marker)
	attr := &syscall.SysProcAttr{Setpgid: true}
	if base := cgroupBase(); cgroup && cgroupsEnabled && base != "" {
		dir := filepath.Join(base, "tether-cmd-"+hex.EncodeToString(id[:]))
		if err := os.Mkdir(dir, 0o755); err == nil {
			if fd, err := os.Open(dir); err == nil {
				p.cg, p.cgFD = dir, fd
				attr.UseCgroupFD, attr.CgroupFD = true, int(fd.Fd())
			} else {
				_ = os.Remove(dir)
			}
		}
	}
	cmd.SysProcAttr = attr
	return p
}

// hasCgroup reports whether the command was set up to start in its own
// cgroup.
func (p *procs) hasCgroup() bool { return p.cg != "" }

// isolation names how the command's processes are tracked (for errors).
func (p *procs) isolation() string {
	if p.cg != "" {
		return "cgroup"
	}
	return "process group"
}

func (p *procs) started(pid int) {
	p.pid = pid
	if p.cgFD != nil {
		p.cgFD.Close()
		p.cgFD = nil
	}
}

// killAll kills every process the command started, wherever it went: the
// process group, the cgroup, and any process that carries the marker (a
// child that called setsid left the group; without a cgroup only the marker
// finds it). It returns once none is left alive, or after about a second.
func (p *procs) killAll() {
	if p.pid > 0 {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	for i := 0; i < 50; i++ {
		left := 0
		if p.cg != "" {
			left = p.killCgroup()
		} else {
			left = p.killMarked()
		}
		if left == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killCgroup kills the cgroup's processes; it returns how many were alive.
func (p *procs) killCgroup() int {
	pids := readPids(filepath.Join(p.cg, "cgroup.procs"))
	if len(pids) == 0 {
		return 0
	}
	if err := os.WriteFile(filepath.Join(p.cg, "cgroup.kill"), []byte("1"), 0); err != nil {
		for _, pid := range pids { // kernels before 5.14 have no cgroup.kill
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return len(pids)
}

func readPids(path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// killMarked kills every live process whose environment holds the marker.
func (p *procs) killMarked() int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := []byte(p.marker)
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !hasEntry(env, want) || zombie(pid) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		n++
	}
	return n
}

func hasEntry(env, want []byte) bool {
	for _, kv := range bytes.Split(env, []byte{0}) {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// zombie reports whether pid has exited and only waits for its parent.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// cleanup removes the cgroup (after killAll emptied it).
func (p *procs) cleanup() error {
	if p.cgFD != nil {
		p.cgFD.Close()
	}
	if p.cg == "" {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = os.Remove(p.cg); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", p.cg, err)
}
