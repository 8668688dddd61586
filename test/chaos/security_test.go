package chaos

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// recordAuth wraps a handler and records the Authorization headers the
// upstream received.
type authLog struct {
	mu   sync.Mutex
	seen []string
}

func (a *authLog) wrap(h handler) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Api-Key"))
		a.mu.Unlock()
		h(u, w, r, stream)
	}
}

// TestProxyKey: only the exact proxy_key passes (compared with
// crypto/subtle.ConstantTimeCompare, internal/proxy/errors.go), it is never
// sent upstream, and it never stands in for a Chutes key.
func TestProxyKey(t *testing.T) {
	up := newUpstream(t, false)
	var auth authLog
	up.set(goodModel, auth.wrap(good))
	p := startProxy(t, newConfig(t, up.URL, nil))
	served := "200 " + goodModel + " (1 attempts)"
	tests := []struct {
		name   string
		header []string
		want   string
	}{
		{"no key", nil, "401 invalid_proxy_key"},
		{"the Chutes key instead", []string{"Authorization", "Bearer " + upstreamKey}, "401 invalid_proxy_key"},
		{"wrong key, same length", []string{"Authorization", "Bearer " + strings.Repeat("x", len(proxyKey))}, "401 invalid_proxy_key"},
		{"key with one character changed", []string{"Authorization", "Bearer " + proxyKey[:len(proxyKey)-1] + "3"}, "401 invalid_proxy_key"},
		{"prefix of the key", []string{"Authorization", "Bearer " + proxyKey[:10]}, "401 invalid_proxy_key"},
		{"key plus a suffix", []string{"Authorization", "Bearer " + proxyKey + "x"}, "401 invalid_proxy_key"},
		{"empty bearer", []string{"Authorization", "Bearer "}, "401 invalid_proxy_key"},
		{"Basic auth", []string{"Authorization", "Basic " + proxyKey}, "401 invalid_proxy_key"},
		{"right key", []string{"Authorization", "Bearer " + proxyKey}, served},
		{"right key, lower-case scheme, spaces", []string{"Authorization", "bearer   " + proxyKey + "  "}, served},
		{"right key in X-Api-Key", []string{"X-Api-Key", proxyKey}, served},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/chat/completions", strings.NewReader(chatBody(goodModel, false)))
			if tt.header != nil {
				req.Header.Set(tt.header[0], tt.header[1])
			}
			if got := doRequest(t, newClient(t), req, false).outcome(); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	auth.mu.Lock()
	defer auth.mu.Unlock()
	for _, a := range auth.seen {
		if a != "Bearer "+upstreamKey+"|" {
			t.Errorf("the upstream saw %q; want only the Chutes key", a)
		}
	}
	if len(auth.seen) != 3 {
		t.Errorf("upstream saw %d requests, want 3", len(auth.seen))
	}

	t.Run("proxy_key without api_key", func(t *testing.T) {
		p := startProxy(t, newConfig(t, up.URL, func(c *config.Config) { c.Upstream.APIKey = "" }))
		if got := send(t, newClient(t), p.URL, goodModel, false).outcome(); got != "401 missing_api_key" {
			t.Errorf("got %s; the proxy_key must never be sent to Chutes as the key", got)
		}
	})
}

// TestListenNeedsProxyKey: a listen address reachable from other machines
// without a proxy_key is a config error (so serve refuses to start).
func TestListenNeedsProxyKey(t *testing.T) {
	for _, tt := range []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:8787", true}, {"localhost:8787", true}, {"[::1]:8787", true}, {"127.0.0.9:9000", true},
		{"0.0.0.0:8787", false}, {":8787", false}, {"[::]:8787", false}, {"192.168.1.20:8787", false},
		{"myhost.lan:8787", false}, {"[::ffff:0.0.0.0]:8787", false},
	} {
		for _, withKey := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/proxy_key=%v", tt.listen, withKey), func(t *testing.T) {
				dir := t.TempDir()
				body := ""
				if withKey {
					body = fmt.Sprintf("proxy_key = %q\n", proxyKey)
				}
				if err := os.WriteFile(filepath.Join(dir, "proxy.toml"), []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := config.Load(config.Options{Dir: dir, Listen: tt.listen, Getenv: func(string) string { return "" }})
				var ps config.Problems
				refused := errors.As(err, &ps) && strings.Contains(err.Error(), "proxy_key")
				switch {
				case tt.ok || withKey:
					if err != nil {
						t.Errorf("refused: %v", err)
					}
				case !refused:
					t.Errorf("listen %s without proxy_key: err %v, want a Problem naming proxy_key", tt.listen, err)
				}
				if err != nil {
					captured.add("config error "+t.Name(), []byte(err.Error()))
				}
			})
		}
	}
}

