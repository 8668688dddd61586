package chaos

// Regression tests for bugs the chaos suite found after the first round
// (the earlier ones live in faults_test.go and hostile_test.go): a tunnel
// without proxy_key, the pages through a tunnel, Retry-After "NaN", and an
// upstream that echoes the key.

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

// BUG A (security): allowed_hosts exists for tunnels (the contract's own
// example), and a tunnel makes a loopback proxy reachable from the whole
// internet, yet validate (internal/config/validate.go, the listen check)
// asks for proxy_key only when listen is not loopback. With
// allowed_hosts = ["x.trycloudflare.com"] and no proxy_key, anyone who
// learns the tunnel's name spends the user's Chutes balance; and even with
// a proxy_key, /, /status and /metrics are served without it through the
// tunnel (server.go: the pages check is skipped when st.loopback, and the
// tunnel daemon's connection is from loopback anyway).
// Suggested fix: make proxy_key required when allowed_hosts is not empty
// (a Problem naming allowed_hosts and proxy_key), and require the key for
// the pages when the Host is one of allowed_hosts.
func TestRegressionTunnelWithoutProxyKey(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "proxy.toml"), []byte(`allowed_hosts = ["chaos.trycloudflare.com"]`+"\n"), 0o600)
	_, err := config.Load(config.Options{Dir: dir, Getenv: func(string) string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "proxy_key") {
		t.Errorf("allowed_hosts without proxy_key: err %v, want a problem naming proxy_key", err)
	}
}

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

// BUG B (minor): ParseRetryAfter("NaN") returns -2562047h47m16s.
// strconv.ParseFloat accepts "NaN" (and "nan", "+NaN"); NaN fails both
// range checks (n <= 0, n > 86400) in internal/failover/classify.go
// ParseRetryAfter, and time.Duration(NaN) is the minimum int64 on amd64.
// Harmless today (cool and RetryAfterHeader ignore waits <= 0), but the
// doc promises 0 for garbage. Fix: `if err == nil && !(n > 0 && n <= 86400)`
// (a NaN fails the positive form), or check math.IsNaN.
func TestRegressionParseRetryAfterNaN(t *testing.T) {
	for _, v := range []string{"NaN", "nan", "+NaN", " NaN "} {
		if d := failover.ParseRetryAfter(v, time.Now()); d != 0 {
			t.Errorf("ParseRetryAfter(%q) = %v, want 0", v, d)
		}
	}
}

// BUG C (hardening): an upstream that echoes the key in its error body
// ("Invalid token cpk_...") has it passed verbatim to the client — in the
// invalid_api_key message (the reason is quoted whole), in a passed-through
// OpenAI-shaped 4xx body (diagnose.fromUpstream's Raw), and for failover
// statuses in attempts[].reason and the "model failed, trying the next"
// log line. With a proxy_key the client is not meant to know the Chutes key.
// Chutes itself does not echo keys today, so this needs a misbehaving
// upstream (or a future error message). Suggested fix: where the error
// body is read (forward.go attempt, the UpstreamError; sse.go streamReason),
// replace the key sent with config.Redact(key) before anything keeps it.
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
