package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The init command in process, against the simulator (the model list
// under /v1) and a fake account API at the root of the same server, as
// Chutes' two hosts answer.

// initKey is the key the tests type or set; it must never appear whole in
// what init prints.
const initKey = "cpk_inittest.0123456789abcdef"

// initScenario lists models of every size init ranks: two 671B (ids
// without a size), 235B, 72B, 24B, one with too small a context window, and
// one that is not listed at all.
func initScenario() simulator.Scenario {
	sc := simulator.DefaultScenario()
	sc.Models = append(sc.Models,
		simulator.ModelScenario{ID: "Qwen/Qwen3-235B-A22B", Behavior: simulator.Behavior{Kind: simulator.KindHealthy, ContextLength: 40960}},
		simulator.ModelScenario{ID: "unsloth/gemma-3-4b-it", Behavior: simulator.Behavior{Kind: simulator.KindHealthy, ContextLength: 4096}},
		simulator.ModelScenario{ID: "ghost/Unlisted-70B", Behavior: simulator.Behavior{Kind: simulator.KindNotFound}},
	)
	return sc
}

// initChutes is Chutes on loopback: the simulator and the account API.
type initChutes struct {
	sim *simulator.Simulator
	srv *httptest.Server

	mu       sync.Mutex
	reject   bool     // the account API answers 401
	accounts []string // Authorization headers the account API saw
}

func newInitChutes(t *testing.T, reject bool) *initChutes {
	t.Helper()
	c := &initChutes{sim: simulator.New(initScenario()), reject: reject}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			c.sim.ServeHTTP(w, r)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/users/me/quota_usage/me", "/users/me":
			c.accounts = append(c.accounts, r.Header.Get("Authorization"))
			switch {
			case c.reject:
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"detail":"Invalid token."}`)
			case r.URL.Path == "/users/me":
				_, _ = io.WriteString(w, `{"username":"someone","balance":10.5}`)
			default:
				_, _ = io.WriteString(w, `{"quota":300,"used":212,"chute_id":"*"}`)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() {
		c.srv.Close()
		c.sim.Close()
	})
	return c
}

// args are the flags that point init at c.
func (c *initChutes) args(path string) []string {
	return []string{"--config", path, "--base-url", c.srv.URL + "/v1", "--account-url", c.srv.URL}
}

// listed is what the simulator lists.
func (c *initChutes) listed(t *testing.T) []string {
	t.Helper()
	resp, err := http.Get(c.srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	entries, err := catalog.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	return ids
}

// runInitCmd runs init with input as what the person types and env as the
// environment; the output is logged so that -v shows it.
func runInitCmd(t *testing.T, input string, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	e := initEnv{
		in: strings.NewReader(input), termFD: -1,
		getenv: func(k string) string { return env[k] },
		now:    func() time.Time { return time.Date(2026, 5, 1, 18, 48, 0, 0, time.UTC) },
	}
	code = initMain(ctx, args, e, &out, &errOut)
	t.Logf("chutes-proxy init %s → exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	if all := out.String() + errOut.String(); strings.Contains(all, initKey) {
		t.Errorf("init printed the whole key")
	}
	return code, out.String(), errOut.String()
}

// loadInit loads what init wrote, with an empty environment.
func loadInit(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{File: path, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatalf("config.Load(%s): %v", path, err)
	}
	return cfg
}

func TestInitYes(t *testing.T) {
	doctorEnv(t) // check-config below reads the real environment
	c := newInitChutes(t, false)
	path := filepath.Join(t.TempDir(), "proxy.toml")
	code, out, _ := runInitCmd(t, "", map[string]string{config.EnvAPIKey: initKey}, append(c.args(path), "--yes")...)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	hasAll(t, out, "Using the key in CHUTES_API_KEY (cpk_in…)", "accepted: 212 of 300 requests used today", "balance $10.50",
		"Chutes lists 6 models right now", "671B  160k context", "235B  40k context", "Wrote "+path, `ask for "auto"`,
		"set CHUTES_API_KEY wherever chutes-proxy runs")
	if want := []string{"Bearer " + initKey, "Bearer " + initKey}; !slices.Equal(c.accounts, want) {
		t.Errorf("the account API saw %q, want %q", c.accounts, want)
	}

	cfg := loadInit(t, path)
	if len(cfg.Models) != 1 {
		t.Fatalf("%d [[models]] tables, want 1", len(cfg.Models))
	}
	m := cfg.Models[0]
	chain := append([]string{m.ID}, m.Fallbacks...)
	// One of each size, largest first: the second 671B model and the 4k
	// one are left out.
	want := []string{"deepseek-ai/DeepSeek-R1", "Qwen/Qwen3-235B-A22B", "Qwen/Qwen2.5-72B-Instruct", "chutesai/Mistral-Small-3.1-24B-Instruct-2503"}
	if !slices.Equal(chain, want) {
		t.Errorf("chain %q, want %q", chain, want)
	}
	listed := c.listed(t)
	for _, id := range chain {
		if !slices.Contains(listed, id) {
			t.Errorf("the chain names %q, which the simulator does not list (%q)", id, listed)
		}
	}
	if !slices.Equal(m.Aliases, []string{"auto"}) {
		t.Errorf("aliases %q, want [auto]", m.Aliases)
	}
	if cfg.Upstream.BaseURL != c.srv.URL+"/v1" || cfg.Upstream.AccountURL != c.srv.URL {
		t.Errorf("upstream %q, account %q; want the flags' URLs", cfg.Upstream.BaseURL, cfg.Upstream.AccountURL)
	}
	if cfg.Upstream.APIKey != "" {
		t.Errorf("the key from the environment was written (%s); --yes keeps it in CHUTES_API_KEY", cfg.Upstream.APIKey)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Commented like the embedded proxy.toml, with sizes and windows.
	hasAll(t, string(data), `written by "chutes-proxy init" on 2026-05-01`, "# where your apps connect",
		`id = "deepseek-ai/DeepSeek-R1"  # 671B, 160k context`, `"Qwen/Qwen2.5-72B-Instruct",`, "# 72B, 32k context",
		"# names a client may send instead of the id", "# One [[models]] table per model")

	var ccOut, ccErr strings.Builder
	if code := runCheckConfig(context.Background(), []string{"--config", path}, &ccOut, &ccErr); code != 0 {
		t.Errorf("check-config exit %d:\n%s%s", code, ccOut.String(), ccErr.String())
	}
}

