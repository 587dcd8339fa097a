package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhq/tether/agent/command"
	"github.com/tetherhq/tether/api/deviceid"
)

// DefaultPath is where the agent looks for its config when --config is not
// given.
const DefaultPath = "/etc/tether/agent.yaml"

// maxFileSize bounds what Load reads; a config is a few KiB.
const maxFileSize = 1 << 20

// File is the agent config file. Every field is optional.
type File struct {
	// Server is the server address (host:port or dns:///host:port), or
	// several: a comma-separated string or a YAML list. The agent moves to
	// the next one when a server fails, refuses it or drains.
	Server Servers `yaml:"server"`
	// DeviceID overrides the default id (the primary MAC with dashes).
	DeviceID string `yaml:"device_id"`
	// Labels are reported in the device info.
	Labels map[string]string `yaml:"labels"`
	// LegacyNoPong makes the agent behave like an old agent that never
	// answers Pings.
	LegacyNoPong bool `yaml:"legacy_no_pong"`
	// OutputCap is the command output cap in bytes (0 = the default).
	OutputCap int `yaml:"output_cap"`
	// Commands are the named commands besides the built-ins echo and info.
	Commands map[string]Command `yaml:"commands"`
	// CA is a PEM bundle that verifies the server certificate; setting it
	// (or TLSCert) turns TLS on.
	CA string `yaml:"ca"`
	// TLSCert and TLSKey are the device's client certificate and key.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TLS turns TLS on with the system roots (implied by CA and TLSCert).
	TLS bool `yaml:"tls"`
	// TokenFile holds the device token (tether-server token issue).
	TokenFile string `yaml:"token_file"`
}

// Servers is one server address or several, comma-separated; in YAML it
// may also be a list of strings.
type Servers string

// UnmarshalYAML accepts a string or a list of strings.
func (s *Servers) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var v string
		if err := n.Decode(&v); err != nil {
			return err
		}
		*s = Servers(v)
		return nil
	case yaml.SequenceNode:
		var v []string
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: server: want a list of host:port strings", n.Line)
		}
		*s = Servers(strings.Join(v, ","))
		return nil
	}
	return fmt.Errorf("line %d: server: want host:port or a list of them", n.Line)
}

// Command is one allow-listed command.
type Command struct {
	// Argv is the program and its fixed arguments; the request's args are
	// appended. No shell is involved.
	Argv []string `yaml:"argv"`
	// Timeout bounds one run (e.g. "10s"; empty = the agent's default).
	Timeout Duration `yaml:"timeout"`
	// Usage tells people how the arguments look ("<service>"); the agent
	// reports it with the command's name (never argv) to the server.
	Usage string `yaml:"usage"`
	// MaxArgs bounds the request's arguments (absent = 64; 0 = none).
	MaxArgs *int `yaml:"max_args"`
}

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as \"10s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: want a duration such as \"10s\" (%v)", n.Line, s, err)
	}
	*d = Duration(v)
	return nil
}

// CommandSpecs converts Commands for command.Options.
func (f *File) CommandSpecs() map[string]command.Spec {
	if len(f.Commands) == 0 {
		return nil
	}
	m := make(map[string]command.Spec, len(f.Commands))
	for name, c := range f.Commands {
		s := command.Spec{Argv: c.Argv, Timeout: time.Duration(c.Timeout), Usage: c.Usage}
		if c.MaxArgs != nil {
			s.MaxArgs, s.NoArgs = *c.MaxArgs, *c.MaxArgs == 0
		}
		m[name] = s
	}
	return m
}

// Load reads, checks and validates the config file at path. A missing file
// is an error wrapping fs.ErrNotExist.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if err := checkMode(path, st); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("agent config %s: larger than %d bytes", path, maxFileSize)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	return cfg, nil
}

// LoadDefault loads DefaultPath, or returns an empty File when it does not
// exist: an agent without a config file runs on flags and defaults.
func LoadDefault() (*File, error) { return loadOptional(DefaultPath) }

func loadOptional(path string) (*File, error) {
	f, err := Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &File{}, nil
	}
	return f, err
}

// checkMode refuses anything but a regular file that only its owner can
// write: whoever can write this file chooses the commands the agent runs.
func checkMode(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("agent config %s: not a regular file (%v)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("agent config %s is group- or world-writable (mode %04o); it decides which commands the agent runs, so only its owner may write it: chmod go-w %s", path, perm, path)
	}
	return nil
}

// Parse decodes and validates a config document. An empty document is an
// empty File.
func Parse(data []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, clarify(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("more than one YAML document; want exactly one")
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type config\.(\w+)`)

// clarify rewrites yaml's "field x not found in type config.File" as an
// unknown-field message that lists what is allowed.
func clarify(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = unknownField.ReplaceAllStringFunc(m, func(s string) string {
			sub := unknownField.FindStringSubmatch(s)
			known := "server, device_id, labels, legacy_no_pong, output_cap, commands, ca, tls_cert, tls_key, tls, token_file"
			where := "top level"
			if sub[2] == "Command" {
				known, where = "argv, timeout, usage, max_args", "a command"
			}
			return fmt.Sprintf("unknown field %q in %s (known fields: %s)", sub[1], where, known)
		})
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Validate reports the first problem with the values.
func (f *File) Validate() error {
	if f.DeviceID != "" {
		if err := deviceid.Validate(f.DeviceID); err != nil {
			return fmt.Errorf("device_id: %w", err)
		}
	}
	for k := range f.Labels {
		if k == "" {
			return errors.New("labels: empty label name")
		}
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return errors.New("tls_cert and tls_key go together")
	}
	if f.OutputCap < 0 || f.OutputCap > command.MaxOutputCap {
		return fmt.Errorf("output_cap %d: want 0 (default) to %d bytes", f.OutputCap, command.MaxOutputCap)
	}
	for name, c := range f.Commands {
		if err := command.ValidateName(name); err != nil {
			return fmt.Errorf("commands: %w", err)
		}
		if name == command.Echo || name == command.Info {
			return fmt.Errorf("commands.%s: %q is a built-in and cannot be redefined", name, name)
		}
		if len(c.Argv) == 0 || c.Argv[0] == "" {
			return fmt.Errorf("commands.%s: argv is empty; want e.g. argv: [\"/usr/bin/uptime\"]", name)
		}
		if c.Timeout < 0 {
			return fmt.Errorf("commands.%s: timeout %v is negative", name, time.Duration(c.Timeout))
		}
		if len(c.Usage) > command.MaxUsageBytes {
			return fmt.Errorf("commands.%s: usage is %d bytes, at most %d", name, len(c.Usage), command.MaxUsageBytes)
		}
		if c.MaxArgs != nil && (*c.MaxArgs < 0 || *c.MaxArgs > command.MaxArgs) {
			return fmt.Errorf("commands.%s: max_args %d: want 0 to %d", name, *c.MaxArgs, command.MaxArgs)
		}
	}
	return nil
}
