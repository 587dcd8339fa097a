package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tetherhq/tether/gateway/ui"
	"github.com/tetherhq/tether/internal/blackhole"
)

// The browser tests drive the real page (gateway/ui) in headless Chromium.
// Chromium comes from Debian's package (`make deps` installs it); the tests
// install it when it is missing and they run as root, and skip otherwise.

const chromiumPath = "/usr/bin/chromium"

// TestUIAgainstRealBinaries: tether-server (with --http) and real agents; the
// page shows a device come online live, turn offline with "ping timeout" after
// a power loss (SIGSTOP + blackholed connection), and runs `echo hello ui` on a
// second device from the detail view.
func TestUIAgainstRealBinaries(t *testing.T) {
	exe := findChromium(t)
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--http", httpAddr, "--node", "ui-node",
		"--ping-interval", "2s", "--ping-timeout", "1s")
	waitListening(t, grpcAddr)
	waitListening(t, httpAddr)

	// The gateway does not serve the page yet: an in-test front serves
	// ui.Handler() and proxies /v1/ to the server. Once the gateway mounts
	// ui.Handler() at "/", this line becomes: base := "http://" + httpAddr
	base := "http://" + httpAddr // the page as tether-server --http serves it

	b := newBrowser(t, exe)
	b.do(t, chromedp.Navigate(base+"/"))
	b.waitFor(t, "page live", 15*time.Second, `
		document.getElementById('conn').dataset.state === 'live' ? '' :
		'connection state: ' + document.getElementById('conn-text').textContent`)
	// A marker that a reload would wipe: every later step must happen live.
	b.eval(t, `window.__notReloaded = true`)
	b.screenshot(t, "01-empty.png")

	// ui-1 connects through a proxy that can blackhole its connection.
	proxy, err := blackhole.NewProxy(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	agent1 := start(t, "tether-agent", "--server", proxy.Addr(), "--device-id", "ui-1", "--config", writeAgentConfig(t, ""))
	t.Cleanup(func() { agent1.signal(syscall.SIGCONT) }) // so that stop's SIGTERM works
	b.waitFor(t, "ui-1 online with its info", 20*time.Second, rowCheck("ui-1", `
		if (!/Online/.test(c[1])) return 'status ' + c[1];
		if (c[2] === '—' || c[2] === '') return 'no hostname yet';
		if (c[5] !== 'App ping/pong') return 'liveness ' + c[5];
		if (!/^Connected since/.test(c[6])) return 'since ' + c[6];
		if (!/[µm]s$|^—$/.test(c[7])) return 'rtt ' + c[7];
		return '';`))
	b.screenshot(t, "02-ui-1-online.png")

	// Power loss: freeze the agent and cut its connection silently.
	agent1.signal(syscall.SIGSTOP)
	proxy.Cut()
	cut := time.Now()
	b.waitFor(t, "ui-1 offline with reason ping timeout", 20*time.Second, rowCheck("ui-1", `
		if (!/Offline/.test(c[1])) return 'status ' + c[1];
		if (!/ping timeout/.test(c[6])) return 'since ' + c[6];
		return '';`))
	t.Logf("ui-1 shown offline (ping timeout) %v after the cut", time.Since(cut).Round(100*time.Millisecond))
	b.screenshot(t, "03-ui-1-offline-ping-timeout.png")

	// ui-2 reports an allow-list with one configured command besides the
	// built-ins (its argv is never shown).
	start(t, "tether-agent", "--server", grpcAddr, "--device-id", "ui-2", "--config",
		writeAgentConfig(t, "commands:\n  uptime:\n    argv: [\"/usr/bin/uptime\"]\n    max_args: 0\n"))
	b.waitFor(t, "ui-2 online", 20*time.Second, rowCheck("ui-2", `
		return /Online/.test(c[1]) && c[2] !== '—' ? '' : 'status ' + c[1] + ', host ' + c[2];`))
	b.waitFor(t, "labels, node and last-seen columns of ui-2", 5*time.Second, rowCheck("ui-2", `
		if (c[8] !== 'role=e2e') return 'labels ' + c[8];
		if (c[9] !== 'ui-node') return 'node ' + c[9];
		if (!/ago$/.test(c[10])) return 'last seen ' + c[10];
		return '';`))

	// ui-10 is pre-registered through the API: it shows as never connected,
	// with its labels, and sorts after ui-2 (numeric-aware).
	if code, body := post(t, base+"/v1/devices", `{"deviceId":"ui-10","labels":{"site":"lab"}}`); code != 200 {
		t.Fatalf("pre-register ui-10: %d %v", code, body)
	}
	b.waitFor(t, "ui-10 never connected", 10*time.Second, rowCheck("ui-10", `
		return c[1] === 'Never connected' && c[8] === 'site=lab' && /^Never connected/.test(c[6]) ? '' : 'status ' + c[1] + ', labels ' + c[8] + ', since ' + c[6];`))
	order := `[...document.querySelectorAll('#rows tr.row')].map(tr => tr.dataset.id).join(' ')`
	b.waitFor(t, "numeric-aware order by id", 5*time.Second, `(() => { const o = `+order+`; return o === 'ui-1 ui-2 ui-10' ? '' : 'order ' + o; })()`)
	b.do(t, chromedp.Click(chromedp.CSS(`th[data-col="status"] button`)))
	b.waitFor(t, "sorted by status", 5*time.Second, `(() => { const o = `+order+`; return o === 'ui-2 ui-1 ui-10' && document.querySelector('th[data-col="status"]').getAttribute('aria-sort') === 'ascending' ? '' : 'order ' + o; })()`)
	b.do(t, chromedp.Click(chromedp.CSS(`th[data-col="id"] button`)), chromedp.Click(chromedp.CSS(`th[data-col="id"] button`)))
	b.waitFor(t, "sorted by id, descending", 5*time.Second, `(() => { const o = `+order+`; return o === 'ui-10 ui-2 ui-1' && document.querySelector('th[data-col="id"]').getAttribute('aria-sort') === 'descending' ? '' : 'order ' + o; })()`)
	b.do(t, chromedp.Click(chromedp.CSS(`th[data-col="id"] button`)))
	b.waitFor(t, "sorted by id again", 5*time.Second, `(() => { const o = `+order+`; return o === 'ui-1 ui-2 ui-10' ? '' : 'order ' + o; })()`)

	// The inventory summary, grouped by the label key typed in.
	b.do(t, chromedp.SendKeys(chromedp.CSS("#inv-key"), "site"))
	b.waitFor(t, "inventory summary", 10*time.Second, `(() => {
		if (document.getElementById('inventory').hidden) return 'inventory hidden';
		const v = (k) => { const dd = document.querySelector('#inv-counts div[data-k="' + k + '"] dd'); return dd ? dd.textContent : '(none)'; };
		const got = ['Devices', 'Online', 'Offline', 'Never connected', 'By site', 'Nodes'].map(k => k + '=' + v(k)).join('; ');
		return got === 'Devices=3; Online=1; Offline=1; Never connected=1; By site=(none) 2, lab 1; Nodes=ui-node (1 sessions, alive)' ? '' : got;
	})()`)
	b.screenshot(t, "04a-sorted-inventory.png")

	// ui-2: open its detail view from the keyboard and send a command.
	b.do(t, chromedp.Focus(chromedp.CSS(`#rows tr[data-id="ui-2"]`)), chromedp.KeyEvent(kb.Enter))
	b.waitFor(t, "detail view of ui-2", 5*time.Second, `
		document.getElementById('detail').open && document.getElementById('detail-title').textContent === 'Device ui-2' ? '' : 'detail not open; focus on ' + (document.activeElement && document.activeElement.outerHTML.slice(0, 120))`)
	b.waitFor(t, "the command list is ui-2's allow-list", 5*time.Second, `(() => {
		const names = [...document.querySelectorAll('#cmd-name option')].map(o => o.value).join(' ');
		if (names !== 'echo info uptime') return 'options ' + names;
		if (/\/usr\/bin/.test(document.getElementById('detail').textContent)) return 'argv shown';
		return document.getElementById('cmd-fields').disabled ? 'form disabled for an online device' : '';
	})()`)
	b.do(t, chromedp.SetValue(chromedp.CSS("#cmd-name"), "uptime"))
	b.eval(t, `document.getElementById('cmd-name').dispatchEvent(new Event('change'))`)
	if !evalT[bool](t, b, `document.getElementById('cmd-args').disabled`) {
		t.Error("the arguments field is enabled for uptime (max_args: 0)")
	}
	b.do(t, chromedp.SetValue(chromedp.CSS("#cmd-name"), "echo"))
	b.eval(t, `document.getElementById('cmd-name').dispatchEvent(new Event('change'))`)
	b.do(t,
		chromedp.SendKeys(chromedp.CSS("#cmd-args"), "hello ui"),
		chromedp.Clear(chromedp.CSS("#cmd-timeout")),
		chromedp.SendKeys(chromedp.CSS("#cmd-timeout"), "5"),
		chromedp.Click(chromedp.CSS("#cmd-send")),
	)
	b.waitFor(t, "command output", 15*time.Second, `(() => {
		const out = document.getElementById('cmd-output');
		if (!out) { const e = document.getElementById('cmd-error'); return e ? 'error: ' + e.textContent : 'no result yet'; }
		if (out.textContent !== 'hello ui\n') return 'output ' + JSON.stringify(out.textContent);
		const exit = document.getElementById('cmd-exit').textContent;
		if (!/exit code 0/.test(exit)) return 'exit line ' + exit;
		if (!/node ui-node/.test(document.getElementById('cmd-result').textContent)) return 'no node in the result';
		return '';
	})()`)
	b.waitFor(t, "ONLINE event of ui-2 in its recent events", 5*time.Second, `
		/online/.test(document.getElementById('events-rows').textContent) ? '' : 'events: ' + document.getElementById('events-rows').textContent`)
	b.screenshot(t, "04-ui-2-echo-command.png")
	b.checkAccessibility(t, "detail view open")

	// Escape closes the detail view and gives the focus back to the row.
	b.do(t, chromedp.KeyEvent(kb.Escape))
	b.waitFor(t, "detail closed, focus on the ui-2 row", 5*time.Second, `(() => {
		if (document.getElementById('detail').open) return 'detail still open';
		const a = document.activeElement;
		if (!a || a.dataset.id !== 'ui-2') return 'focus on ' + (a ? a.tagName + '#' + a.id : 'nothing');
		if (getComputedStyle(a).outlineStyle === 'none') return 'focused row has no outline';
		return '';
	})()`)
	b.checkAccessibility(t, "table")
	b.screenshot(t, "05-table-focus.png")

	// ui-1 is offline: its detail view shows the session history (ended by
	// the ping timeout) and the command form is disabled.
	b.do(t, chromedp.Click(chromedp.CSS(`#rows tr[data-id="ui-1"] th`)))
	b.waitFor(t, "ui-1 detail: history, form disabled", 10*time.Second, `(() => {
		if (document.getElementById('detail-title').textContent !== 'Device ui-1') return 'detail of ' + document.getElementById('detail-title').textContent;
		if (!document.getElementById('cmd-fields').disabled) return 'command form enabled';
		if (document.getElementById('cmd-offline').hidden) return 'no offline note';
		const h = [...document.querySelectorAll('#history-rows tr')].map(tr => tr.children[2].textContent);
		return h.length === 1 && h[0] === 'ping timeout' ? '' : 'history ' + JSON.stringify(h);
	})()`)
	b.screenshot(t, "05a-offline-detail-history.png")
	b.checkAccessibility(t, "offline detail view")
	b.do(t, chromedp.KeyEvent(kb.Escape))

	if ok := evalT[bool](t, b, `window.__notReloaded === true`); !ok {
		t.Error("the page was reloaded during the test")
	}
	b.checkConsole(t, nil)

	// Filters, sort and the open device are in the URL and survive a reload.
	b.do(t, chromedp.SetValue(chromedp.CSS("#f-presence"), "online"))
	b.eval(t, `document.getElementById('f-presence').dispatchEvent(new Event('change'))`)
	b.do(t, chromedp.Click(chromedp.CSS(`th[data-col="id"] button`)))
	b.do(t, chromedp.Click(chromedp.CSS(`#rows tr[data-id="ui-2"] th`)))
	b.waitFor(t, "state in the URL", 5*time.Second, `(() => {
		const p = new URLSearchParams(location.search);
		return p.get('presence') === 'online' && p.get('sort') === '-id' && p.get('device') === 'ui-2' && p.get('group') === 'site' ? '' : 'search ' + location.search;
	})()`)
	b.do(t, chromedp.Reload())
	b.waitFor(t, "the same view after a reload", 15*time.Second, `(() => {
		if (document.getElementById('conn').dataset.state !== 'live') return 'not live';
		if (document.getElementById('f-presence').value !== 'online') return 'presence ' + document.getElementById('f-presence').value;
		if (document.querySelector('th[data-col="id"]').getAttribute('aria-sort') !== 'descending') return 'sort lost';
		if (document.getElementById('inv-key').value !== 'site') return 'inventory key lost';
		if (!document.getElementById('detail').open || document.getElementById('detail-title').textContent !== 'Device ui-2') return 'detail not reopened';
		const o = `+order+`;
		return o === 'ui-2' ? '' : 'rows ' + o;
	})()`)
	b.screenshot(t, "05b-after-reload.png")
	b.checkConsole(t, nil)
}