func TestInitRejectedKey(t *testing.T) {
	rejected := []string{"Chutes rejected the key cpk_in…", "answered 401: Invalid token.", "Chutes keys start with cpk_", "create one on the Chutes dashboard"}
	tests := []struct {
		name  string
		input string
		env   map[string]string
		yes   bool
		calls int // account API calls: two per check
		has   []string
	}{
		{name: "from the environment, --yes", env: map[string]string{config.EnvAPIKey: initKey}, yes: true, calls: 2, has: rejected},
		{name: "from the environment, asked", env: map[string]string{config.EnvAPIKey: " " + initKey + "\n"}, calls: 2, has: rejected},
		{name: "typed, then nothing", input: initKey + "\n\n", calls: 2, has: rejected},
		{name: "typed three times", input: strings.Repeat(initKey+"\n", 3), calls: 6, has: rejected},
		{name: "white space inside, never sent", input: "cpk_abc def\n\n", has: []string{"has white space, quotes or control characters inside it"}},
		{name: "white space inside, from the environment", env: map[string]string{config.EnvAPIKey: "cpk_abc\tdef"}, yes: true,
			has: []string{"(from CHUTES_API_KEY) has white space"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newInitChutes(t, true)
			path := filepath.Join(t.TempDir(), "proxy.toml")
			args := c.args(path)
			if tt.yes {
				args = append(args, "--yes")
			}
			code, out, errOut := runInitCmd(t, tt.input, tt.env, args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			hasAll(t, out, tt.has...)
			hasAll(t, errOut, "nothing written")
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s was written (stat: %v)", path, err)
			}
			if len(c.accounts) != tt.calls {
				t.Errorf("%d account API calls, want %d", len(c.accounts), tt.calls)
			}
		})
	}
}

