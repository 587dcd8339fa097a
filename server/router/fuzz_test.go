package router_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/server/router"
)

// FuzzValidateCommand: the server-side command validator never panics,
// answers INVALID_ARGUMENT or nil, and accepts exactly names of
// [A-Za-z0-9._-]{1,64} with at most 64 arguments of at most 4 KiB.
func FuzzValidateCommand(f *testing.F) {
	for _, seed := range []struct {
		name string
		args string
	}{
		{"echo", "hello\x00world"}, {"", ""}, {"rm -rf", "/"}, {"info", ""}, {"a.b_c-d", strings.Repeat("x", 5000)},
		{strings.Repeat("n", 65), ""}, {"é", ""}, {"echo", strings.Repeat("a\x00", 70)},
	} {
		f.Add(seed.name, seed.args)
	}
	f.Fuzz(func(t *testing.T, name, joined string) {
		var args []string
		if joined != "" {
			args = strings.Split(joined, "\x00")
		}
		err := router.ValidateCommand(name, args)
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("ValidateCommand(%q, %d args) = %v, want INVALID_ARGUMENT or nil", name, len(args), err)
		}
		ok := name != "" && len(name) <= router.MaxCommandNameBytes &&
			strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == "" &&
			len(args) <= router.MaxCommandArgs
		for _, a := range args {
			ok = ok && len(a) <= router.MaxCommandArgBytes
		}
		if (err == nil) != ok {
			t.Fatalf("ValidateCommand(%q, %d args) = %v, want ok=%v", name, len(args), err, ok)
		}
	})
}
