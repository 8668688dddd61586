package clients

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Open WebUI runs in Docker and reaches the proxy on the host as
// http://host.docker.internal:8787/v1, from its Python backend. A proxy on
// 127.0.0.1 is out of the container's reach, so it must listen on a non-loopback
// address, which the config accepts only with a proxy_key; the requests then
// carry Host: host.docker.internal:8787.

const dockerHost = "host.docker.internal:8787"

// TestOpenWebUIListenNeedsProxyKey: listen = "0.0.0.0:8787" without a
// proxy_key is a config error that names the key and the fix; with one it
// loads. The environment variable and the flag are held to the same rule.
func TestOpenWebUIListenNeedsProxyKey(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		env    map[string]string
		flag   string
		listen string // the listen address in force; "" = a config error
	}{
		{name: "file, no proxy_key", file: "listen = \"0.0.0.0:8787\"\n"},
		{name: "file, with proxy_key", file: "listen = \"0.0.0.0:8787\"\nproxy_key = \"owui-3f9c2d7a51b84e6f\"\n", listen: "0.0.0.0:8787"},
		{name: "docker bridge address, no proxy_key", file: "listen = \"172.17.0.1:8787\"\n"},
		{name: "all interfaces written as :8787", file: "listen = \":8787\"\n"},
		{name: "environment, no proxy_key", file: "", env: map[string]string{config.EnvListen: "0.0.0.0:8787"}},
		{name: "flag, with proxy_key", file: "proxy_key = \"owui-3f9c2d7a51b84e6f\"\n", flag: "0.0.0.0:8787", listen: "0.0.0.0:8787"},
		{name: "loopback needs none", file: "listen = \"127.0.0.1:8787\"\n", listen: "127.0.0.1:8787"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "proxy.toml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(config.Options{File: path, Listen: tt.flag, Dir: dir,
				Getenv: func(k string) string { return tt.env[k] }})
			if tt.listen != "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if cfg.Listen != tt.listen {
					t.Errorf("listen %q, want %q", cfg.Listen, tt.listen)
				}
				return
			}
			var probs config.Problems
			if !errors.As(err, &probs) {
				t.Fatalf("want config problems, got %T %v", err, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, ":listen:") || !strings.Contains(msg, "proxy_key must be set") {
				t.Errorf("problem does not name listen and proxy_key: %s", msg)
			}
		})
	}
}

// TestOpenWebUIFromDocker: with listen on every interface and a proxy_key,
// a request whose Host is host.docker.internal is served (the rebinding
// guard is for loopback listeners only) when it carries the proxy key, and
// refused without it; the proxy key never reaches Chutes. A loopback
// listener refuses that Host unless allowed_hosts names it.
func TestOpenWebUIFromDocker(t *testing.T) {
	const proxyKey = "owui-3f9c2d7a51b84e6f"
	tests := []struct {
		name   string
		listen string
		hosts  []string
		auth   string
		path   string
		status int
		code   string
		noKey  bool // no Chutes key in the config
	}{
		{"chat with the proxy key", "0.0.0.0:8787", nil, "Bearer " + proxyKey, "/v1/chat/completions", 200, "", false},
		{"models with the proxy key", "0.0.0.0:8787", nil, "Bearer " + proxyKey, "/v1/models", 200, "", false},
		{"chat without a key", "0.0.0.0:8787", nil, "", "/v1/chat/completions", 401, "invalid_proxy_key", false},
		{"chat with the Chutes key instead", "0.0.0.0:8787", nil, "Bearer " + testKey, "/v1/chat/completions", 401, "invalid_proxy_key", false},
		{"models without a key", "0.0.0.0:8787", nil, "", "/v1/models", 401, "invalid_proxy_key", false},
		{"loopback listener refuses the Docker host name", "127.0.0.1:8787", nil, "", "/v1/chat/completions", 403, "host_not_allowed", false},
		{"loopback listener with allowed_hosts", "127.0.0.1:8787", []string{"host.docker.internal"}, "", "/v1/chat/completions", 200, "", false},
		// The app's key field holds the proxy key, so Chutes' key must be in
		// the proxy's config or environment.
		{"proxy key but no Chutes key configured", "0.0.0.0:8787", nil, "Bearer " + proxyKey, "/v1/chat/completions", 401, "missing_api_key", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, r1)
			f.set(r1, chatReply(r1, "Hello from Open WebUI's model."))
			base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) {
				c.Listen = tt.listen
				c.AllowedHosts = tt.hosts
				if tt.noKey {
					c.Upstream.APIKey = ""
				}
				if !config.IsLoopback(tt.listen) {
					c.ProxyKey = proxyKey
				}
			}))
			var body io.Reader
			method := http.MethodGet
			if strings.HasSuffix(tt.path, "/completions") {
				method = http.MethodPost
				body = strings.NewReader(`{"model":"` + r1 + `","messages":[{"role":"user","content":"hi"}],"stream":false}`)
			}
			req, _ := http.NewRequest(method, base+tt.path, body)
			req.Host = dockerHost
			req.Header.Set("Content-Type", "application/json")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.code != "" {
				if e := parseError(t, b); e.Error.Code != tt.code {
					t.Errorf("code %q, want %q: %s", e.Error.Code, tt.code, e.Error.Message)
				} else if tt.noKey && !strings.Contains(e.Error.Message, "proxy_key, which is never sent to Chutes") {
					t.Errorf("message does not say the key field holds the proxy key: %s", e.Error.Message)
				}
				if len(f.requests()) != 0 {
					t.Error("a refused request reached Chutes")
				}
				return
			}
			if method == http.MethodPost && len(f.requests()) != 1 {
				t.Errorf("Chutes was asked %d times, want once", len(f.requests()))
			}
			for _, r := range f.requests() {
				if a := r.Header.Get("Authorization"); a != "Bearer "+testKey {
					t.Errorf("Chutes received Authorization %q, want the configured Chutes key", a)
				}
			}
		})
	}
}
