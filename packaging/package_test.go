package packaging

import (
	"bytes"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The versions the test stamps and packages (valid Debian and RPM versions;
// v2 > v1 for the upgrade). Fixed, so nothing here depends on git.
const (
	testVersion1 = "0.0.0+pkgtest1"
	testVersion2 = "0.0.0+pkgtest2"
	testCommit   = "0123456789abcdef0123456789abcdef01234567"
	testEpoch    = "1767225600" // 2026-01-01T00:00:00Z: the files' mtimes in the packages
)

// agentBuild is the amd64 agent package built once for all the tests below.
type agentBuild struct {
	repo, dir, bin string
	deb1, rpm1     string // testVersion1
	deb2, rpm2     string // testVersion2, same files: the upgrade
}

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skip("no go command on PATH or in GOROOT: cannot build the release binary")
	}
	return p
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// buildAgent builds the amd64 agent twice with the release flags
// (build.sh), checks the two are byte-identical, static, stripped and
// stamped, then packages it (package.sh) as testVersion1 and testVersion2.
func buildAgent(t *testing.T) *agentBuild {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the package test builds a release binary and packages it")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh: the packaging scripts need a POSIX shell")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	goCmd := goTool(t)
	b := &agentBuild{repo: repo, dir: t.TempDir()}
	env := []string{"GO=" + goCmd, "VERSION=" + testVersion1, "COMMIT=" + testCommit, "SOURCE_DATE_EPOCH=" + testEpoch, "GOFLAGS="}

	// Two release builds into two directories: the same bytes.
	b.bin = filepath.Join(b.dir, "a", "tether-agent")
	other := filepath.Join(b.dir, "b", "tether-agent")
	run(t, env, filepath.Join(repo, "packaging/build.sh"), b.bin, "tether-agent", "amd64")
	run(t, env, filepath.Join(repo, "packaging/build.sh"), other, "tether-agent", "amd64")
	x, _ := os.ReadFile(b.bin)
	y, _ := os.ReadFile(other)
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Fatalf("two release builds of one commit differ (%d and %d bytes): not reproducible", len(x), len(y))
	}

	// nfpm, built once from tools/go.mod, for both package versions.
	nfpm := filepath.Join(b.dir, "nfpm")
	cmd := exec.Command(goCmd, "build", "-modfile=tools/go.mod", "-o", nfpm, "github.com/goreleaser/nfpm/v2/cmd/nfpm")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building nfpm (tools/go.mod): %v\n%s", err, out)
	}
	env = append(env, "NFPM="+nfpm)
	pkgs := func(version, sub string) (deb, rpm string) {
		out := run(t, append(env, "VERSION="+version), filepath.Join(repo, "packaging/package.sh"), filepath.Join(b.dir, sub), "tether-agent", "amd64", b.bin)
		for _, l := range strings.Fields(out) {
			switch {
			case strings.HasSuffix(l, ".deb"):
				deb = l
			case strings.HasSuffix(l, ".rpm"):
				rpm = l
			}
		}
		if deb == "" || rpm == "" {
			t.Fatalf("package.sh printed no .deb/.rpm:\n%s", out)
		}
		return deb, rpm
	}
	b.deb1, b.rpm1 = pkgs(testVersion1, "v1")
	b.deb2, b.rpm2 = pkgs(testVersion2, "v2")
	return b
}

