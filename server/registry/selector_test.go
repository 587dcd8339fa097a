package registry

import (
	"strings"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	prod := map[string]string{"env": "prod", "site": "berlin"}
	dev := map[string]string{"env": "dev"}
	none := map[string]string{}
	for _, tc := range []struct {
		sel              string
		prod, dev, empty bool
	}{
		{"", true, true, true},
		{"env=prod", true, false, false},
		{"env==prod", true, false, false},
		{"env!=prod", false, true, true},
		{"env in (prod, staging)", true, false, false},
		{"env notin (prod,staging)", false, true, true},
		{"site", true, false, false},
		{"!site", false, true, true},
		{"env=prod,site=berlin", true, false, false},
		{"env in (dev,prod),!site", false, true, false},
		{" env = prod ", true, false, false},
	} {
		s, err := ParseSelector(tc.sel)
		if err != nil {
			t.Errorf("%q: %v", tc.sel, err)
			continue
		}
		if got := [3]bool{s.Matches(prod), s.Matches(dev), s.Matches(none)}; got != [3]bool{tc.prod, tc.dev, tc.empty} {
			t.Errorf("%q matches prod/dev/none = %v, want %v", tc.sel, got, [3]bool{tc.prod, tc.dev, tc.empty})
		}
	}
}

func TestSelectorErrorsSayWhatIsSupported(t *testing.T) {
	for _, tc := range []struct{ sel, want string }{
		{"version>2", `operator ">2" is not supported`},
		{"env in prod", "in wants a parenthesized list"},
		{"env=prod,", "empty requirement"},
		{"=prod", "empty label key"},
		{"env in ()", "in with an empty list"},
		{"env exists", `want an operator after "env"`},
		{"e nv=x", `character ' ' is not allowed in a label key`},
	} {
		_, err := ParseSelector(tc.sel)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to contain %q", tc.sel, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), "supported:") && !strings.Contains(err.Error(), "stray comma") {
			t.Errorf("%q: %v does not list the supported syntax", tc.sel, err)
		}
	}
}
