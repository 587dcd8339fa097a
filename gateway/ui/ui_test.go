package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec.Result()
}

func TestServesThePageAndAssets(t *testing.T) {
	for path, ct := range map[string]string{
		"/":               "text/html; charset=utf-8",
		"/ui/app.js":      "text/javascript; charset=utf-8",
		"/ui/style.css":   "text/css; charset=utf-8",
		"/ui/favicon.svg": "image/svg+xml",
	} {
		resp := get(t, http.MethodGet, path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
		if got := resp.Header.Get("Content-Type"); got != ct {
			t.Errorf("GET %s: Content-Type %q, want %q", path, got, ct)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q", path, got)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatalf("GET %s: no ETag", path)
		}
		if resp := get(t, http.MethodGet, path, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match: %d, want 304", path, resp.StatusCode)
		}
		if resp := get(t, http.MethodHead, path, nil); resp.StatusCode != 200 {
			t.Errorf("HEAD %s: %d", path, resp.StatusCode)
		}
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	for _, path := range []string{"/index.html", "/ui/", "/ui/nope.js", "/v1/devices", "/static/app.js", "/ui/../ui/app.js"} {
		if resp := get(t, http.MethodGet, path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	resp := get(t, http.MethodPost, "/", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d Allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestNoInlineCode: the page must work under the CSP, so it has no inline
// script, no inline style, no event handler attributes, and every asset it
// references is served by Handler.
func TestNoInlineCode(t *testing.T) {
	body, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(body)
	// Scripts are files of their own (app.js; jobs.js, the Jobs panel).
	if m := regexp.MustCompile(`(?i)<script(\s[^>]*)?>`).FindAllString(html, -1); len(m) != 2 || !strings.Contains(m[0], `src="/ui/app.js"`) || !strings.Contains(m[1], `src="/ui/jobs.js"`) {
		t.Errorf("script tags: %q", m)
	}
	for _, re := range []string{`(?i)<style`, `(?i)\sstyle=`, `(?i)\son[a-z]+=`, `(?i)javascript:`, `(?i)https?://`} {
		if m := regexp.MustCompile(re).FindString(html); m != "" {
			t.Errorf("index.html has %q", m)
		}
	}
	served := map[string]bool{}
	for _, p := range Paths() {
		served[p] = true
	}
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(html, -1) {
		if !served[m[1]] {
			t.Errorf("index.html references %s, which Handler does not serve", m[1])
		}
	}
	for _, name := range []string{"app.js", "jobs.js"} {
		js, _ := static.ReadFile("static/" + name)
		if regexp.MustCompile(`\beval\(|new Function|innerHTML|console\.`).Match(js) {
			t.Errorf("%s uses eval, new Function, innerHTML or console", name)
		}
		if regexp.MustCompile(`fetch\(['"]https?:`).Match(js) {
			t.Errorf("%s fetches an absolute URL", name)
		}
	}
}