// The one package test: everything after the build shares it (building is
// the expensive part), each aspect in its own subtest.
func TestAgentPackage(t *testing.T) {
	b := buildAgent(t)

	t.Run("release binary is static, stripped and stamped", func(t *testing.T) {
		f, err := elf.Open(b.bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary has a program interpreter: not static (CGO_ENABLED=0?)")
			}
		}
		if f.Section(".symtab") != nil {
			t.Error("the binary has a symbol table: not stripped (-s -w)")
		}
		out := run(t, nil, b.bin, "--version")
		if want := "tether-agent " + testVersion1 + " (revision " + testCommit[:12] + ")"; strings.TrimSpace(out) != want {
			t.Errorf("--version = %q, want %q", strings.TrimSpace(out), want)
		}
	})

	t.Run("deb metadata, contents, modes and conffiles", func(t *testing.T) {
		if _, err := exec.LookPath("dpkg-deb"); err != nil {
			t.Skip("dpkg-deb not installed (not a Debian system): cannot inspect the .deb")
		}
		info := run(t, nil, "dpkg-deb", "--info", b.deb1)
		for _, want := range []string{"Package: tether-agent", "Version: " + testVersion1 + "-1", "Architecture: amd64"} {
			if !strings.Contains(info, "\n "+want+"\n") {
				t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
			}
		}
		for _, field := range []string{"Depends:", "Pre-Depends:", "Recommends:"} {
			if strings.Contains(info, "\n "+field) {
				t.Errorf("the package declares %s, but its binary is static and needs nothing:\n%s", field, info)
			}
		}
		for _, script := range []string{"postinst", "prerm", "postrm", "conffiles"} {
			if !regexp.MustCompile(`\s` + script + `\s`).MatchString(info) {
				t.Errorf("control archive lacks %s:\n%s", script, info)
			}
		}
		contents := run(t, nil, "dpkg-deb", "--contents", b.deb1)
		for _, want := range []struct{ mode, path string }{
			{"-rwxr-xr-x root/root", "./usr/bin/tether-agent"},
			{"-rw-r--r-- root/root", "./usr/lib/systemd/system/tether-agent.service"},
			{"-rw-r----- root/root", "./etc/tether/agent.yaml"},
			{"drwxr-xr-x root/root", "./etc/tether/"},
		} {
			re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want.mode) + `\s+\d+ \S+ \S+ ` + regexp.QuoteMeta(want.path) + `$`)
			if !re.MatchString(contents) {
				t.Errorf("no %s %s in:\n%s", want.mode, want.path, contents)
			}
		}
		ctl := filepath.Join(t.TempDir(), "control")
		run(t, nil, "dpkg-deb", "--control", b.deb1, ctl)
		conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(conffiles)) != "/etc/tether/agent.yaml" {
			t.Errorf("conffiles = %q, want only /etc/tether/agent.yaml", conffiles)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			run(t, nil, "sh", "-n", filepath.Join(ctl, s))
		}
	})

	t.Run("rpm contents, modes, config files and scripts", func(t *testing.T) {
		p, err := readRPM(b.rpm1)
		if err != nil {
			t.Fatal(err)
		}
		if p.Name != "tether-agent" || p.Version != testVersion1 || p.Release != "1" || p.Arch != "x86_64" {
			t.Errorf("rpm is %s-%s-%s.%s, want tether-agent-%s-1.x86_64", p.Name, p.Version, p.Release, p.Arch, testVersion1)
		}
		want := map[string]struct {
			mode   uint16
			config bool
		}{
			"/usr/bin/tether-agent":                        {0o100755, false},
			"/usr/lib/systemd/system/tether-agent.service": {0o100644, false},
			"/etc/tether/agent.yaml":                       {0o100640, true},
		}
		for _, f := range p.Files {
			w, ok := want[f.Path]
			if !ok {
				continue
			}
			delete(want, f.Path)
			if f.Mode != w.mode || f.User != "root" || f.Group != "root" {
				t.Errorf("%s: mode %o %s:%s, want %o root:root", f.Path, f.Mode, f.User, f.Group, w.mode)
			}
			if w.config && f.Flags&(rpmFileConfig|rpmFileNoReplace) != rpmFileConfig|rpmFileNoReplace {
				t.Errorf("%s: flags %#x, want %%config(noreplace)", f.Path, f.Flags)
			}
			if !w.config && f.IsConfig {
				t.Errorf("%s is marked %%config", f.Path)
			}
		}
		for missing := range want {
			t.Errorf("the rpm lacks %s", missing)
		}
		for _, s := range []string{"postinstall", "preremove", "postremove"} {
			if !strings.Contains(p.Scripts[s], "PKG=tether-agent") {
				t.Errorf("rpm %s script missing or not rendered:\n%s", s, p.Scripts[s])
			}
		}
		for _, r := range p.Requires {
			if !strings.HasPrefix(r, "rpmlib(") && !strings.HasPrefix(r, "/bin/sh") {
				t.Errorf("the rpm requires %q; the binary is static", r)
			}
		}
		// Cross-check with rpm(8) where it is installed.
		if _, err := exec.LookPath("rpm"); err != nil {
			t.Log("rpm not installed: checked with the test's own reading of the rpm header only")
			return
		}
		cfg := run(t, nil, "rpm", "-qcp", b.rpm1)
		if strings.TrimSpace(cfg) != "/etc/tether/agent.yaml" {
			t.Errorf("rpm -qcp = %q", cfg)
		}
		list := run(t, nil, "rpm", "-qlp", b.rpm1)
		for _, f := range p.Files {
			if !strings.Contains(list, f.Path+"\n") {
				t.Errorf("rpm -qlp lacks %s:\n%s", f.Path, list)
			}
		}

		// Install, upgrade and erase into a scratch root (its own rpm
		// database; --noscripts: the root has no /bin/sh; the scripts are
		// tested in scripts_test.go): modes, %config(noreplace) on upgrade,
		// .rpmsave on erase.
		root := t.TempDir()
		rpm := func(args ...string) {
			t.Helper()
			run(t, nil, "rpm", append([]string{"--root", root}, args...)...)
		}
		rpm("--initdb")
		rpm("-i", "--nodeps", "--noscripts", b.rpm1)
		for rel, mode := range map[string]fs.FileMode{"usr/bin/tether-agent": 0o755, "etc/tether/agent.yaml": 0o640, "usr/lib/systemd/system/tether-agent.service": 0o644} {
			if fi, err := os.Stat(filepath.Join(root, rel)); err != nil || fi.Mode().Perm() != mode {
				t.Errorf("rpm -i: /%s: %v %v, want mode %v", rel, fi.Mode(), err, mode)
			}
		}
		conf := filepath.Join(root, "etc/tether/agent.yaml")
		changed := []byte("server: tether.lan:7070\n")
		if err := os.WriteFile(conf, changed, 0o640); err != nil {
			t.Fatal(err)
		}
		rpm("-U", "--nodeps", "--noscripts", b.rpm2)
		if got, _ := os.ReadFile(conf); !bytes.Equal(got, changed) {
			t.Errorf("rpm -U replaced the changed config:\n%s", got)
		}
		rpm("-e", "--nodeps", "--noscripts", "tether-agent")
		if got, err := os.ReadFile(conf + ".rpmsave"); err != nil || !bytes.Equal(got, changed) {
			t.Errorf("rpm -e did not save the changed config as agent.yaml.rpmsave (%v)", err)
		}
		if _, err := os.Stat(filepath.Join(root, "usr/bin/tether-agent")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("rpm -e left the binary (%v)", err)
		}
	})

	t.Run("dpkg installs, upgrades keeping a changed config, removes, purges, keeps a pre-placed config", func(t *testing.T) {
		dpkgCycle(t, b)
	})
}

