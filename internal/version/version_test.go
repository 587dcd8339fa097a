package version

import "testing"

func TestStampedVersionAndCommitWinOverTheBuildInfo(t *testing.T) {
	oldV, oldC := Version, Commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })

	for _, tc := range []struct {
		version, commit string
		want, short     string
	}{
		{"1.2.3", "0123456789abcdef0123456789abcdef01234567", "1.2.3 (revision 0123456789ab)", "1.2.3"},
		{"1.2.3", "0123456789abcdef0123456789abcdef01234567-dirty", "1.2.3 (revision 0123456789ab, modified)", "1.2.3"},
		{"0.0.0+git20261201.abc", "abc", "0.0.0+git20261201.abc (revision abc)", "0.0.0+git20261201.abc"},
	} {
		Version, Commit = tc.version, tc.commit
		if got := String(); got != tc.want {
			t.Errorf("String() with Version=%q Commit=%q = %q, want %q", tc.version, tc.commit, got, tc.want)
		}
		if got := Short(); got != tc.short {
			t.Errorf("Short() = %q, want %q", got, tc.short)
		}
	}
}

func TestUnstampedTestBinaryStillReportsSomething(t *testing.T) {
	oldV, oldC := Version, Commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })
	Version, Commit = "", ""
	if String() == "" || Short() == "" {
		t.Fatalf("String() = %q, Short() = %q: want non-empty", String(), Short())
	}
}
