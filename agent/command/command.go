package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Limits on what a Command may carry and produce.
const (
	// MaxArgs is the most arguments a Command may have.
	MaxArgs = 64
	// MaxArgBytes is the longest one argument may be.
	MaxArgBytes = 4 << 10
	// MaxNameLen is the longest command name.
	MaxNameLen = 64
	// DefaultOutputCap is the output cap of a zero Options.
	DefaultOutputCap = 64 << 10
	// MaxOutputCap keeps a result well inside gRPC's default 4 MiB message
	// limit on the server.
	MaxOutputCap = 1 << 20
	// DefaultTimeout bounds a command that names no shorter timeout.
	DefaultTimeout = 60 * time.Second
	// waitDelay bounds how long Run waits for output after the command and
	// everything it started were killed (a process that escaped every
	// tracking method may still hold the pipe open).
	waitDelay = 2 * time.Second
)

// Exit codes of results that are not a process's own.
const (
	// ExitRefused is the exit code of a command that did not run (unknown
	// name, bad arguments, could not start).
	ExitRefused = -1
	// ExitTimedOut is the exit code of a command killed at its timeout.
	ExitTimedOut = -2
)

// Built-in command names; config cannot redefine them.
const (
	Echo = "echo"
	Info = "info"
)

// Spec is one configured command.
type Spec struct {
	// Argv is the program and its fixed leading arguments. The Command's
	// args are appended; nothing is interpreted by a shell. Name a wrapper
	// script here when the arguments themselves must be restricted.
	Argv []string
	// Timeout bounds one run (0 = Options.DefaultTimeout). The effective
	// timeout is the smallest of this and the Command's own timeout.
	Timeout time.Duration
	// Usage says how the arguments look ("<service>"); it is reported to
	// the server with the allow-list (at most MaxUsageBytes), never Argv.
	Usage string
	// MaxArgs is the most arguments a run accepts (0 = MaxArgs); NoArgs
	// refuses every argument.
	MaxArgs int
	NoArgs  bool
}

// MaxUsageBytes bounds a Spec's Usage.
const MaxUsageBytes = 128

// MaxReported is the most commands an agent reports in its device info (the
// server refuses more: session.MaxInfoCommands).
const MaxReported = 64

// Options configure a Runner. Zero values mean the defaults.
type Options struct {
	// Commands are the named commands besides the built-ins.
	Commands map[string]Spec
	// OutputCap is how many bytes of combined stdout and stderr a result
	// keeps (default 64 KiB, at most 1 MiB).
	OutputCap int
	// DefaultTimeout bounds commands whose Spec (and built-ins) set none
	// (default 60s).
	DefaultTimeout time.Duration
	// Info returns the device info for the "info" built-in. When nil, info
	// reports an error.
	Info func() (*tetherv1.DeviceInfo, error)
}

// Runner runs allow-listed commands. It is safe for concurrent use.
type Runner struct {
	opts    Options
	allowed string // "echo, info, ..." for error messages
}

// New validates opts and returns a Runner.
func New(opts Options) (*Runner, error) {
	if opts.OutputCap == 0 {
		opts.OutputCap = DefaultOutputCap
	}
	if opts.OutputCap < 0 || opts.OutputCap > MaxOutputCap {
		return nil, fmt.Errorf("output cap %d: want 1 to %d bytes", opts.OutputCap, MaxOutputCap)
	}
	if opts.DefaultTimeout == 0 {
		opts.DefaultTimeout = DefaultTimeout
	}
	if opts.DefaultTimeout < 0 {
		return nil, fmt.Errorf("default command timeout %v: want a positive duration", opts.DefaultTimeout)
	}
	cmds := make(map[string]Spec, len(opts.Commands))
	for name, s := range opts.Commands {
		if err := ValidateName(name); err != nil {
			return nil, err
		}
		if name == Echo || name == Info {
			return nil, fmt.Errorf("command %q: the name is a built-in and cannot be redefined", name)
		}
		if len(s.Argv) == 0 || s.Argv[0] == "" {
			return nil, fmt.Errorf("command %q: argv is empty; want the program and its fixed arguments", name)
		}
		for _, a := range s.Argv {
			if strings.IndexByte(a, 0) >= 0 {
				return nil, fmt.Errorf("command %q: argv contains a NUL byte", name)
			}
		}
		if s.Timeout < 0 {
			return nil, fmt.Errorf("command %q: timeout %v is negative", name, s.Timeout)
		}
		if len(s.Usage) > MaxUsageBytes || !utf8.ValidString(s.Usage) {
			return nil, fmt.Errorf("command %q: usage: want at most %d bytes of UTF-8", name, MaxUsageBytes)
		}
		if s.MaxArgs < 0 || s.MaxArgs > MaxArgs {
			return nil, fmt.Errorf("command %q: max args %d: want 0 to %d", name, s.MaxArgs, MaxArgs)
		}
		cmds[name] = Spec{Argv: slices.Clone(s.Argv), Timeout: s.Timeout, Usage: s.Usage, MaxArgs: s.MaxArgs, NoArgs: s.NoArgs}
	}
	opts.Commands = cmds
	return &Runner{opts: opts, allowed: strings.Join(allowedNames(cmds), ", ")}, nil
}

