package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Version and Commit are stamped at link time by the Makefile and by
// packaging/build.sh (release builds: -ldflags "-X ...Version=1.2.3
// -X ...Commit=<40 hex>[-dirty]"). A plain `go build` leaves them empty; the
// version then comes from the module (go install pkg@v1.2.3) and the commit
// from the VCS stamp Go adds to the build info, when there is one.
var (
	Version = ""
	Commit  = ""
)

// info resolves the version, the revision and whether the tree was modified,
// preferring the link-time stamps over the build info.
func info() (v, rev string, dirty bool) {
	v, rev = Version, Commit
	bi, ok := debug.ReadBuildInfo()
	if ok && v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	if rev != "" {
		if r, found := strings.CutSuffix(rev, "-dirty"); found {
			rev, dirty = r, true
		}
	} else if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	return v, rev, dirty
}

// String returns "VERSION (revision REV[, modified])", or VERSION alone when
// no revision is known. It is what --version prints.
func String() string {
	v, rev, dirty := info()
	if rev == "" {
		return v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		return fmt.Sprintf("%s (revision %s, modified)", v, rev)
	}
	return fmt.Sprintf("%s (revision %s)", v, rev)
}

// Short returns the version without the revision.
func Short() string {
	v, _, _ := info()
	return v
}

// Revision returns the full commit the binary was built from ("" when
// unknown), without the "-dirty" mark.
func Revision() string {
	_, rev, _ := info()
	return rev
}
