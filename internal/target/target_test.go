package target

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"127.0.0.1:7070", []string{"127.0.0.1:7070"}, ""},
		{"a:7070, b:7070", []string{"a:7070", "b:7070"}, ""},
		{"dns:///tether.example.com:7070", []string{"dns:///tether.example.com:7070"}, ""},
		{"[::1]:7070,unix:///run/tether.sock", []string{"[::1]:7070", "unix:///run/tether.sock"}, ""},
		{"http://127.0.0.1:7070", nil, `server address "http://127.0.0.1:7070": give host:port without http://`},
		{"127.0.0.1", nil, `server address "127.0.0.1": missing port (e.g. 127.0.0.1:7070)`},
		{"dns:///tether.example.com", nil, `server address "dns:///tether.example.com": missing port`},
		{"a:http", nil, `port "http" is not a number`},
		{"::1:7070", nil, "IPv6 address goes in brackets"},
		{" , ", nil, "no server address"},
		{"ftp://x:1", nil, `unknown scheme "ftp"`},
	} {
		got, err := Parse(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("Parse(%q) err = %v, want it to contain %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|")):
			t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