func allowedNames(cmds map[string]Spec) []string {
	names := []string{Echo, Info}
	for n := range cmds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Allowed returns the names this Runner accepts, sorted.
func (r *Runner) Allowed() []string { return allowedNames(r.opts.Commands) }

// maxArgs is how many arguments spec accepts.
func (s Spec) maxArgs() int {
	switch {
	case s.NoArgs:
		return 0
	case s.MaxArgs > 0:
		return s.MaxArgs
	}
	return MaxArgs
}

// Specs describes the allow-list for the device info: per command its name,
// usage, argument bound and timeout, sorted by name. It never carries Argv:
// which programs run, and where they live, stays on the device.
func (r *Runner) Specs() []*tetherv1.CommandSpec {
	names := r.Allowed()
	out := make([]*tetherv1.CommandSpec, 0, len(names))
	for _, n := range names {
		cs := &tetherv1.CommandSpec{Name: n}
		switch n {
		case Echo:
			cs.Usage, cs.MaxArgs = "<text>...", MaxArgs
		case Info:
		default:
			s := r.opts.Commands[n]
			cs.Usage, cs.MaxArgs = s.Usage, int32(s.maxArgs())
			if s.Timeout > 0 {
				cs.Timeout = durationpb.New(s.Timeout)
			}
		}
		out = append(out, cs)
	}
	return out
}

// ValidateName reports why name cannot be a command name: 1-64 characters
// of [A-Za-z0-9._-].
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("command name %q: want 1-%d characters of [A-Za-z0-9._-]", clip(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("command name %q: want only [A-Za-z0-9._-]", clip(name))
		}
	}
	return nil
}

// ValidateArgs reports why args cannot be passed to a command.
func ValidateArgs(args []string) error {
	if len(args) > MaxArgs {
		return fmt.Errorf("%d arguments: at most %d allowed", len(args), MaxArgs)
	}
	for i, a := range args {
		if len(a) > MaxArgBytes {
			return fmt.Errorf("argument %d is %d bytes: at most %d allowed", i, len(a), MaxArgBytes)
		}
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argument %d contains a NUL byte", i)
		}
		if !utf8.ValidString(a) {
			return fmt.Errorf("argument %d is not valid UTF-8", i)
		}
	}
	return nil
}