// TestUIAtTenThousandDevicesWithAnAPIKey drives the page against a stub of the
// JSON API that holds 10,000 devices and answers 401 without the right key:
// the page asks for the key in a form, keeps it in sessionStorage only, renders
// only the visible rows, filters, and answers a burst of 5,000 events with a
// few page reads instead of 5,000 device reads.
func TestUIAtTenThousandDevicesWithAnAPIKey(t *testing.T) {
	exe := findChromium(t)
	api := newStubAPI(10000, "s3cret-key")
	apiSrv := &http.Server{Handler: api}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go apiSrv.Serve(l)
	t.Cleanup(func() { apiSrv.Close() })
	base := startUIFront(t, "http://"+l.Addr().String())

	b := newBrowser(t, exe)
	b.do(t, chromedp.Navigate(base+"/"))
	b.waitFor(t, "API key form", 10*time.Second, `
		document.getElementById('key-dialog').open && document.activeElement === document.getElementById('key-input') ? '' : 'no key form'`)
	b.screenshot(t, "06-api-key-form.png")
	b.checkAccessibility(t, "API key form")
	b.do(t, chromedp.SendKeys(chromedp.CSS("#key-input"), "s3cret-key"), chromedp.Click(chromedp.CSS("#key-save")))
	began := time.Now()
	b.waitFor(t, "10,000 devices loaded", 20*time.Second, `(() => {
		const s = document.getElementById('summary').textContent;
		if (!/^10000 devices · 6666 online · 3334 offline$/.test(s)) return 'summary ' + s;
		return document.getElementById('conn').dataset.state === 'live' ? '' : 'not live';
	})()`)
	t.Logf("10,000-device snapshot shown %v after the key was entered", time.Since(began).Round(10*time.Millisecond))
	if got := evalT[string](t, b, `sessionStorage.getItem('tether.apiKey') + '|' + localStorage.length + '|' + document.cookie`); got != "s3cret-key|0|" {
		t.Errorf("key storage: %q, want it in sessionStorage only", got)
	}
	if n := evalT[int](t, b, `document.querySelectorAll('#rows tr.row').length`); n == 0 || n > 120 {
		t.Errorf("%d rows in the DOM for 10,000 devices; want only the visible ones", n)
	}
	b.screenshot(t, "07-10000-devices.png")
	b.checkAccessibility(t, "10,000 devices")

	// Virtual scrolling: the last device is reachable and rendered.
	b.eval(t, `document.getElementById('devices-scroll').scrollTop = 1e9`)
	b.waitFor(t, "last row rendered", 5*time.Second, rowCheck("dev-09999", `return '';`))
	// End/Home from the keyboard move through the whole list.
	b.do(t, chromedp.Focus(chromedp.CSS(`#rows tr[data-id="dev-09999"]`)), chromedp.KeyEvent(kb.Home))
	b.waitFor(t, "Home focuses the first row", 5*time.Second, `document.activeElement.dataset.id === 'dev-00000' ? '' : 'focus on ' + document.activeElement.dataset.id`)

	// Filters: offline devices with site=lab (every third device).
	b.do(t, chromedp.SetValue(chromedp.CSS("#f-presence"), "offline"))
	b.eval(t, `document.getElementById('f-presence').dispatchEvent(new Event('change'))`)
	b.do(t, chromedp.SendKeys(chromedp.CSS("#f-labels"), "site=lab"))
	b.waitFor(t, "filtered view", 5*time.Second, `(() => {
		const s = document.getElementById('summary').textContent;
		if (!/· 3334 shown$/.test(s)) return 'summary ' + s;
		const p = new URLSearchParams(location.search);
		if (p.get('presence') !== 'offline' || p.get('labels') !== 'site=lab') return 'search ' + location.search;
		const st = [...document.querySelectorAll('#rows tr.row td:nth-child(2)')].map(td => td.textContent);
		return st.length && st.every(x => x === 'Offline') ? '' : 'rows ' + st.slice(0, 5);
	})()`)
	b.do(t, chromedp.SendKeys(chromedp.CSS("#f-labels"), ",site=north"))
	b.waitFor(t, "empty filter", 5*time.Second, `/· 0 shown$/.test(document.getElementById('summary').textContent) ? '' : document.getElementById('summary').textContent`)

	// A burst of 5,000 INFO_CHANGED events: coalesced into a re-list.
	before := api.counts()
	api.burst(5000)
	b.waitFor(t, "burst applied", 20*time.Second, `(() => {
		const s = document.getElementById('summary').textContent;
		return /^10000 devices · 6666 online/.test(s) ? '' : s;
	})()`)
	eventually(t, 10*time.Second, func() error {
		c := api.counts()
		if c.listPages-before.listPages < 10 {
			return fmt.Errorf("%d list pages read after the burst", c.listPages-before.listPages)
		}
		return nil
	})
	after := api.counts()
	t.Logf("after a burst of 5000 events: %d device reads, %d list pages", after.getOne-before.getOne, after.listPages-before.listPages)
	if n := after.getOne - before.getOne; n > 400 {
		t.Errorf("%d single-device reads after a burst of 5000 events; want them coalesced", n)
	}
	// The page still answers promptly.
	t0 := time.Now()
	b.eval(t, `1`)
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("page took %v to answer after the burst", d)
	}
	// Only the 401s of the key prompt may be in the console.
	b.checkConsole(t, func(m chromedp.ConsoleMessage) bool {
		return m.Source == "network" && strings.Contains(m.Text, "401")
	})
}

