package deviceid

import (
	"net"
	"strings"
	"testing"
)

func TestValidateAcceptsTheDocumentedAlphabet(t *testing.T) {
	for _, id := range []string{"a", "aa-bb-cc-dd-ee-ff", "kiosk_07.lobby", strings.Repeat("x", MaxLen)} {
		if err := Validate(id); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", id, err)
		}
	}
}

func TestValidateRejectsEverythingElse(t *testing.T) {
	for _, id := range []string{"", strings.Repeat("x", MaxLen+1), "a b", "a/b", "a:b", "é", "a\x00", "{x}"} {
		if err := Validate(id); err == nil {
			t.Errorf("Validate(%q) = nil, want an error", id)
		}
	}
}

func TestFromMACIsLowercaseWithDashes(t *testing.T) {
	mac, _ := net.ParseMAC("AA:BB:CC:0D:0E:0F")
	if got, want := FromMAC(mac), "aa-bb-cc-0d-0e-0f"; got != want {
		t.Fatalf("FromMAC = %q, want %q", got, want)
	}
	if err := Validate(FromMAC(mac)); err != nil {
		t.Fatal(err)
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"aa-bb-cc-dd-ee-ff", "", "a b", strings.Repeat("z", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := Validate(id)
		ok := len(id) >= 1 && len(id) <= MaxLen && strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
		if (err == nil) != ok {
			t.Fatalf("Validate(%q) = %v, want ok=%v", id, err, ok)
		}
	})
}
