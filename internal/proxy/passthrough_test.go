package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPassthroughStaysUnderV1: pass-through forwards only what stays under
// the upstream's /v1/ once dot segments (plain or percent-encoded) are
// resolved; anything else is a local 404 that never reaches the upstream
// with the configured key.
func TestPassthroughStaysUnderV1(t *testing.T) {
	var got seen
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.record(r)
		got.mu.Lock()
		got.path = r.URL.EscapedPath()
		got.mu.Unlock()
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))

	tests := []struct {
		name, path string
		want       string // the upstream's path; "" = must not reach it
	}{
		{"plain", "/v1/files", "/v1/files"},
		{"dot segment inside", "/v1/files/../batches", "/v1/batches"},
		{"escapes /v1", "/v1/../users/me", ""},
		{"encoded dots", "/v1/%2e%2e/users/me", ""},
		{"encoded slash", "/v1/files/..%2f..%2fusers/me", ""},
		{"deep escape", "/v1/a/../../../etc", ""},
		{"to the bare base", "/v1/..", ""},
		{"encoded question mark stays in the path", "/v1/files/a%3Fb", "/v1/files/a%3Fb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got.mu.Lock()
			got.path = ""
			got.mu.Unlock()
			status := rawGet(t, ts.Listener.Addr().String(), tt.path)
			p, _, _ := got.get()
			if tt.want == "" {
				if status != http.StatusNotFound || p != "" {
					t.Fatalf("GET %s: status %d, upstream saw %q; want a local 404", tt.path, status, p)
				}
				return
			}
			if status != http.StatusOK || p != tt.want {
				t.Fatalf("GET %s: status %d, upstream saw %q; want %q", tt.path, status, p, tt.want)
			}
		})
	}
}

// rawGet sends a GET with the request target exactly as given (Go's client
// would clean or re-encode it) and returns the status.
func rawGet(t *testing.T, addr, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(b))), nil)
	if err != nil {
		t.Fatalf("reading the answer to %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