// TestDNSRebinding: bound to loopback, the proxy answers only loopback
// Host names and allowed_hosts.
func TestDNSRebinding(t *testing.T) {
	up := newUpstream(t, false)
	plain := startProxy(t, newConfig(t, up.URL, nil))
	tunnel := startProxy(t, newConfig(t, up.URL, func(c *config.Config) {
		c.AllowedHosts = []string{"chaos-tunnel.example.com"}
	}))
	for _, tt := range []struct {
		host          string
		plain, tunnel bool // allowed?
	}{
		{"127.0.0.1", true, true}, {"127.0.0.1:8787", true, true}, {"localhost:8787", true, true},
		{"LOCALHOST", true, true}, {"[::1]:8787", true, true}, {"app.localhost:8787", true, true},
		{"evil.example", false, false}, {"evil.example:8787", false, false},
		{"127.0.0.1.nip.io", false, false}, {"localhost.evil.example", false, false},
		{"0.0.0.0:8787", false, false}, {"192.168.1.20:8787", false, false},
		{"chaos-tunnel.example.com", false, true}, {"CHAOS-TUNNEL.example.com:443", false, true},
		{"chaos-tunnel.example.com.evil.example", false, false},
	} {
		for _, p := range []struct {
			name    string
			p       *testProxy
			allowed bool
		}{{"no allowed_hosts", plain, tt.plain}, {"allowed_hosts", tunnel, tt.tunnel}} {
			t.Run(tt.host+"/"+p.name, func(t *testing.T) {
				for _, path := range []string{"/v1/chat/completions", "/healthz", "/v1/models"} {
					method, body := http.MethodGet, ""
					if path == "/v1/chat/completions" {
						method, body = http.MethodPost, chatBody(goodModel, false)
					}
					req, _ := http.NewRequest(method, p.p.URL+path, strings.NewReader(body))
					req.Host = tt.host
					req.Header.Set("Authorization", "Bearer "+proxyKey)
					r := doRequest(t, newClient(t), req, false)
					got := r.status
					if p.allowed && got == http.StatusForbidden || !p.allowed && r.outcome() != "403 host_not_allowed" {
						t.Errorf("%s %s with Host %q: %s", method, path, tt.host, r.outcome())
					}
				}
			})
		}
	}
}

// TestKeyNotInErrors drives the paths that talk about keys (rejected
// key, the client's own key, errors as messages, pass-through) and
// checks that no answer and no log line holds either key.
func TestKeyNotInErrors(t *testing.T) {
	up := newUpstream(t, false)
	up.set(faultModel, func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"detail":"Invalid token or user not found"}`)
	})
	cases := []struct {
		name   string
		edit   func(*config.Config)
		status int
	}{
		{"rejected key", nil, http.StatusUnauthorized},
		{"rejected key, errors as messages", func(c *config.Config) { c.Compat.ErrorsAsMessages = true }, http.StatusOK},
		// No proxy_key, no api_key: the client's bearer (here the string
		// proxyKey) is its own Chutes key, and the rejection names it.
		{"client's own key rejected", func(c *config.Config) { c.Upstream.APIKey, c.ProxyKey = "", "" }, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxyWithPages(t, newConfig(t, up.URL, tc.edit))
			c := newClient(t)
			for _, stream := range []bool{false, true} {
				r := send(t, c, p.URL, faultModel, stream)
				if r.status != tc.status {
					t.Errorf("stream=%v: %s", stream, r.outcome())
				}
				for _, k := range canaries {
					if strings.Contains(string(r.body), k) || strings.Contains(fmt.Sprint(r.header), k) {
						t.Errorf("the answer holds %q: %s", k, r.body)
					}
				}
			}
			for _, path := range []string{"/v1/unknown/thing", "/v1/models", "/", "/status", "/metrics"} {
				req, _ := http.NewRequest(http.MethodGet, p.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+proxyKey)
				r := doRequest(t, c, req, false)
				for _, k := range canaries {
					if strings.Contains(string(r.body), k) {
						t.Errorf("GET %s holds %q", path, k)
					}
				}
			}
			for _, k := range canaries {
				if strings.Contains(p.logs.String(), k) {
					t.Errorf("a log line holds %q:\n%s", k, p.logs.String())
				}
			}
		})
	}
}

// TestCrossOriginSimpleRequest: a page on another site can send a "simple"
// POST (text/plain, no preflight) to 127.0.0.1; the browser hides the
// answer, but it must not reach Chutes.
func TestCrossOriginSimpleRequest(t *testing.T) {
	up := newUpstream(t, false)
	p := startProxy(t, newConfig(t, up.URL, func(c *config.Config) { c.ProxyKey = "" }))
	for _, tt := range []struct {
		origin string
		want   string
	}{
		{"https://evil.example", "403 origin_not_allowed"},
		{"null", "403 origin_not_allowed"},
		{"http://127.0.0.1.evil.example", "403 origin_not_allowed"},
		{p.URL, "200 " + goodModel + " (1 attempts)"},
	} {
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/chat/completions", strings.NewReader(chatBody(goodModel, false)))
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
		req.Header.Set("Origin", tt.origin)
		if got := doRequest(t, newClient(t), req, false).outcome(); got != tt.want {
			t.Errorf("Origin %s: %s, want %s", tt.origin, got, tt.want)
		}
	}
	if n := up.count(goodModel); n != 1 {
		t.Errorf("the upstream saw %d requests, want 1 (the same-origin one)", n)
	}
}
