package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The doctor command end to end, in process: a fake Chutes (inference and
// account API) on loopback, named by IP so that no DNS is asked and nothing
// leaves this machine. The checks themselves are tested one by one, with
// injected resolvers and certificates, in internal/doctor.

// doctorFake is Chutes on loopback.
type doctorFake struct {
	mu    sync.Mutex
	chats []map[string]any
}

func (f *doctorFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/models":
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"deepseek-ai/DeepSeek-R1"},{"id":"Qwen/Qwen2.5-72B-Instruct"},{"id":"unsloth/gemma-3-27b-it"}]}`)
	case "/v1/chat/completions":
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.chats = append(f.chats, body)
		f.mu.Unlock()
		_, _ = io.WriteString(w, `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}]}`)
	case "/users/me/quota_usage/me":
		_, _ = io.WriteString(w, `{"quota":300,"used":212,"chute_id":"*"}`)
	case "/users/me":
		_, _ = io.WriteString(w, `{"username":"someone","balance":10.5}`)
	default:
		http.NotFound(w, r)
	}
}

// doctorEnv clears the variables config.Load reads, so that the machine's
// own environment cannot leak into a test.
func doctorEnv(t *testing.T) {
	for _, k := range []string{"CHUTES_API_KEY", "CHUTES_PROXY_CONFIG", "CHUTES_PROXY_LISTEN", "CHUTES_PROXY_UPSTREAM"} {
		t.Setenv(k, "")
	}
}

// doctorConfig writes a proxy.toml pointing at srv and returns its path.
func doctorConfig(t *testing.T, srv *httptest.Server, model string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	_ = ln.Close()
	path := filepath.Join(t.TempDir(), "proxy.toml")
	cfg := fmt.Sprintf(`listen = %q

[upstream]
base_url = "%s/v1"
api_key = "cpk_doctortest.0123456789abcdef"
account_url = %q

[[models]]
id = %q
aliases = ["r1"]
fallbacks = ["Qwen/Qwen2.5-72B-Instruct"]
`, listen, srv.URL, srv.URL, model)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runDoctorCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	start := time.Now()
	code = run(ctx, append([]string{"doctor"}, args...), &out, &errOut)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("doctor took %s; the contract allows 15 s", took)
	}
	t.Logf("chutes-proxy doctor %s → exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestDoctorCommand(t *testing.T) {
	doctorEnv(t)
	tests := []struct {
		name  string
		model string
		live  bool
		code  int
		has   []string
		chats int
	}{
		{
			name:  "good setup",
			model: "deepseek-ai/DeepSeek-R1",
			code:  0,
			has: []string{
				"ok    config", "ok    key        cpk_do…",
				"warn  base_url   http://127.0.0.1:", "is a server on this machine, not Chutes",
				"ok    dns        not needed", "ok    tcp", "ok    tls        not used: base_url is plain http",
				"ok    models", "3 models", "ok    account    key accepted; 212 of 300 requests used today", "balance $10.50",
				"ok    model ids", "ok    listen",
				"Everything looks fine: if chats still fail, it is on Chutes' side\n",
			},
		},
		{
			name:  "one problem: a misspelt model",
			model: "deepseek-ai/DeepSeek-R1-0528x",
			code:  1,
			has: []string{
				`FAIL  model ids  Chutes does not list "deepseek-ai/DeepSeek-R1-0528x" (models[0].id; did you mean deepseek-ai/DeepSeek-R1?)`,
				"1 problem on your side: fix the FAIL line above\n",
			},
		},
		{
			name:  "--live",
			model: "deepseek-ai/DeepSeek-R1",
			live:  true,
			code:  0,
			has:   []string{"ok    live       deepseek-ai/DeepSeek-R1 answered a 1-token completion", "counted as 1 request against your daily quota"},
			chats: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			fake := &doctorFake{}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			args := []string{"--config", doctorConfig(t, srv, tt.model)}
			if tt.live {
				args = append(args, "--live")
			}
			code, out, _ := runDoctorCmd(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			for _, h := range tt.has {
				if !strings.Contains(out, h) {
					t.Errorf("output lacks %q", h)
				}
			}
			if strings.Contains(out, "0123456789abcdef") {
				t.Error("the output shows the key")
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if len(fake.chats) != tt.chats {
				t.Fatalf("%d completions sent, want %d", len(fake.chats), tt.chats)
			}
			if tt.chats > 0 {
				if c := fake.chats[0]; c["max_tokens"] != float64(1) || c["stream"] != false {
					t.Errorf("the live completion was %v, want max_tokens 1 and stream false", c)
				}
			}
		})
	}
}

func TestDoctorCommandUsage(t *testing.T) {
	doctorEnv(t)
	tests := []struct {
		name string
		args []string
		code int
		out  string // in stdout
		err  string // in stderr
	}{
		{"help", []string{"--help"}, 0, "Usage: chutes-proxy doctor [flags]", ""},
		{"unknown flag", []string{"--nope"}, 2, "", "flag provided but not defined"},
		{"stray argument", []string{"now"}, 2, "", `unexpected argument "now"`},
		{"missing config file", []string{"--config", filepath.Join(t.TempDir(), "nope.toml")}, 1, "FAIL  config", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runDoctorCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
				t.Errorf("stdout %q / stderr %q lack %q / %q", out, errOut, tt.out, tt.err)
			}
		})
	}
}

// TestDoctorCommandProviders: one line per provider, the one that answers
// ok with its own key, the local Ollama that is not running a FAIL saying
// to start it; exit 1.
func TestDoctorCommandProviders(t *testing.T) {
	doctorEnv(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fake := &doctorFake{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	const orKey = "sk-or-v1-doctorcmd.0123456789"
	var mu sync.Mutex
	var auths []string
	or := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":[{"id":"deepseek/deepseek-r1:free","context_length":163840}]}`)
	}))
	defer or.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	t.Setenv("OPENROUTER_API_KEY", orKey)

	path := doctorConfig(t, srv, "deepseek-ai/DeepSeek-R1")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `
[[models]]
id = "openrouter:deepseek/deepseek-r1:free"
fallbacks = ["ollama:llama3.1:8b"]

[[providers]]
name = "openrouter"
base_url = "%s/api/v1"
api_key_env = "OPENROUTER_API_KEY"

[[providers]]
name = "ollama"
base_url = "%s/v1"
`, or.URL, down.URL)
	f.Close()

	code, out, _ := runDoctorCmd(t, "--config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	hasAll(t, out, "ok    model ids  all 2 configured models and fallbacks are listed upstream",
		"ok    provider   openrouter: GET "+or.URL+"/api/v1/models answered 200", `its key sk-or-… (api_key_env = "OPENROUTER_API_KEY") was not refused`,
		"it lists openrouter:deepseek/deepseek-r1:free",
		"FAIL  provider   ollama: nothing listens at "+down.URL+"/v1 (connection refused)", "`ollama serve`",
		"1 problem on your side")
	if strings.Contains(out, "doctorcmd.0123") || strings.Contains(out, "0123456789abcdef") {
		t.Error("the output shows a key")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auths) != 1 || auths[0] != "Bearer "+orKey {
		t.Errorf("OpenRouter received %q, want its own key once", auths)
	}
}
