package command

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// FuzzRun feeds arbitrary names and arguments (newline-separated) to a
// Runner with only the built-ins, and checks that it never panics, always
// answers with a marshalable result, and refuses exactly what it should.
func FuzzRun(f *testing.F) {
	f.Add("echo", "hello\nworld")
	f.Add("info", "")
	f.Add("reboot", "now")
	f.Add("", "")
	f.Add(strings.Repeat("n", 100), "x")
	f.Add("echo", strings.Repeat("a\n", MaxArgs+1))
	f.Add("echo", "\x00")
	f.Add("echo", "\xff\xfe")
	const cap = 256
	r, err := New(Options{OutputCap: cap, Info: func() (*tetherv1.DeviceInfo, error) {
		return &tetherv1.DeviceInfo{Hostname: "fuzz"}, nil
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name, rawArgs string) {
		var args []string
		if rawArgs != "" {
			args = strings.Split(rawArgs, "\n")
		}
		res := r.Run(context.Background(), &tetherv1.Command{CommandId: "f", Name: name, Args: args})
		if res == nil {
			t.Fatal("nil result")
		}
		if _, err := proto.Marshal(res); err != nil {
			t.Fatalf("result does not marshal: %v (%+v)", err, res)
		}
		if !utf8.ValidString(res.Output) || len(res.Output) > 3*cap {
			t.Fatalf("output %d bytes, valid=%v", len(res.Output), utf8.ValidString(res.Output))
		}
		if len(res.Error) > 1024 {
			t.Fatalf("error message is %d bytes", len(res.Error))
		}
		known := name == Echo || name == Info
		argsOK := ValidateArgs(args) == nil
		switch {
		case !known:
			if res.ExitCode != ExitRefused || !strings.HasPrefix(res.Error, "unknown command ") {
				t.Fatalf("unknown %q: %+v", name, res)
			}
		case !argsOK:
			if res.ExitCode != ExitRefused || res.Error == "" {
				t.Fatalf("bad args accepted: %+v", res)
			}
		case name == Echo:
			want := strings.Join(args, " ") + "\n"
			if res.Error != "" || (len(want) <= cap && res.Output != want) || (len(want) > cap) != res.OutputTruncated {
				t.Fatalf("echo %q: %+v", args, res)
			}
		}
	})
}