// ---- helpers ------------------------------------------------------------

// findChromium returns the path of Chromium, installing Debian's package when
// it is missing (as root), or skips the test.
func findChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	if os.Geteuid() != 0 {
		t.Skipf("%s is missing and this is not root, so it cannot be installed: run `make deps` (apt-get install chromium)", chromiumPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	apt := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	t.Logf("%s missing: apt-get install -y chromium", chromiumPath)
	out, err := apt("install", "-y", "chromium")
	if err != nil {
		if upd, uerr := apt("update"); uerr != nil {
			out = append(out, upd...)
		} else {
			out, err = apt("install", "-y", "chromium")
		}
	}
	if _, serr := os.Stat(chromiumPath); serr != nil {
		t.Skipf("Chromium is not installed at %s and `apt-get install -y chromium` failed (%v); install it (make deps) to run the browser tests:\n%s",
			chromiumPath, err, tail(out, 2000))
	}
	return chromiumPath
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// startUIFront serves ui.Handler() at "/" and "/ui/" and proxies /v1/ to api
// (streaming: FlushInterval -1, so the NDJSON watch reaches the page line by
// line). It returns the front's base URL.
func startUIFront(t *testing.T, api string) string {
	t.Helper()
	target, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		FlushInterval: -1,
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", proxy)
	mux.Handle("/", ui.Handler())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// artifactsDir is where the screenshots go: $TETHER_ARTIFACTS/ui, or a
// temporary directory; a copy also goes to <repo>/artifacts/ui (git-ignored).
func artifactsDir(t *testing.T) []string {
	t.Helper()
	var dirs []string
	if d := os.Getenv("TETHER_ARTIFACTS"); d != "" {
		dirs = append(dirs, filepath.Join(d, "ui"))
	} else {
		dirs = append(dirs, t.TempDir())
	}
	if root, err := filepath.Abs(".."); err == nil {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			dirs = append(dirs, filepath.Join(root, "artifacts", "ui"))
		}
	}
	var ok []string
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err == nil {
			ok = append(ok, d)
		}
	}
	t.Logf("screenshots: %s", strings.Join(ok, " and "))
	return ok
}

// browser is one headless Chromium tab with its console recorded.
type browser struct {
	ctx     context.Context
	shots   []string // directories for the screenshots
	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

func newBrowser(t *testing.T, exe string) *browser {
	t.Helper()
	out := &syncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc() // kills the browser and waits for it
		if t.Failed() {
			var keep []string
			for _, line := range strings.Split(out.String(), "\n") {
				if !strings.Contains(line, "dbus/") {
					keep = append(keep, line)
				}
			}
			t.Logf("--- chromium output (without D-Bus noise):\n%s", tail([]byte(strings.Join(keep, "\n")), 4000))
		}
	})
	// Start the browser with no deadline on ctx (its life is bound to the
	// context of the first call), but give up on a browser that hangs.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v\n%s", exe, err, out.String())
		}
	case <-time.After(30 * time.Second):
		cancelCtx()
		t.Fatalf("%s did not start within 30s:\n%s", exe, out.String())
	}
	b := &browser{ctx: ctx, shots: artifactsDir(t)}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// step bounds one browser call.