// dpkgCycle runs the real package manager on this machine: only as root,
// only when nothing of tether-agent is installed, and it leaves the machine
// as it found it.
func dpkgCycle(t *testing.T, b *agentBuild) {
	if os.Geteuid() != 0 {
		t.Skip("not root: dpkg -i needs root (CI runs as root)")
	}
	for _, tool := range []string{"dpkg", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (not a Debian system)", tool)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "tether-agent").Output(); err == nil && len(out) > 0 && !strings.Contains(string(out), "not-installed") {
		t.Skipf("tether-agent is already known to dpkg here (%s): not touching it", out)
	}
	for _, p := range []string{"/usr/bin/tether-agent", "/etc/tether/agent.yaml", "/usr/lib/systemd/system/tether-agent.service"} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists (installed by hand?): not touching it", p)
		}
	}
	_, etcTetherBefore := os.Stat("/etc/tether")
	wants := "/etc/systemd/system/multi-user.target.wants/tether-agent.service"
	_, wantsBefore := os.Lstat(wants)

	dpkg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput() // stdin is /dev/null: a conffile prompt would fail, not hang
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	status := func() string {
		out, _ := exec.Command("dpkg-query", "-W", "-f=${Status} ${Version}", "tether-agent").Output()
		return string(out)
	}
	t.Cleanup(func() {
		if s := status(); s != "" && !strings.Contains(s, "not-installed") {
			out, err := exec.Command("dpkg", "--purge", "tether-agent").CombinedOutput()
			t.Logf("cleanup: dpkg --purge tether-agent: %v\n%s", err, out)
		}
	})

	out := dpkg("-i", b.deb1)
	t.Logf("dpkg -i:\n%s", out)
	if s := status(); s != "install ok installed "+testVersion1+"-1" {
		t.Fatalf("after dpkg -i: %q", s)
	}
	for p, mode := range map[string]fs.FileMode{
		"/usr/bin/tether-agent":                        0o755,
		"/etc/tether/agent.yaml":                       0o640,
		"/usr/lib/systemd/system/tether-agent.service": 0o644,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("installed file: %v", err)
		} else if fi.Mode().Perm() != mode || !fi.Mode().IsRegular() {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
	}
	example, _ := os.ReadFile(filepath.Join(b.repo, "agent/systemd/agent.example.yaml"))
	if got, _ := os.ReadFile("/etc/tether/agent.yaml"); !bytes.Equal(got, example) {
		t.Error("/etc/tether/agent.yaml is not the example config")
	}
	unit, _ := os.ReadFile("/usr/lib/systemd/system/tether-agent.service")
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/tether-agent --config /etc/tether/agent.yaml\n") {
		t.Errorf("installed unit's ExecStart does not point at /usr/bin/tether-agent:\n%s", unit)
	}
	if conf, _ := exec.Command("dpkg-query", "-W", "-f=${Conffiles}", "tether-agent").Output(); !strings.Contains(string(conf), "/etc/tether/agent.yaml ") {
		t.Errorf("dpkg does not track /etc/tether/agent.yaml as a conffile: %q", conf)
	}
	if v := strings.TrimSpace(run(t, nil, "/usr/bin/tether-agent", "--version")); v != "tether-agent "+testVersion1+" (revision "+testCommit[:12]+")" {
		t.Errorf("installed tether-agent --version = %q", v)
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		cmd := exec.Command(analyze, "verify", "--man=no", "/usr/lib/systemd/system/tether-agent.service")
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=cat")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "tether-agent.service") {
			t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze not installed: installed unit not verified (make deps installs it)")
	}
	if _, err := exec.LookPath("systemctl"); err == nil && wantsBefore != nil {
		if target, err := os.Readlink(wants); err != nil || !strings.HasSuffix(target, "/systemd/system/tether-agent.service") {
			t.Errorf("the unit is not enabled after install (%s -> %q, %v)", wants, target, err)
		}
	}

	// Upgrade to v2 with a locally changed config: the change stays, no
	// .dpkg-dist/.dpkg-new copy appears (the package's config did not change).
	changed := append(slices.Clone(example), []byte("# changed on this device\n")...)
	if err := os.WriteFile("/etc/tether/agent.yaml", changed, 0o640); err != nil {
		t.Fatal(err)
	}
	t.Logf("dpkg -i (upgrade):\n%s", dpkg("-i", b.deb2))
	if s := status(); s != "install ok installed "+testVersion2+"-1" {
		t.Fatalf("after the upgrade: %q", s)
	}
	if got, _ := os.ReadFile("/etc/tether/agent.yaml"); !bytes.Equal(got, changed) {
		t.Errorf("the upgrade did not keep the changed /etc/tether/agent.yaml:\n%s", got)
	}
	for _, suffix := range []string{".dpkg-dist", ".dpkg-new", ".dpkg-old"} {
		if _, err := os.Stat("/etc/tether/agent.yaml" + suffix); err == nil {
			t.Errorf("/etc/tether/agent.yaml%s appeared", suffix)
		}
	}

	// Remove: binary and unit go, the config stays; purge: the config goes.
	dpkg("--remove", "tether-agent")
	for _, p := range []string{"/usr/bin/tether-agent", "/usr/lib/systemd/system/tether-agent.service"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after dpkg --remove (%v)", p, err)
		}
	}
	if _, err := os.Stat("/etc/tether/agent.yaml"); err != nil {
		t.Errorf("dpkg --remove took the config: %v", err)
	}
	dpkg("--purge", "tether-agent")
	if s := status(); s != "" && !strings.Contains(s, "not-installed") {
		t.Errorf("after the purge dpkg still knows tether-agent: %q", s)
	}
	if _, err := os.Stat("/etc/tether/agent.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the purge left /etc/tether/agent.yaml (%v)", err)
	}
	if _, err := os.Stat("/etc/tether"); etcTetherBefore != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the purge left /etc/tether, which did not exist before (%v)", err)
	}
	if _, err := os.Lstat(wants); wantsBefore != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the purge left the enable link %s (%v)", wants, err)
	}

	// A fleet install: the config is put in place first (docs/INSTALL.md's
	// Ansible and cloud-init recipes), then the package is installed with
	// --force-confold: the config stays, the package's example lands next to
	// it, and the purge takes both.
	if err := os.MkdirAll("/etc/tether", 0o755); err != nil {
		t.Fatal(err)
	}
	placed := []byte("server: tether.lan:7070\n")
	if err := os.WriteFile("/etc/tether/agent.yaml", placed, 0o640); err != nil {
		t.Fatal(err)
	}
	dpkg("--force-confold", "-i", b.deb1)
	if got, _ := os.ReadFile("/etc/tether/agent.yaml"); !bytes.Equal(got, placed) {
		t.Errorf("dpkg --force-confold -i replaced the config placed before it:\n%s", got)
	}
	dpkg("--purge", "tether-agent")
	for _, p := range []string{"/etc/tether/agent.yaml", "/etc/tether/agent.yaml.dpkg-dist"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the purge left %s (%v)", p, err)
		}
	}
	if _, err := os.Stat("/etc/tether"); etcTetherBefore != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the purge left /etc/tether, which did not exist before (%v)", err)
	}
}
