package main

import "testing"

func TestPickPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name             string
		set              bool
		flag, file, want string
	}{
		{"flag or env wins", true, "flag:1", "file:1", "flag:1"},
		{"flag or env wins even when empty", true, "", "file:1", ""},
		{"file over default", false, "127.0.0.1:7070", "file:1", "file:1"},
		{"default last", false, "127.0.0.1:7070", "", "127.0.0.1:7070"},
	} {
		if got := pick(tc.set, tc.flag, tc.file, "127.0.0.1:7070"); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if !pick(false, false, true, false) {
		t.Error("legacy_no_pong from the file was ignored")
	}
	if pick(true, false, true, false) {
		t.Error("--legacy-no-pong=false did not override the file")
	}
}