// clip shortens s for an error message so that a hostile name cannot make a
// result large.
func clip(s string) string {
	const n = MaxNameLen
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// Run runs c and returns its result; it never returns nil. The command's
// timeout is the smallest of c.Timeout (when positive), the Spec's timeout
// and the Runner's default; ctx cancels it sooner (the session ended).
func (r *Runner) Run(ctx context.Context, c *tetherv1.Command) *tetherv1.CommandResult {
	start := time.Now()
	res := r.run(ctx, c)
	res.CommandId = c.GetCommandId()
	res.Duration = durationpb.New(time.Since(start))
	return res
}

func refused(format string, a ...any) *tetherv1.CommandResult {
	return &tetherv1.CommandResult{ExitCode: ExitRefused, Error: fmt.Sprintf(format, a...)}
}

func (r *Runner) run(ctx context.Context, c *tetherv1.Command) *tetherv1.CommandResult {
	name, args := c.GetName(), c.GetArgs()
	spec, configured := r.opts.Commands[name]
	if !configured && name != Echo && name != Info {
		return refused("unknown command %q; allowed: %s", clip(name), r.allowed)
	}
	if err := ValidateArgs(args); err != nil {
		return refused("command %q: %v", name, err)
	}
	if n := spec.maxArgs(); configured && len(args) > n || name == Info && len(args) > 0 {
		if name == Info {
			n = 0
		}
		return refused("command %q: %d arguments: it takes at most %d", name, len(args), n)
	}
	timeout := r.opts.DefaultTimeout
	if spec.Timeout > 0 {
		timeout = spec.Timeout
	}
	if t := c.GetTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = min(timeout, t.AsDuration())
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	switch {
	case configured:
		return r.exec(ctx, name, timeout, append(slices.Clone(spec.Argv), args...))
	case name == Echo:
		return r.output(0, []byte(strings.Join(args, " ")+"\n"))
	default: // Info
		if r.opts.Info == nil {
			return refused("command %q: device info is not available", name)
		}
		info, err := r.opts.Info()
		if err != nil {
			return refused("command %q: %v", name, err)
		}
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(info)
		if err != nil {
			return refused("command %q: %v", name, err)
		}
		return r.output(0, append(b, '\n'))
	}
}

// output builds a result from complete output, applying the cap.
func (r *Runner) output(code int32, out []byte) *tetherv1.CommandResult {
	w := &capped{limit: r.opts.OutputCap}
	w.Write(out)
	s, trunc := w.result()
	return &tetherv1.CommandResult{ExitCode: code, Output: s, OutputTruncated: trunc}
}

func (r *Runner) exec(ctx context.Context, name string, timeout time.Duration, argv []string) *tetherv1.CommandResult {
	// One pipe we own for stdout and stderr: Wait then returns when the
	// process exits, not when every child holding the pipe has let go.
	pr, pw, err := os.Pipe()
	if err != nil {
		return refused("command %q: %v", name, err)
	}
	var cmd *exec.Cmd
	var ps *procs
	for _, cgroup := range []bool{true, false} {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = pw, pw
		ps = prepare(cmd, cgroup)
		if err = cmd.Start(); err == nil || !ps.hasCgroup() {
			break
		}
		// Starting inside the cgroup failed (a kernel without
		// CLONE_INTO_CGROUP): run it with the process group only.
		_ = ps.cleanup()
	}
	defer ps.cleanup() //nolint:errcheck // best effort: an empty cgroup left behind is harmless
	pw.Close()
	if err != nil {
		pr.Close()
		return refused("command %q: %v", name, err)
	}
	ps.started(cmd.Process.Pid)
	out := &capped{limit: r.opts.OutputCap}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	killed := false
	select {
	case err = <-waited:
	case <-ctx.Done():
		killed = true
		ps.killAll()
		err = <-waited
	}
	// Whatever the command left behind (a background child, one that
	// called setsid) dies with it.
	ps.killAll()
	select {
	case <-copied:
	case <-time.After(waitDelay): // a process we could not find holds the pipe
		pr.Close()
		<-copied
	}
	pr.Close()
	s, trunc := out.result()
	res := &tetherv1.CommandResult{Output: s, OutputTruncated: trunc}
	var exitErr *exec.ExitError
	switch {
	case killed && errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.ExitCode = ExitTimedOut
		res.Error = fmt.Sprintf("command %q timed out after %v and was killed (with everything it started)", name, timeout)
	case killed:
		res.ExitCode = ExitTimedOut
		res.Error = fmt.Sprintf("command %q was cancelled: %v", name, context.Cause(ctx))
	case err == nil:
	case errors.As(err, &exitErr):
		res.ExitCode = int32(exitErr.ExitCode()) // -1 when killed by a signal
		if !exitErr.Exited() {
			res.Error = fmt.Sprintf("command %q: %v", name, exitErr)
		}
	default:
		res.ExitCode = ExitRefused
		res.Error = fmt.Sprintf("command %q: %v", name, err)
	}
	return res
}

// capped keeps the first limit bytes written to it and counts the rest. It
// never fails a write, so the command is never blocked or killed by a full
// pipe. exec serializes writes when Stdout and Stderr are the same writer.
type capped struct {
	limit int
	buf   bytes.Buffer
	more  bool
}

func (w *capped) Write(p []byte) (int, error) {
	room := w.limit - w.buf.Len()
	if len(p) > room {
		w.more = true
		w.buf.Write(p[:max(room, 0)])
	} else {
		w.buf.Write(p)
	}
	return len(p), nil
}

// result returns the kept output as valid UTF-8 (proto strings must be):
// a rune cut at the cap is dropped, other invalid bytes become U+FFFD.
func (w *capped) result() (string, bool) {
	b := w.buf.Bytes()
	if w.more {
		// Drop a trailing rune that the cap cut in half.
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i]
				}
				break
			}
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), w.more
}