func TestInitExistingFile(t *testing.T) {
	const old = "# mine\nlisten = \"127.0.0.1:9999\"\n"
	tests := []struct {
		name    string
		input   string
		yes     bool
		code    int
		replace bool
		has     []string
	}{
		{name: "--yes never overwrites", yes: true, code: 1, has: []string{"exists and --yes never overwrites a file"}},
		{name: "asked, no", input: "n\n", code: 1, has: []string{"left as it is", "nothing written"}},
		{name: "asked, nothing typed: no", input: "\n", code: 1, has: []string{"left as it is"}},
		{name: "asked, yes", input: "y\n" + initKey + "\n\n\n\n\n", code: 0, replace: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newInitChutes(t, false)
			path := filepath.Join(t.TempDir(), "proxy.toml")
			if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
				t.Fatal(err)
			}
			args := c.args(path)
			if tt.yes {
				args = append(args, "--yes")
			}
			code, out, errOut := runInitCmd(t, tt.input, nil, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			hasAll(t, out+errOut, tt.has...)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if replaced := string(data) != old; replaced != tt.replace {
				t.Errorf("replaced = %v, want %v", replaced, tt.replace)
			}
			if !tt.replace && len(c.accounts) > 0 {
				t.Errorf("init asked for the key although it was not going to write")
			}
			if tt.replace {
				cfg := loadInit(t, path)
				if cfg.Upstream.APIKey.Reveal() != initKey {
					t.Errorf("api_key %s, want the typed key (written by default)", cfg.Upstream.APIKey)
				}
				if runtime.GOOS != "windows" {
					if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
						t.Errorf("a file with the key has mode %v (%v), want 0600", fi.Mode().Perm(), err)
					}
				}
			}
			matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".proxy.toml.init-*"))
			if len(matches) > 0 {
				t.Errorf("temporary files left: %q", matches)
			}
		})
	}
}

func TestInitOffline(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close()
	path := filepath.Join(t.TempDir(), "proxy.toml")
	code, out, _ := runInitCmd(t, initKey+"\ny\n", nil, "--config", path, "--base-url", dead+"/v1", "--account-url", dead)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	hasAll(t, out, "not checked: could not ask Chutes' account API", "Could not list the models at "+dead+"/v1", "offline, or Chutes is down", "Writing the built-in chain")
	cfg := loadInit(t, path)
	if cfg.Upstream.APIKey.Reveal() != initKey {
		t.Errorf("api_key %s, want the typed key", cfg.Upstream.APIKey)
	}
	if len(cfg.Models) == 0 || cfg.Models[0].ID != "deepseek-ai/DeepSeek-R1" {
		t.Errorf("models %+v, want the embedded chain", cfg.Models)
	}
}

func TestInitInteractive(t *testing.T) {
	c := newInitChutes(t, false)
	// A second OpenAI-compatible server, listing its own models.
	local := simulator.New(simulator.Scenario{AcceptAnyKey: true, Models: []simulator.ModelScenario{
		{ID: "llama3.1:8b", Behavior: simulator.Behavior{Kind: simulator.KindHealthy}},
	}})
	lsrv := httptest.NewServer(local)
	t.Cleanup(func() {
		lsrv.Close()
		local.Close()
	})
	path := filepath.Join(t.TempDir(), "proxy.toml")
	input := strings.Join([]string{
		initKey,                          // the key
		"3, 1, deepseek-ai/DeepSeek-R1x", // the chain, with a typo
		"3 1 6",                          // again: 6 is the 4k model, allowed when picked
		"fast, auto r1/x",                // an alias with '/'
		"fast auto",                      // aliases
		"other",                          // second provider
		"local",                          // its name
		"ftp://x",                        // a bad URL
		lsrv.URL + "/v1",                 // its base URL
		"-",                              // no key
		"",                               // its model: the first it lists
		"n",                              // the key stays out of the file
	}, "\n") + "\n"
	code, out, _ := runInitCmd(t, input, nil, c.args(path)...)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	hasAll(t, out,
		"*   1. deepseek-ai/DeepSeek-R1", "    2. deepseek-ai/DeepSeek-V3", // the list, the proposal starred
		"[1 3 4 5]:", `Chutes does not list "deepseek-ai/DeepSeek-R1x" right now; did you mean deepseek-ai/DeepSeek-R1`,
		`"r1/x": an alias is a short name`, "is not an http:// or https:// URL", "[llama3.1:8b]:",
		"set CHUTES_API_KEY to the key you typed (cpk_in…)", "chain: Qwen/Qwen3-235B-A22B → deepseek-ai/DeepSeek-R1 → unsloth/gemma-3-4b-it → local:llama3.1:8b")
	cfg := loadInit(t, path)
	m := cfg.Models[0]
	if m.ID != "Qwen/Qwen3-235B-A22B" || !slices.Equal(m.Fallbacks, []string{"deepseek-ai/DeepSeek-R1", "unsloth/gemma-3-4b-it", "local:llama3.1:8b"}) {
		t.Errorf("chain %s → %q", m.ID, m.Fallbacks)
	}
	if !slices.Equal(m.Aliases, []string{"fast", "auto"}) {
		t.Errorf("aliases %q", m.Aliases)
	}
	if len(cfg.Providers) != 1 || cfg.Providers[0].Name != "local" || cfg.Providers[0].BaseURL != lsrv.URL+"/v1" || cfg.Providers[0].APIKeyEnv != "" {
		t.Errorf("providers %+v", cfg.Providers)
	}
	if cfg.Upstream.APIKey != "" {
		t.Errorf("api_key %s written, though the answer was n", cfg.Upstream.APIKey)
	}
}

