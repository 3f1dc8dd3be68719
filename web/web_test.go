package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, p string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, p, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	return w
}

// Every answer, found or not, carries the security headers; files carry
// the content type a browser will run them as under nosniff.
func TestServesFilesWithSecurityHeaders(t *testing.T) {
	tests := []struct {
		name, method, path string
		status             int
		ctype              string
		body               string
	}{
		{"page", "GET", "/console/", 200, "text/html; charset=utf-8", `<script type="module" src="js/app.js">`},
		{"module", "GET", "/console/js/app.js", 200, "text/javascript; charset=utf-8", "import"},
		{"page module", "GET", "/console/js/pages/logs.js", 200, "text/javascript; charset=utf-8", "export"},
		{"stylesheet", "GET", "/console/app.css", 200, "text/css; charset=utf-8", ":root"},
		{"icon", "GET", "/console/icon.svg", 200, "image/svg+xml", "<svg"},
		{"head", "HEAD", "/console/", 200, "text/html; charset=utf-8", ""},
		{"missing", "GET", "/console/js/nope.js", 404, "", ""},
		{"directory", "GET", "/console/js/", 404, "", ""},
		{"outside", "GET", "/consolex", 404, "", ""},
		{"post", "POST", "/console/", 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := get(t, tt.method, tt.path)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			h := w.Header()
			if got := h.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
				t.Errorf("CSP = %q", got)
			}
			if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("headers = %v", h)
			}
			if tt.ctype != "" && h.Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type = %q, want %q", h.Get("Content-Type"), tt.ctype)
			}
			if !strings.Contains(w.Body.String(), tt.body) {
				t.Errorf("body lacks %q", tt.body)
			}
		})
	}
}

func TestPolicyIsStrict(t *testing.T) {
	for _, d := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self' ws: wss:",
		"img-src 'self' data:", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(ContentSecurityPolicy, d) {
			t.Errorf("CSP lacks %q", d)
		}
	}
	if strings.Contains(ContentSecurityPolicy, "unsafe") {
		t.Errorf("CSP allows something unsafe: %s", ContentSecurityPolicy)
	}
}

func TestRevalidatesWithETag(t *testing.T) {
	first := get(t, "GET", "/console/js/app.js")
	tag := first.Header().Get("ETag")
	if tag == "" || first.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q", tag, first.Header().Get("Cache-Control"))
	}
	if w := get(t, "GET", "/console/js/app.js", "If-None-Match", tag); w.Code != http.StatusNotModified {
		t.Errorf("revalidation answered %d, want 304", w.Code)
	}
}

func staticFiles(t *testing.T, ext string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ext {
			return err
		}
		b, err := fs.ReadFile(static, p)
		out[strings.TrimPrefix(p, "static/")] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no %s files", ext)
	}
	return out
}

// The CSP already blocks inline code; this keeps the pages from depending
// on it, and keeps data out of the HTML parser: the scripts build the page
// with DOM APIs and textContent only.
func TestNoInlineCodeAndNoHTMLSinks(t *testing.T) {
	for name, src := range staticFiles(t, ".html") {
		for _, re := range []*regexp.Regexp{
			regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>`), // checked below: must have src
			regexp.MustCompile(`(?i)<style`),
			regexp.MustCompile(`(?i)\sstyle\s*=`),
			regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
			regexp.MustCompile(`(?i)javascript:`),
		} {
			for _, m := range re.FindAllString(src, -1) {
				if strings.HasPrefix(strings.ToLower(m), "<script") && strings.Contains(m, " src=") {
					continue
				}
				t.Errorf("%s: inline code or style: %s", name, m)
			}
		}
	}
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc|createContextualFragment|DOMParser|\.style\.|setAttribute\("style"|setAttribute\("on`)
	for name, src := range staticFiles(t, ".js") {
		for _, m := range sinks.FindAllString(src, -1) {
			t.Errorf("%s uses %s: render data with textContent / DOM APIs", name, m)
		}
	}
}

// A module that imports a missing file would fail in the browser only.
func TestModuleImportsResolve(t *testing.T) {
	imp := regexp.MustCompile(`(?m)^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"`)
	for name, src := range staticFiles(t, ".js") {
		for _, m := range imp.FindAllStringSubmatch(src, -1) {
			target := path.Join(path.Dir(name), m[1])
			if !strings.HasPrefix(m[1], ".") {
				t.Errorf("%s imports %q: only relative modules exist here (no bundler)", name, m[1])
				continue
			}
			if _, ok := assets[target]; !ok {
				t.Errorf("%s imports %q, which is not embedded", name, m[1])
			}
		}
	}
	if _, ok := assets["js/app.js"]; !ok {
		t.Fatal("js/app.js is not embedded")
	}
}
