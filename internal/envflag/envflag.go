package envflag

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Parse parses args into fs, then, for every flag not set on the command
// line, applies the environment variable EnvName(prefix, name) when it is set
// to a non-empty value. An empty variable counts as unset. Flags named
// "help", "h" and "version" are actions, not settings, and are never read
// from the environment (a stray TETHER_VERSION must not turn a daemon into
// a version printer).
//
// Parse returns fs.Parse's error unchanged (flag.ErrHelp for -h), and for a
// bad environment value an error naming the variable, e.g.
// `TETHER_PING_INTERVAL="10": time: missing unit in duration "10"`.
// Afterwards fs.Visit visits the flags set either way.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	return parse(fs, prefix, args, os.LookupEnv)
}

func parse(fs *flag.FlagSet, prefix string, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var err error
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
			err = fmt.Errorf("%s=%q: %w (flag -%s)", key, v, e, f.Name)
		}
	})
	return err
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