// TestInitNoDirectory: a folder that does not exist yet (the user's config
// folder on a new machine) is made; a "folder" that is a file is refused
// and nothing is written.
func TestInitNoDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "chutes-proxy", "proxy.toml")
	code, _, errOut := runInitCmd(t, "", nil, "--config", path, "--yes", "--base-url", "http://127.0.0.1:1/v1")
	if code != 0 {
		t.Errorf("exit %d, want 0: %s", code, errOut)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s not written: %v", path, err)
	}
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runInitCmd(t, "", nil, "--config", filepath.Join(file, "proxy.toml"), "--yes", "--base-url", "http://127.0.0.1:1/v1")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	hasAll(t, errOut, "is not a folder", "nothing written")
}

func TestInitStdinEnds(t *testing.T) {
	c := newInitChutes(t, false)
	path := filepath.Join(t.TempDir(), "proxy.toml")
	code, _, errOut := runInitCmd(t, initKey+"\n", nil, c.args(path)...)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	hasAll(t, errOut, "standard input ended", "--yes", "nothing written")
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s was written", path)
	}
}

func TestInitModelSize(t *testing.T) {
	tests := []struct {
		id   string
		want float64
	}{
		{"Qwen/Qwen2.5-72B-Instruct", 72},
		{"Qwen/Qwen3-235B-A22B", 235}, // not the 22B active
		{"chutesai/Mistral-Small-3.1-24B-Instruct-2503", 24},
		{"unsloth/gemma-3-27b-it", 27},
		{"Qwen/Qwen2.5-0.5B-Instruct", 0.5},
		{"mistralai/Mixtral-8x7B-Instruct-v0.1", 56},
		{"HuggingFaceTB/SmolLM2-135M-Instruct", 0.135},
		{"openai/gpt-oss-120b", 120},
		{"deepseek-ai/DeepSeek-R1", 671},
		{"deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 70},
		{"moonshotai/Kimi-K2-Instruct", 1000},
		{"zai-org/GLM-4.5-Air", 106},
		{"zai-org/GLM-4.5-FP8", 355},
		{"NousResearch/Hermes-4-405B-FP8", 405},
		{"some/model", 0},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := modelSize(tt.id); got != tt.want {
				t.Errorf("modelSize(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestInitProposeChain(t *testing.T) {
	e := func(id string, ctx int) catalog.Entry { return catalog.Entry{ID: id, ContextLength: ctx} }
	tests := []struct {
		name    string
		entries []catalog.Entry
		want    []string
	}{
		{"one of each size, largest first",
			[]catalog.Entry{e("a/Small-7B", 32768), e("deepseek-ai/DeepSeek-V3", 163840), e("deepseek-ai/DeepSeek-R1", 163840),
				e("b/Big-235B", 40960), e("c/Mid-72B", 32768), e("d/Mid-70B", 131072)},
			[]string{"deepseek-ai/DeepSeek-R1", "b/Big-235B", "c/Mid-72B", "d/Mid-70B"}},
		{"fills with the next largest when sizes run out",
			[]catalog.Entry{e("x/A-32B", 32768), e("x/B-32B", 65536), e("x/C-32B", 8192)},
			[]string{"x/B-32B", "x/A-32B", "x/C-32B"}},
		{"no embeddings, no tiny windows; unknown sizes by window",
			[]catalog.Entry{e("BAAI/bge-large-embed-1.5B", 8192), e("x/Tiny-70B", 4096), e("y/unknown", 32768), e("z/other", 131072)},
			[]string{"z/other", "y/unknown"}},
		{"only tiny windows: better those than nothing",
			[]catalog.Entry{e("x/Tiny-70B", 4096)},
			[]string{"x/Tiny-70B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range proposeChain(rankModels(tt.entries)) {
				got = append(got, c.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("proposeChain = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInitFormat(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{formatContext(131072), "128k context"}, {formatContext(163840), "160k context"}, {formatContext(1 << 20), "1M context"},
		{formatContext(0), "context unknown"}, {formatContext(500), "500 context"},
		{formatSize(671), "671B"}, {formatSize(0.5), "0.5B"}, {formatSize(1000), "1T"}, {formatSize(0), ""},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestInitRender keeps every line renderInit sets present in the embedded
// proxy.toml, and the result loadable, whatever it holds.
func TestInitRender(t *testing.T) {
	chain := rankModels([]catalog.Entry{{ID: "deepseek-ai/DeepSeek-R1", ContextLength: 163840}, {ID: "Qwen/Qwen2.5-72B-Instruct", ContextLength: 32768}})
	openrouter := providerPresets[0].p
	openrouter.Model = "deepseek/deepseek-r1:free"
	tests := []struct {
		name string
		f    initFile
		want func(t *testing.T, cfg *config.Config)
	}{
		{"everything", initFile{BaseURL: "https://example.test/v1", AccountURL: "https://account.example.test",
			Key: `cpk_a\b`, Chain: chain, Aliases: []string{"auto", "r1"}, Provider: &openrouter},
			func(t *testing.T, cfg *config.Config) {
				if cfg.Upstream.APIKey.Reveal() != `cpk_a\b` || cfg.Upstream.BaseURL != "https://example.test/v1" || cfg.Upstream.AccountURL != "https://account.example.test" {
					t.Errorf("upstream %+v", cfg.Upstream)
				}
				m := cfg.Models[0]
				if m.ID != "deepseek-ai/DeepSeek-R1" || !slices.Equal(m.Fallbacks, []string{"Qwen/Qwen2.5-72B-Instruct", "openrouter:deepseek/deepseek-r1:free"}) ||
					!slices.Equal(m.Aliases, []string{"auto", "r1"}) {
					t.Errorf("model %+v", m)
				}
				p := cfg.Providers[0]
				if p.Name != "openrouter" || p.APIKeyEnv != "OPENROUTER_API_KEY" || p.Headers["X-Title"] != "chutes-proxy" {
					t.Errorf("provider %+v", p)
				}
			}},
		{"one model, no aliases, account off", initFile{BaseURL: "http://127.0.0.1:8788/v1", Chain: chain[:1]},
			func(t *testing.T, cfg *config.Config) {
				if m := cfg.Models[0]; len(m.Fallbacks) != 0 || len(m.Aliases) != 0 || cfg.Upstream.AccountURL != "" {
					t.Errorf("model %+v, account %q", m, cfg.Upstream.AccountURL)
				}
			}},
		{"offline: the embedded chain", initFile{BaseURL: "https://llm.chutes.ai/v1", AccountURL: "https://api.chutes.ai", Key: initKey},
			func(t *testing.T, cfg *config.Config) {
				if len(cfg.Models) != 1 || cfg.Models[0].ID != "deepseek-ai/DeepSeek-R1" || len(cfg.Models[0].Fallbacks) == 0 {
					t.Errorf("models %+v", cfg.Models)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Written = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
			data, err := renderInit(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "proxy.toml")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(config.Options{File: path, Getenv: func(string) string { return "" }})
			if err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			tt.want(t, cfg)
		})
	}
}
