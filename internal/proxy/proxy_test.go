package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The transport's idle connections are closed by t.Cleanup, but
		// their reader goroutines may still be winding down when goleak
		// looks; these exit on their own.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// testConfig is the embedded default pointed at upstream, with short time-outs.
func testConfig(t testing.TB, upstream string, edit func(*config.Config)) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = upstream + "/v1"
	cfg.Upstream.APIKey = "cpk_test0123456789abcdef.secretsecretsecret"
	cfg.Upstream.FirstByteTimeout = config.Duration(2 * time.Second)
	cfg.Upstream.IdleTimeout = config.Duration(2 * time.Second)
	// The fake upstreams of these tests answer plain requests plainly;
	// stream_plain has its own tests, against the simulator.
	cfg.Upstream.StreamPlain = false
	cfg.Models = nil
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

// logBuffer is a concurrency-safe log sink for asserting on logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startProxy serves a proxy for cfg over loopback.
func startProxy(t testing.TB, cfg *config.Config) (*httptest.Server, *Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := New(Options{Config: cfg, Logger: log})
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	return ts, srv, logs
}

type seen struct {
	mu      sync.Mutex
	path    string
	header  http.Header
	body    []byte
	queries []string
}

func (s *seen) record(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.path, s.header, s.body = r.URL.Path, r.Header.Clone(), b
	s.queries = append(s.queries, r.URL.RawQuery)
}

func (s *seen) get() (string, http.Header, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.path, s.header, s.body
}

func TestForwardsFaithfully(t *testing.T) {
	var got seen
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.record(r)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Keep-Alive", "timeout=5")
		fmt.Fprint(w, `{"id":"1","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}]}`)
	}))
	defer up.Close()

	body := `{"model":"deepseek-ai/DeepSeek-R1", "messages":[{"role":"user","content":"héllo"}],"temperature":0.70,"top_k":40,"logit_bias":{}}`
	tests := []struct {
		name       string
		path       string
		configKey  string
		clientAuth string
		wantPath   string
		wantAuth   string
	}{
		{"config key replaces client's", "/v1/chat/completions", "cpk_config", "Bearer cpk_client", "/v1/chat/completions", "Bearer cpk_config"},
		{"client key forwarded", "/v1/chat/completions", "", "Bearer cpk_client", "/v1/chat/completions", "Bearer cpk_client"},
		{"client key trimmed", "/v1/chat/completions", "", "Bearer  cpk_client \t", "/v1/chat/completions", "Bearer cpk_client"},
		{"no /v1 prefix", "/chat/completions", "cpk_config", "", "/v1/chat/completions", "Bearer cpk_config"},
		{"pasted full endpoint", "/v1/chat/completions/chat/completions", "cpk_config", "", "/v1/chat/completions", "Bearer cpk_config"},
		{"completions", "/v1/completions", "cpk_config", "", "/v1/completions", "Bearer cpk_config"},
		{"embeddings", "/embeddings", "cpk_config", "", "/v1/embeddings", "Bearer cpk_config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, up.URL, func(c *config.Config) { c.Upstream.APIKey = config.Secret(tt.configKey) })
			ts, _, _ := startProxy(t, cfg)
			req, _ := http.NewRequest("POST", ts.URL+tt.path+"?x=1", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Connection", "close, X-Secret-Hop")
			req.Header.Set("X-Secret-Hop", "drop me")
			req.Header.Set("Proxy-Authorization", "Basic abc")
			req.Header.Set("X-Custom", "kept")
			req.Header.Set("Expect", "100-continue") // curl's, for bodies over 1 KB
			if tt.clientAuth != "" {
				req.Header.Set("Authorization", tt.clientAuth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			rb, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, rb)
			}
			path, h, b := got.get()
			if path != tt.wantPath {
				t.Errorf("upstream path %q, want %q", path, tt.wantPath)
			}
			if string(b) != body {
				t.Errorf("upstream body changed:\n got %s\nwant %s", b, body)
			}
			if a := h.Get("Authorization"); a != tt.wantAuth {
				t.Errorf("upstream Authorization %q, want %q", a, tt.wantAuth)
			}
			for _, hop := range []string{"X-Secret-Hop", "Proxy-Authorization", "Keep-Alive", "Expect"} {
				if h.Get(hop) != "" {
					t.Errorf("hop-by-hop header %s reached the upstream", hop)
				}
			}
			if h.Get("X-Custom") != "kept" {
				t.Errorf("X-Custom not forwarded")
			}
			if resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Keep-Alive") != "" {
				t.Errorf("response headers not copied right: %v", resp.Header)
			}
			if resp.Header.Get("X-Chutes-Proxy-Model") != "deepseek-ai/DeepSeek-R1" || resp.Header.Get("X-Chutes-Proxy-Attempts") != "1" || resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("proxy headers missing: %v", resp.Header)
			}
			if !strings.Contains(string(rb), `"content":"hi"`) {
				t.Errorf("body %s", rb)
			}
		})
	}
}

