package envflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Parse parses args into fs, then, for every flag not set on the command
// line, applies the environment variable EnvName(prefix, name) when it is set
// to a non-empty value. An empty variable counts as unset. Flags named
// "help", "h" and "version" are actions, not settings, and are never read
// from the environment (a stray TETHER_VERSION must not turn a daemon into
// a version printer).
//
// Errors are one line that names the flag or variable and says what is
// wanted, e.g. `--ping-interval "5": want a duration with a unit, such as
// 10s, 500ms or 1m30s` or `TETHER_PING_INTERVAL="5": …`; the usage text is
// printed only for -h (Parse then returns flag.ErrHelp). An unknown flag
// names the closest known one. Afterwards fs.Visit visits the flags set
// either way.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	return parse(fs, prefix, args, os.LookupEnv)
}

func parse(fs *flag.FlagSet, prefix string, args []string, lookup func(string) (string, bool)) error {
	var failed *value
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(*value); !ok {
			f.Value = &value{Value: f.Value, name: f.Name, failed: &failed}
		} else {
			f.Value.(*value).failed = &failed
		}
	})
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err != nil && failed != nil:
		return failed.err
	case err != nil:
		return commandLineError(fs, err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || onCommandLine[f.Name] || !fromEnv(f.Name) {
			return
		}
		key := EnvName(prefix, f.Name)
		v, ok := lookup(key)
		if !ok || v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q (--%s): %s", key, v, f.Name, want(f.Value, e))
			return
		}
		if w, ok := f.Value.(*value); ok {
			w.env = key + "=" + v
		}
	})
	return err
}

// commandLineError rewrites the flag package's errors into one actionable
// line: an unknown flag gets the closest known name.
func commandLineError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if c := closest(name, names); c != "" {
			return fmt.Errorf("unknown flag --%s (did you mean --%s? see --help)", name, c)
		}
		return fmt.Errorf("unknown flag --%s (see --help)", name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("flag --%s needs a value (--%s=VALUE)", name, name)
	}
	return err
}

// value wraps a flag.Value so that a bad value yields an error that says
// what is wanted, instead of the flag package's bare "parse error".
type value struct {
	flag.Value
	name   string
	env    string // "KEY=value" when the value came from the environment
	failed **value
	err    error
}

func (v *value) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	// The flag package reports "invalid value ... for flag -name: ..." and
	// hides the cause of numeric errors; remember a full sentence instead.
	v.err = fmt.Errorf("--%s %q: %s", v.name, s, want(v.Value, err))
	*v.failed = v
	return err
}

// Get implements flag.Getter when the wrapped value does.
// String is the wrapped flag's value. flag.PrintDefaults also calls it on a
// zero value (to tell whether a default is worth printing), which wraps no
// flag.
func (v *value) String() string {
	if v == nil || v.Value == nil {
		return ""
	}
	return v.Value.String()
}

func (v *value) Get() any {
	if g, ok := v.Value.(flag.Getter); ok {
		return g.Get()
	}
	return v.Value.String()
}

// IsBoolFlag keeps "--flag" without a value working for booleans.
func (v *value) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// want describes the value a flag takes, given the error its Set returned.
func want(v flag.Value, err error) string {
	if w, ok := v.(*value); ok {
		v = w.Value
	}
	g, ok := v.(flag.Getter)
	if !ok {
		return err.Error()
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration with a unit, such as 10s, 500ms or 1m30s"
	case bool:
		return "want true or false"
	case int, int64, uint, uint64:
		return "want a whole number"
	case float64:
		return "want a number"
	}
	return err.Error()
}

func fromEnv(name string) bool {
	switch name {
	case "help", "h", "version":
		return false
	}
	return true
}

// EnvName is the variable for flag name: prefix, an underscore, and the name
// upper-cased with every character outside [A-Z0-9] turned into '_'
// (EnvName("TETHER", "log-level") = "TETHER_LOG_LEVEL"). An empty prefix
// gives the bare name.
func EnvName(prefix, name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	if prefix == "" {
		return string(b)
	}
	return strings.TrimSuffix(prefix, "_") + "_" + string(b)
}
