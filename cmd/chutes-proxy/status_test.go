package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// statusKey is the configured key of these tests; no page may show it.
const statusKey = "cpk_status_test_key.verysecretsuffix"

// startApp runs newApp (the wiring serve uses) for a config file in front of
// a simulator, on a loopback port, until the test ends.
func startApp(t *testing.T, extra string) (a *app, url string, sim *simulator.Simulator, file string) {
	t.Helper()
	sim = simulator.New(simulator.Scenario{Seed: 1, Models: []simulator.ModelScenario{
		{ID: mDown, Behavior: simulator.Behavior{Kind: simulator.KindDown}},
		{ID: mHealthy},
	}})
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	t.Cleanup(sim.Close)

	dir := t.TempDir()
	file = filepath.Join(dir, "proxy.toml")
	writeConfig(t, file, up.URL, extra)
	cfg, err := config.Load(config.Options{File: file, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	a, err = newApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a.handler)
	t.Cleanup(a.close) // after the server: counts of the last requests are in
	t.Cleanup(ts.Close)
	t.Cleanup(ts.Client().CloseIdleConnections)
	return a, ts.URL, sim, file
}

func writeConfig(t *testing.T, file, upURL, extra string) {
	t.Helper()
	text := `[upstream]
base_url = "` + upURL + `/v1"
api_key = "` + statusKey + `"
account_url = ""
first_byte_timeout = "3s"

[breaker]
failures = 2
cooldown = "1m"

[[models]]
id = "` + mDown + `"
aliases = ["auto"]
fallbacks = ["` + mHealthy + `"]
` + extra
	// extra may hold top-level tables; they follow [[models]] safely only
	// as whole tables, which the tests pass.
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func chatOnce(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestStatusCommand(t *testing.T) {
	a, url, _, _ := startApp(t, "\n[health]\nprobe_interval = \"1h\"\n")
	for range 2 {
		if code := chatOnce(t, url); code != 200 {
			t.Fatalf("chat: %d", code)
		}
	}
	a.monitor.ProbeNow(context.Background(), a.proxy.ClientFor) // as Run does at start
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "--url", url}, &out, &errb); code != 0 {
		t.Fatalf("status exit %d: %s", code, errb.String())
	}
	got := out.String()
	t.Logf("chutes-proxy status:\n%s", got)
	lines := strings.Split(got, "\n")
	line := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starts with %q", prefix)
		return ""
	}
	// The headline: Chutes answers; the first model is down, and why; where
	// requests go instead.
	hasAll(t, lines[0], "reachable", mDown, "down", "no instances available", mHealthy)
	hasAll(t, line("MODEL"), "STATE", "AVAILABLE", "SUCCESS", "P50", "P95", "REQS")
	hasAll(t, line(mDown+" "), "open", "no", "2 failures")
	hasAll(t, line(mHealthy+" "), "closed", "yes", "100%")
	hasAll(t, line("  auto:"), mDown, mHealthy, "serving: "+mHealthy)
	hasAll(t, line("Upstream:"), "/v1", "reachable")
	// The key is shown redacted, unchecked, with the setting that says why.
	hasAll(t, line("Key:"), "cpk_st…", "unchecked", "account_url")
	hasAll(t, line("Proxy:"), "4 requests", "no cap")
	if strings.Contains(got, "verysecret") {
		t.Fatal("status output shows the key")
	}
}

// hasAll fails the test for each fact text lacks.
func hasAll(t *testing.T, text string, facts ...string) {
	t.Helper()
	for _, f := range facts {
		if !strings.Contains(text, f) {
			t.Errorf("%q lacks %q", text, f)
		}
	}
}

func TestStatusCommandNoProxy(t *testing.T) {
	// A port that was just free: nothing listens there.
	ts := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(ts.URL, "http://")
	ts.Close()
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()

	tests := []struct {
		name string
		url  string
		want []string
	}{
		{"nothing listens", addr, []string{addr, "connection refused", "chutes-proxy serve", "--url"}},
		{"something else listens", other.URL, []string{other.URL, "404", "chutes-proxy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{"status", "--url", tt.url}, &out, &errb)
			if code != 1 || out.Len() != 0 {
				t.Fatalf("exit %d stdout %q, want 1 and nothing", code, out.String())
			}
			hasAll(t, errb.String(), tt.want...)
		})
	}
}

func TestStatusURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://127.0.0.1:8787", "http://127.0.0.1:8787/status"},
		{"127.0.0.1:8787", "http://127.0.0.1:8787/status"},
		{"http://127.0.0.1:8787/", "http://127.0.0.1:8787/status"},
		{"http://127.0.0.1:8787/v1", "http://127.0.0.1:8787/status"},
		{"http://localhost:9000/status", "http://localhost:9000/status"},
		{" https://proxy.example/ ", "https://proxy.example/status"},
	}
	for _, tt := range tests {
		if got := statusURL(tt.in); got != tt.want {
			t.Errorf("statusURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestAppWiring checks what newApp connects: pages that never show the key,
// the daily quota gate with its state file, the quota's reload, and a
// close that writes the last counts.
func TestAppWiring(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state", "quota.json")
	a, url, _, file := startApp(t, "\n[quota]\ndaily_requests = 3\nstate_file = \""+state+"\"\n\n[health]\nprobe_interval = \"0s\"\n")

	// 1st request: the down model (1 attempt) then the fallback (1) = 2;
	// 2nd: 2 more = 4 ≥ 3, so the 3rd is refused.
	for i, want := range []int{200, 200, 429} {
		if code := chatOnce(t, url); code != want {
			t.Fatalf("request %d: %d, want %d", i, code, want)
		}
	}
	for _, p := range []string{"/", "/status", "/metrics"} {
		resp, err := http.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(b), "verysecret") {
			t.Fatalf("GET %s: %d, shows the key: %v", p, resp.StatusCode, strings.Contains(string(b), "verysecret"))
		}
		if p == "/status" {
			var s struct {
				Quota struct {
					Count, Limit int
					Exhausted    bool
					File         string `json:"state_file"`
				} `json:"proxy_quota"`
			}
			if err := json.Unmarshal(b, &s); err != nil || s.Quota.Count != 4 || s.Quota.Limit != 3 || !s.Quota.Exhausted || s.Quota.File != state {
				t.Fatalf("/status proxy_quota %+v %v", s.Quota, err)
			}
		}
		if p == "/metrics" && !strings.Contains(string(b), `chutes_proxy_requests_total{model="none",outcome="daily_quota_exhausted"} 1`) {
			t.Fatalf("/metrics lacks the refused request:\n%s", b)
		}
	}

	// A reload that raises the cap lets requests through again.
	up := strings.TrimSuffix(a.proxy.Config().Upstream.BaseURL, "/v1")
	writeConfig(t, file, up, "\n[quota]\ndaily_requests = 10\nstate_file = \""+state+"\"\n\n[health]\nprobe_interval = \"0s\"\n")
	a.reload(config.Options{File: file, Getenv: func(string) string { return "" }}, a.proxy.Config().Listen, "test")
	if code := chatOnce(t, url); code != 200 {
		t.Fatalf("after raising the cap: %d", code)
	}

	a.close()
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Count int }
	if err := json.Unmarshal(b, &st); err != nil || st.Count != 5 {
		t.Fatalf("state file after close: %s (%v), want count 5", b, err)
	}
}

// TestStatusCommandProviders: chutes-proxy status prints a line per
// provider, each probed with its own key: one that answers, one whose
// local server is not running.
func TestStatusCommandProviders(t *testing.T) {
	const orKey = "sk-or-v1-status.test.key0123"
	or := simulator.New(simulator.Scenario{Seed: 2, Keys: []string{orKey}, Models: []simulator.ModelScenario{{ID: "deepseek/deepseek-r1:free"}}})
	var mu sync.Mutex
	var auths []string
	orSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		or.ServeHTTP(w, r)
	}))
	defer orSrv.Close()
	defer or.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	a, url, _, _ := startApp(t, `
[health]
probe_interval = "1h"

[[providers]]
name = "openrouter"
base_url = "`+orSrv.URL+`/v1"
api_key = "`+orKey+`"

[[providers]]
name = "ollama"
base_url = "`+closed.URL+`/v1"

[[models]]
id = "openrouter:deepseek/deepseek-r1:free"
fallbacks = ["ollama:llama3.1:8b"]
`)
	a.monitor.ProbeNow(context.Background(), a.proxy.ClientFor)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "--url", url}, &out, &errb); code != 0 {
		t.Fatalf("status exit %d: %s", code, errb.String())
	}
	got := out.String()
	t.Logf("chutes-proxy status:\n%s", got)
	var provs []string
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "Provider:") {
			provs = append(provs, l)
		}
	}
	if len(provs) != 2 {
		t.Fatalf("%d Provider lines, want 2", len(provs))
	}
	hasAll(t, provs[0], "openrouter", orSrv.URL, "reachable", "1 model listed", "key sk-or-… unchecked")
	hasAll(t, provs[1], "ollama", "unreachable (connect)", "key not_configured")
	hasAll(t, got, `provider "ollama"`, "ollama serve")
	if strings.Contains(got, "status.test") {
		t.Fatal("status output shows the provider's key")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range auths {
		if a != "Bearer "+orKey {
			t.Errorf("the provider received Authorization %q", a)
		}
	}
}

// TestAppCountsResumes: a stream cut after its first tokens and resumed
// (resume_streams) is counted on /metrics by the model cut and the one
// that continued.
func TestAppCountsResumes(t *testing.T) {
	_, url, sim, _ := startApp(t, "\n[failover]\nresume_streams = true\n\n[health]\nprobe_interval = \"0s\"\n")
	sim.SetBehavior(mDown, simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: 3})
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), ": resumed on") {
		t.Fatalf("the stream was not resumed:\n%s", body)
	}
	resp, err = c.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `chutes_proxy_resumes_total{from="`+mDown+`",to="`) {
		t.Fatalf("/metrics lacks chutes_proxy_resumes_total:\n%s", grepLines(string(metrics), "resumes"))
	}
}

// grepLines are the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