func (b *browser) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 20*time.Second)
}

func (b *browser) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func (b *browser) eval(t *testing.T, js string) {
	t.Helper()
	evalT[chromedp.Void](t, b, js)
}

func evalT[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// waitFor evaluates js (an expression that is "" when the condition holds,
// otherwise what is wrong) every 100ms until it is "" or limit passes.
func (b *browser) waitFor(t *testing.T, what string, limit time.Duration, js string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for {
		ctx, cancel := b.step()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		cancel()
		if err != nil {
			last = err.Error()
		} else if v == "" {
			return
		} else {
			last = v
		}
		if time.Now().After(deadline) {
			b.screenshot(t, "failed-"+t.Name()+".png")
			b.logConsole(t)
			t.Fatalf("%s: not within %v: %s", what, limit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rowCheck builds a waitFor expression over the cells' texts (c[0..7]) of a
// device's row; body returns "" when they are right.
func rowCheck(id, body string) string {
	return fmt.Sprintf(`(() => {
		const tr = document.querySelector('#rows tr.row[data-id=%q]');
		if (!tr) return 'no row for %s';
		const c = [...tr.children].map(x => x.textContent.trim());
		%s
	})()`, id, id, body)
}

func (b *browser) png() ([]byte, error) {
	ctx, cancel := b.step()
	defer cancel()
	return chromedp.Run(ctx, chromedp.CaptureScreenshot())
}

func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := b.png()
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	for _, d := range b.shots {
		if err := os.WriteFile(filepath.Join(d, name), png, 0o644); err != nil {
			t.Errorf("writing %s: %v", name, err)
		}
	}
}

func (b *browser) logConsole(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		t.Logf("console %s", m)
	}
}

// checkConsole fails the test for every error, warning or exception in the
// page's console, except those allowed says are expected.
func (b *browser) checkConsole(t *testing.T, allowed func(chromedp.ConsoleMessage) bool) {
	t.Helper()
	// Let the last events arrive.
	time.Sleep(200 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		switch m.Type {
		case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException, "assert":
			if allowed != nil && allowed(m) {
				continue
			}
			where := m.URL
			if where != "" {
				where += ":" + strconv.FormatInt(m.Line+1, 10)
			}
			t.Errorf("console %s (%s %s)", m, m.Source, where)
		}
	}
}

// a11yJS checks the page in the browser and returns the problems found:
// labels, table header scopes, lang and title, focusable rows, a polite live
// region, and the WCAG contrast ratio of visible text against its background.
const a11yJS = `(() => {
  const problems = [];
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  if (!document.documentElement.lang) problems.push('<html> has no lang');
  if (!document.title.trim()) problems.push('no <title>');
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!named) problems.push('no label for ' + el.tagName.toLowerCase() + '#' + el.id);
  }
  for (const th of document.querySelectorAll('thead th')) {
    if (th.getAttribute('scope') !== 'col') problems.push('header "' + th.textContent.trim() + '" has no scope="col"');
  }
  for (const th of document.querySelectorAll('tbody th')) {
    if (!th.getAttribute('scope')) problems.push('row header "' + th.textContent.trim() + '" has no scope');
  }
  const rows = document.querySelectorAll('#rows tr.row');
  for (const tr of rows) if (tr.tabIndex !== 0) problems.push('row ' + tr.dataset.id + ' is not focusable');
  if (!document.querySelector('[aria-live="polite"]')) problems.push('no aria-live="polite" region');
  if (!document.querySelector('#conn[aria-live="polite"]')) problems.push('connection state is not in a live region');
  let focusRule = false;
  for (const sheet of document.styleSheets) {
    for (const r of sheet.cssRules) {
      if (r.selectorText && r.selectorText.includes(':focus-visible') && /outline:\s*\d/.test(r.cssText)) focusRule = true;
    }
  }
  if (!focusRule) problems.push('no visible :focus-visible outline rule');

  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a), a: 1 });
  const background = (el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let out = { r: 255, g: 255, b: 255, a: 1 };
    for (let i = layers.length - 1; i >= 0; i--) out = over(layers[i], out);
    return out;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const ratio = (el) => {
    const bg = background(el);
    const fg = over(parse(getComputedStyle(el).color), bg);
    const a = lum(fg), b = lum(bg);
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  };
  const sel = 'body, h1, h2, h3, p, label, .help, button, select, input, th, td, dt, dd, pre, caption:not(.visually-hidden), .st-on, .st-off, #conn-text, #summary';
  let checked = 0;
  for (const el of document.querySelectorAll(sel)) {
    if (el !== document.body && !visible(el)) continue;
    if (!el.textContent.trim() && !(el.value || '').trim() && el.tagName !== 'BODY') continue;
    checked++;
    const r = ratio(el);
    if (r < 4.5) problems.push('contrast ' + r.toFixed(2) + ':1 for ' + el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '') + ' "' + el.textContent.trim().slice(0, 30) + '"');
  }
  if (checked < 10) problems.push('only ' + checked + ' elements checked for contrast');
  return problems;
})()`

func (b *browser) checkAccessibility(t *testing.T, where string) {
	t.Helper()
	for _, p := range evalT[[]string](t, b, a11yJS) {
		t.Errorf("accessibility (%s): %s", where, p)
	}
}

// ---- a stub of the JSON API for the scale test ---------------------------

type stubCounts struct{ getOne, listPages, unauthorized int }

type stubAPI struct {
	key     string
	devices []map[string]any
	index   map[string]int
	mu      sync.Mutex
	c       stubCounts
	push    chan []byte
}

func newStubAPI(n int, key string) *stubAPI {
	s := &stubAPI{key: key, index: map[string]int{}, push: make(chan []byte, 16)}
	now := time.Now().UTC()
	sites := []string{"lab", "north", "south"}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("dev-%05d", i)
		d := map[string]any{
			"deviceId": id,
			"info": map[string]any{
				"hostname":     "host-" + id,
				"ipAddresses":  []string{fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)},
				"agentVersion": "v0.3.0",
				"labels":       map[string]string{"site": sites[i%3]},
			},
			"firstSeen": now.Add(-time.Hour).Format(time.RFC3339),
		}
		if i%3 != 0 {
			d["online"] = true
			d["session"] = map[string]any{"leaseId": "1", "node": "stub", "connectedAt": now.Add(-time.Duration(i) * time.Second).Format(time.RFC3339),
				"lastRtt": "0.002s", "livenessMode": "LIVENESS_MODE_APP_PONG"}
		} else {
			d["lastDisconnect"] = map[string]any{"reason": "DISCONNECT_REASON_PING_TIMEOUT", "time": now.Add(-time.Minute).Format(time.RFC3339), "leaseId": "1", "node": "stub"}
		}
		s.index[id] = len(s.devices)
		s.devices = append(s.devices, d)
	}
	return s
}

func (s *stubAPI) counts() stubCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

// burst sends n INFO_CHANGED events, for the first n devices, in one write.
func (s *stubAPI) burst(n int) {
	var sb strings.Builder
	now := time.Now().UTC().Format(time.RFC3339)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, `{"result":{"event":{"eventId":"%d-0","type":"EVENT_TYPE_INFO_CHANGED","deviceId":"%s","leaseId":"1","time":"%s","node":"stub"}}}`+"\n",
			1000+i, s.devices[i]["deviceId"], now)
	}
	s.push <- []byte(sb.String())
}

