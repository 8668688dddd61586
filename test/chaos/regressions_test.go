package chaos

// Regression tests for four bugs the chaos suite found after its first
// round, all fixed: a tunnel without proxy_key, the pages through a tunnel,
// Retry-After "NaN", and an upstream that echoes the key. Each test fails
// if its bug comes back.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// TestRegressionTunnelWithoutProxyKey guards a fixed security hole.
// allowed_hosts exists for tunnels (the contract's own example), and a
// tunnel makes a loopback proxy reachable from the whole internet, yet
// proxy_key used to be required only when listen was not loopback: with
// allowed_hosts = ["x.trycloudflare.com"] and no proxy_key, anyone who
// learnt the tunnel's name could spend the user's Chutes balance. The
// config is now invalid, with a problem naming proxy_key.
func TestRegressionTunnelWithoutProxyKey(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "proxy.toml"), []byte(`allowed_hosts = ["chaos.trycloudflare.com"]`+"\n"), 0o600)
	_, err := config.Load(config.Options{Dir: dir, Getenv: func(string) string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "proxy_key") {
		t.Errorf("allowed_hosts without proxy_key: err %v, want a problem naming proxy_key", err)
	}
}

// TestRegressionTunnelPagesWithoutProxyKey guards the other half of that
// hole: even with a proxy_key, /, /status and /metrics (model states, the
// key's prefix, quota, balance) used to be served without it to any
// connection from loopback, and a tunnel daemon connects from loopback. A
// request whose Host is one of allowed_hosts now needs the key for the
// pages too: 401 without it.
func TestRegressionTunnelPagesWithoutProxyKey(t *testing.T) {
	up := newUpstream(t, false)
	p := startProxyWithPages(t, newConfig(t, up.URL, func(c *config.Config) {
		c.AllowedHosts = []string{"chaos.trycloudflare.com"}
	}))
	for _, path := range []string{"/status", "/metrics", "/"} {
		req, _ := http.NewRequest(http.MethodGet, p.URL+path, nil)
		req.Host = "chaos.trycloudflare.com"
		r := doRequest(t, newClient(t), req, false)
		if r.status != http.StatusUnauthorized {
			t.Errorf("GET %s through the tunnel without the proxy_key: %d, want 401", path, r.status)
		}
	}
}

// TestRegressionParseRetryAfterNaN guards a fixed minor bug:
// ParseRetryAfter("NaN") used to return -2562047h47m16s. strconv.ParseFloat
// accepts "NaN" (and "nan", "+NaN"), a NaN passed both range checks
// (n <= 0, n > 86400) because every comparison with it is false, and
// time.Duration(NaN) is the minimum int64 on amd64. The range is now
// checked in the positive form (n > 0 && n <= 86400), which a NaN fails,
// so garbage gives 0 as the doc promises.
func TestRegressionParseRetryAfterNaN(t *testing.T) {
	for _, v := range []string{"NaN", "nan", "+NaN", " NaN "} {
		if d := failover.ParseRetryAfter(v, time.Now()); d != 0 {
			t.Errorf("ParseRetryAfter(%q) = %v, want 0", v, d)
		}
	}
}

// TestRegressionUpstreamEchoesKey guards a fixed hardening gap: an
// upstream that echoes the key in its error body ("Invalid token cpk_...")
// used to have it passed verbatim to the client (in the invalid_api_key
// message, in a passed-through OpenAI-shaped 4xx body, and for failover
// statuses in attempts[].reason) and to the "model failed, trying the
// next" log line; with a proxy_key the client is not meant to know the
// Chutes key. Chutes itself does not echo keys today, so the fake upstream
// here does, for a 401, a 400 and a 503. The proxy now replaces the key
// with its redacted form wherever it keeps the upstream's words; neither
// the answer nor the logs may hold it.
func TestRegressionUpstreamEchoesKey(t *testing.T) {
	up := newUpstream(t, false)
	echo := func(status int, shape string) handler {
		return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, shape, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		}
	}
	cases := []struct {
		name string
		h    handler
	}{
		{"401 detail", echo(401, `{"detail":"Invalid token %s"}`)},
		{"400 OpenAI-shaped", echo(400, `{"error":{"message":"bad key %s","type":"invalid_request_error","code":"bad"}}`)},
		{"503 detail", echo(503, `{"detail":"no instances for key %s"}`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up.set(faultModel, tc.h)
			up.set(goodModel, tc.h)
			p := startProxy(t, newConfig(t, up.URL, nil))
			r := send(t, newClient(t), p.URL, faultModel, false)
			for _, k := range canaries {
				if strings.Contains(string(r.body), k) {
					t.Errorf("the answer (%d) holds %q: %.300s", r.status, k, r.body)
				}
				if strings.Contains(p.logs.String(), k) {
					t.Errorf("a log line holds %q", k)
				}
			}
		})
	}
}