// TestStreamNotBuffered proves events are flushed one by one: the client
// reads the first event while the upstream still holds the last one back.
func TestStreamNotBuffered(t *testing.T) {
	release := make(chan struct{})
	events := []string{
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n",
		": keep-alive comment\n\n",
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"<think>x</think>Hi\"}}]}\n\n",
	}
	last := "data: [DONE]\n\n"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for _, e := range events {
			io.WriteString(w, e)
			rc.Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, last)
	}))
	defer up.Close()
	defer close(release)
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))

	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	want := strings.Join(events, "")
	buf := make([]byte, len(want))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, buf); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("events did not arrive before the upstream finished: the proxy buffers")
	}
	if string(buf) != want {
		t.Fatalf("stream changed:\n got %q\nwant %q", buf, want)
	}
	release <- struct{}{}
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != last {
		t.Fatalf("tail %q", rest)
	}
}

func TestProxyErrors(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{}`)
	}))
	defer up.Close()
	const secret = "cpk_SECRETSECRETSECRET.abcdefabcdef"
	tests := []struct {
		name   string
		edit   func(*config.Config)
		host   string
		auth   string
		body   string
		status int
		code   string
	}{
		{"not json", nil, "", "", `{"model":`, 400, "invalid_json"},
		{"empty body", nil, "", "", ``, 400, "invalid_json"},
		{"array", nil, "", "", `[1]`, 400, "invalid_json"},
		{"missing model", nil, "", "", `{"messages":[]}`, 400, "missing_model"},
		{"model wrong type", nil, "", "", `{"model":5}`, 400, "missing_model"},
		{"too large", func(c *config.Config) { c.MaxBodyMB = 1 }, "", "", `{"model":"m","x":"` + strings.Repeat("a", 1<<20) + `"}`, 413, "body_too_large"},
		{"no key", func(c *config.Config) { c.Upstream.APIKey = "" }, "", "", `{"model":"m"}`, 401, "missing_api_key"},
		{"bearer undefined is no key", func(c *config.Config) { c.Upstream.APIKey = "" }, "", "Bearer undefined", `{"model":"m"}`, 401, "missing_api_key"},
		{"empty bearer is no key", func(c *config.Config) { c.Upstream.APIKey = "" }, "", "Bearer ", `{"model":"m"}`, 401, "missing_api_key"},
		{"wrong proxy key", func(c *config.Config) { c.ProxyKey = "letmein" }, "", "Bearer " + secret, `{"model":"m"}`, 401, "invalid_proxy_key"},
		{"proxy key but no chutes key", func(c *config.Config) { c.ProxyKey = "letmein"; c.Upstream.APIKey = "" }, "", "Bearer letmein", `{"model":"m"}`, 401, "missing_api_key"},
		{"rebinding host", nil, "evil.example.com", "", `{"model":"m"}`, 403, "host_not_allowed"},
		{"allowed host", func(c *config.Config) { c.AllowedHosts = []string{"my.tunnel.dev"} }, "my.tunnel.dev", "", `{"model":"m"}`, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, up.URL, tt.edit)
			ts, _, logs := startProxy(t, cfg)
			req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(tt.body))
			if tt.host != "" {
				req.Host = tt.host
			}
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
				var e struct {
					Error struct{ Message, Type, Code string } `json:"error"`
				}
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatalf("not OpenAI-shaped: %s", b)
				}
				if e.Error.Code != tt.code || e.Error.Message == "" || e.Error.Type == "" {
					t.Fatalf("error %+v, want code %s", e.Error, tt.code)
				}
			}
			for _, leak := range []string{secret, "SECRETSECRET", "cpk_test0123456789abcdef.secret"} {
				if strings.Contains(string(b), leak) || strings.Contains(logs.String(), leak) {
					t.Fatalf("key leaked:\nbody %s\nlogs %s", b, logs)
				}
			}
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		close(canceled)
	}))
	defer up.Close()
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if !strings.HasPrefix(line, "data:") {
		t.Fatalf("first line %q", line)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-canceled:
	case <-time.After(2 * time.Second):
		t.Fatal("upstream request not canceled after the client left")
	}
}

func TestGracefulDrain(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"n\":1,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"1\"}}]}\n\n")
		http.NewResponseController(w).Flush()
		<-release
		io.WriteString(w, "data: {\"n\":2}\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	cfg := testConfig(t, up.URL, nil)
	srv := New(Options{Config: cfg})
	defer srv.Close()
	hs := HTTPServer("127.0.0.1:0", srv, nil)
	ln, err := newLoopbackListener()
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, hs, ln, 5*time.Second) }()

	resp, err := http.Post("http://"+ln.Addr().String()+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if l, _ := br.ReadString('\n'); !strings.Contains(l, `"n":1`) {
		t.Fatalf("first line %q", l)
	}
	stop() // SIGTERM
	// New connections are refused while the stream drains: Shutdown
	// closes the listener at once, so this holds well within the wait.
	refused := false
	for deadline := time.Now().Add(5 * time.Second); !refused && time.Now().Before(deadline); {
		resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
		if err != nil {
			refused = true
			break
		}
		resp.Body.Close()
		time.Sleep(5 * time.Millisecond) // poll period
	}
	if !refused {
		t.Error("new requests still accepted 5s into the drain")
	}
	close(release)
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(rest), "[DONE]") {
		t.Fatalf("stream cut during drain: %q %v", rest, err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestPagesNeedProxyKeyFromOtherMachines: on a non-loopback listen, the
// status pages answer this machine freely and others only with the key.
func TestPagesNeedProxyKeyFromOtherMachines(t *testing.T) {
	cfg := testConfig(t, "http://127.0.0.1:1", func(c *config.Config) {
		c.Listen = "0.0.0.0:8787"
		c.ProxyKey = "letmein"
	})
	pages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "status page") })
	srv := New(Options{Config: cfg, Pages: pages})
	defer srv.Close()
	tests := []struct {
		remote, host, auth string
		want               int
	}{
		{"127.0.0.1:5555", "127.0.0.1:8787", "", 200},
		{"[::1]:5555", "localhost:8787", "", 200},
		{"192.0.2.7:5555", "host.docker.internal:8787", "", 401},
		{"192.0.2.7:5555", "host.docker.internal:8787", "Bearer letmein", 200},
		// a tunnel's requests come from a local process with its own name
		{"127.0.0.1:5555", "x.trycloudflare.com", "", 401},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "http://"+tt.host+"/status", nil)
		req.RemoteAddr = tt.remote
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s to %s %q: %d, want %d", tt.remote, tt.host, tt.auth, rec.Code, tt.want)
		}
	}
}