func (s *stubAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.key {
		s.mu.Lock()
		s.c.unauthorized++
		s.mu.Unlock()
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeStubJSON(w, http.StatusUnauthorized, map[string]any{"code": 16, "message": "a valid API key is required", "details": []any{}})
		return
	}
	switch p := r.URL.Path; {
	case p == "/v1/devices:watch":
		s.watch(w, r)
	case p == "/v1/devices":
		size, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
		if size <= 0 || size > 1000 {
			size = 100
		}
		from, _ := strconv.Atoi(r.URL.Query().Get("page_token"))
		to := min(from+size, len(s.devices))
		resp := map[string]any{"devices": s.devices[from:to]}
		if to < len(s.devices) {
			resp["nextPageToken"] = strconv.Itoa(to)
		}
		s.mu.Lock()
		s.c.listPages++
		s.mu.Unlock()
		writeStubJSON(w, 200, resp)
	case p == "/v1/inventory":
		writeStubJSON(w, 200, map[string]any{"total": "10000", "online": "6666", "offline": "3334", "byAgentVersion": []any{map[string]any{"value": "v0.3.0", "count": "10000"}}})
	case p == "/v1/nodes":
		writeStubJSON(w, 200, map[string]any{"nodes": []any{map[string]any{"name": "stub", "alive": true, "sessions": "6666"}}})
	case strings.HasPrefix(p, "/v1/devices/") && strings.HasSuffix(p, "/history"):
		writeStubJSON(w, 200, map[string]any{"sessions": []any{}})
	case strings.HasPrefix(p, "/v1/devices/"):
		s.mu.Lock()
		s.c.getOne++
		s.mu.Unlock()
		i, ok := s.index[strings.TrimPrefix(p, "/v1/devices/")]
		if !ok {
			writeStubJSON(w, 404, map[string]any{"code": 5, "message": "not found", "details": []any{}})
			return
		}
		writeStubJSON(w, 200, map[string]any{"device": s.devices[i]})
	default:
		writeStubJSON(w, 404, map[string]any{"code": 5, "message": "no route", "details": []any{}})
	}
}

func (s *stubAPI) watch(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	fl := w.(http.Flusher)
	enc := json.NewEncoder(w)
	if r.URL.Query().Get("include_snapshot") == "true" {
		for _, d := range s.devices {
			ev := map[string]any{"type": "EVENT_TYPE_SNAPSHOT", "deviceId": d["deviceId"], "device": d, "time": time.Now().UTC().Format(time.RFC3339)}
			if err := enc.Encode(map[string]any{"result": map[string]any{"event": ev}}); err != nil {
				return
			}
		}
		enc.Encode(map[string]any{"result": map[string]any{"event": map[string]any{"type": "EVENT_TYPE_SNAPSHOT_END"}}})
	} else {
		enc.Encode(map[string]any{"result": map[string]any{"event": map[string]any{"type": "EVENT_TYPE_HEARTBEAT"}}})
	}
	fl.Flush()
	beat := time.NewTicker(5 * time.Second)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case b := <-s.push:
			if _, err := w.Write(b); err != nil {
				return
			}
			fl.Flush()
		case <-beat.C:
			if err := enc.Encode(map[string]any{"result": map[string]any{"event": map[string]any{"type": "EVENT_TYPE_HEARTBEAT"}}}); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

func writeStubJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
