package config

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadEmbeddedDefaults(t *testing.T) {
	cfg, err := Load(Options{Dir: t.TempDir(), Getenv: envOf(nil)})
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if cfg.Source != "" || cfg.SourceName() != "(embedded proxy.toml)" {
		t.Errorf("Source = %q, SourceName() = %q; want the embedded defaults", cfg.Source, cfg.SourceName())
	}
	// The values documented in proxy.toml and CONTRACT.md.
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:8787"},
		{"proxy_key", cfg.ProxyKey.Reveal(), ""},
		{"max_body_mb", cfg.MaxBodyMB, 32},
		{"allowed_hosts", len(cfg.AllowedHosts), 0},
		{"compat.cors_origins", len(cfg.Compat.CORSOrigins), 0},
		{"compat.errors_as_messages", cfg.Compat.ErrorsAsMessages, false},
		{"upstream.base_url", cfg.Upstream.BaseURL, "https://llm.chutes.ai/v1"},
		{"upstream.api_key", cfg.Upstream.APIKey.Reveal(), ""},
		{"upstream.connect_timeout", cfg.Upstream.ConnectTimeout.D(), 10 * time.Second},
		{"upstream.first_byte_timeout", cfg.Upstream.FirstByteTimeout.D(), 60 * time.Second},
		{"upstream.idle_timeout", cfg.Upstream.IdleTimeout.D(), 60 * time.Second},
		{"upstream.request_timeout", cfg.Upstream.RequestTimeout.D(), 10 * time.Minute},
		{"upstream.resolver", cfg.Upstream.Resolver, ""},
		{"upstream.account_url", cfg.Upstream.AccountURL, "https://api.chutes.ai"},
		{"failover.max_attempts", cfg.Failover.MaxAttempts, 3},
		{"breaker.failures", cfg.Breaker.Failures, 3},
		{"breaker.cooldown", cfg.Breaker.Cooldown.D(), 30 * time.Second},
		{"rate_limit.requests_per_minute", cfg.RateLimit.RequestsPerMinute, 0.0},
		{"rate_limit.burst", cfg.RateLimit.Burst, 1},
		{"rate_limit.max_wait", cfg.RateLimit.MaxWait.D(), 2 * time.Second},
		{"quota.daily_requests", cfg.Quota.DailyRequests, 0},
		{"quota.state_file", cfg.Quota.StateFile, ""},
		{"health.probe_interval", cfg.Health.ProbeInterval.D(), 60 * time.Second},
		{"models", len(cfg.Models), 1},
		{"notes", len(cfg.Notes), 0},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
			}
		})
	}
	if len(cfg.Models) == 1 {
		m := cfg.Models[0]
		if m.ID != "deepseek-ai/DeepSeek-R1" || !slices.Equal(m.Aliases, []string{"r1", "auto"}) ||
			!slices.Equal(m.Fallbacks, []string{"Qwen/Qwen2.5-72B-Instruct", "chutesai/Mistral-Small-3.1-24B-Instruct-2503"}) ||
			m.RequestsPerMinute != nil || m.Burst != nil || m.Failures != nil || m.Cooldown != nil {
			t.Errorf("models[0] = %+v; want the documented DeepSeek-R1 table without overrides", m)
		}
	}
}

func TestLoadRepoProxyTOMLAsUserFile(t *testing.T) {
	path := filepath.Join("..", "..", "proxy.toml")
	cfg, err := Load(Options{File: path, Getenv: envOf(nil)})
	if err != nil {
		t.Fatalf("Load(%s) error = %v", path, err)
	}
	if cfg.Source != path {
		t.Errorf("Source = %q; want %q", cfg.Source, path)
	}
	def, err := Load(Options{Dir: t.TempDir(), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if string(stripHeader(cfg.TOML())) != string(stripHeader(def.TOML())) {
		t.Errorf("the repo's proxy.toml as a file differs from the embedded defaults:\n%s\nvs\n%s", cfg.TOML(), def.TOML())
	}
}

// stripHeader drops TOML()'s first line, which names the source.
func stripHeader(b []byte) []byte {
	_, rest, _ := strings.Cut(string(b), "\n")
	return []byte(rest)
}

func TestLoadLookupOrder(t *testing.T) {
	dir := t.TempDir()
	local := writeFile(t, dir, "proxy.toml", `listen = "127.0.0.1:1001"`)
	envFile := writeFile(t, dir, "env.toml", `listen = "127.0.0.1:1002"`)
	flagFile := writeFile(t, dir, "flag.toml", `listen = "127.0.0.1:1003"`)
	empty := t.TempDir()

	tests := []struct {
		name       string
		dir        string
		file       string
		envConfig  string
		wantSource string
		wantListen string
	}{
		{"flag file first", dir, flagFile, envFile, flagFile, "127.0.0.1:1003"},
		{"env file second", dir, "", envFile, envFile, "127.0.0.1:1002"},
		{"./proxy.toml third", dir, "", "", local, "127.0.0.1:1001"},
		{"embedded last", empty, "", "", "", "127.0.0.1:8787"},
		{"relative flag file is in Dir", dir, "flag.toml", "", flagFile, "127.0.0.1:1003"},
		{"relative env file is in Dir", dir, "", "env.toml", envFile, "127.0.0.1:1002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(Options{File: tt.file, Dir: tt.dir, Getenv: envOf(map[string]string{EnvConfig: tt.envConfig})})
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if cfg.Source != tt.wantSource || cfg.Listen != tt.wantListen {
				t.Errorf("Source, listen = %q, %q; want %q, %q", cfg.Source, cfg.Listen, tt.wantSource, tt.wantListen)
			}
		})
	}
}

func TestLoadMissingNamedFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "proxy.toml", "") // a fallback that must not be used
	missing := filepath.Join(dir, "nope.toml")
	tests := []struct {
		name string
		opts Options
		via  string
	}{
		{"flag", Options{File: missing, Dir: dir, Getenv: envOf(nil)}, "--config"},
		{"env", Options{Dir: dir, Getenv: envOf(map[string]string{EnvConfig: missing})}, "$CHUTES_PROXY_CONFIG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.opts)
			if cfg != nil || !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Load() = %v, %v; want an error wrapping fs.ErrNotExist", cfg, err)
			}
			var ps Problems
			if errors.As(err, &ps) {
				t.Errorf("a missing file is an I/O error, not Problems: %v", err)
			}
			if !strings.Contains(err.Error(), tt.via) || !strings.Contains(err.Error(), missing) {
				t.Errorf("error %q does not name %s and the path", err, tt.via)
			}
		})
	}
}

func TestLoadUserFileKeepsDefaultsButOwnsModels(t *testing.T) {
	tests := []struct {
		name       string
		file       string
		wantModels []string
	}{
		{"no models table means none", `listen = "127.0.0.1:9000"`, nil},
		{"own models replace the embedded ones", "listen = \"127.0.0.1:9000\"\n[[models]]\nid = \"org/x\"\n[[models]]\nid = \"org/y\"", []string{"org/x", "org/y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := Load(Options{File: writeFile(t, dir, "p.toml", tt.file), Getenv: envOf(nil)})
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			var ids []string
			for _, m := range cfg.Models {
				ids = append(ids, m.ID)
			}
			if !slices.Equal(ids, tt.wantModels) {
				t.Errorf("models = %v; want %v", ids, tt.wantModels)
			}
			if cfg.Listen != "127.0.0.1:9000" || cfg.Failover.MaxAttempts != 3 || cfg.Upstream.FirstByteTimeout.D() != time.Minute {
				t.Errorf("listen %q, max_attempts %d, first_byte_timeout %v: want the file's listen and the other defaults",
					cfg.Listen, cfg.Failover.MaxAttempts, cfg.Upstream.FirstByteTimeout.D())
			}
		})
	}
}

func TestLoadOverrides(t *testing.T) {
	const file = `
listen = "127.0.0.1:1001"
[upstream]
base_url = "https://file.example/v1"
api_key = "cpk_fromfile_0000000000"
`
	tests := []struct {
		name     string
		env      map[string]string
		listen   string
		wantAddr string
		wantURL  string
		wantKey  string
	}{
		{"file alone", nil, "", "127.0.0.1:1001", "https://file.example/v1", "cpk_fromfile_0000000000"},
		{"env overrides file", map[string]string{EnvListen: "127.0.0.1:1002", EnvUpstream: "https://env.example/v1", EnvAPIKey: "cpk_fromenv_00000000"},
			"", "127.0.0.1:1002", "https://env.example/v1", "cpk_fromenv_00000000"},
		{"flag overrides env", map[string]string{EnvListen: "127.0.0.1:1002"}, "127.0.0.1:1003", "127.0.0.1:1003", "https://file.example/v1", "cpk_fromfile_0000000000"},
		{"empty env does not override", map[string]string{EnvListen: "", EnvUpstream: "", EnvAPIKey: ""}, "", "127.0.0.1:1001", "https://file.example/v1", "cpk_fromfile_0000000000"},
		{"trailing slash dropped", map[string]string{EnvUpstream: "https://env.example/v1/"}, "", "127.0.0.1:1001", "https://env.example/v1", "cpk_fromfile_0000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := Load(Options{File: writeFile(t, dir, "p.toml", file), Listen: tt.listen, Getenv: envOf(tt.env)})
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if cfg.Listen != tt.wantAddr || cfg.Upstream.BaseURL != tt.wantURL || cfg.Upstream.APIKey.Reveal() != tt.wantKey {
				t.Errorf("listen, base_url, api_key = %q, %q, %q; want %q, %q, %q", cfg.Listen, cfg.Upstream.BaseURL,
					cfg.Upstream.APIKey.Reveal(), tt.wantAddr, tt.wantURL, tt.wantKey)
			}
		})
	}
}

func TestTOMLRedactsKeys(t *testing.T) {
	const apiKey = "cpk_0123456789abcdef.SECRET.fedcba9876543210"
	const proxyKey = "proxy-key-SECRET-42"
	dir := t.TempDir()
	file := writeFile(t, dir, "p.toml", "listen = \"0.0.0.0:8787\"\nproxy_key = \""+proxyKey+"\"\n[[models]]\nid = \"org/x\"\ncooldown = \"5s\"\n")
	cfg, err := Load(Options{File: file, Getenv: envOf(map[string]string{EnvAPIKey: apiKey})})
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	out := string(cfg.TOML())
	for _, secret := range []string{apiKey, proxyKey, "SECRET"} {
		if strings.Contains(out, secret) {
			t.Errorf("TOML() contains %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"cpk_01…", "proxy-…", `cooldown = '5s'`, "listen = '0.0.0.0:8787'", file} {
		if !strings.Contains(out, want) {
			t.Errorf("TOML() lacks %q:\n%s", want, out)
		}
	}

	// The output is itself a valid config, with the redacted keys as keys.
	if _, err := Load(Options{File: writeFile(t, dir, "again.toml", out), Getenv: envOf(nil)}); err != nil {
		t.Fatalf("TOML() output does not load: %v\n%s", err, out)
	}
}

func TestLoadTrimsKeys(t *testing.T) {
	const key = "cpk_abcdefghijklmnopqrstuvwxyz"
	tests := []struct {
		name      string
		file      string
		env       map[string]string
		wantKey   string
		wantProxy string
		wantNote  string // a part of the one note expected; "" means no note
	}{
		{"env key with new line", "", map[string]string{EnvAPIKey: "  " + key + "\r\n"}, key, "",
			"upstream.api_key (from env CHUTES_API_KEY) had white space around it; trimmed: cpk_ab…"},
		{"file key in extra quotes", "[upstream]\napi_key = \"'" + key + "' \"", nil, key, "",
			") had white space or quotes around it; trimmed: cpk_ab…"},
		{"zero-width space", "", map[string]string{EnvAPIKey: "\u200b" + key}, key, "", "had white space around it"},
		{"proxy key", "proxy_key = \" hunter2hunter2 \"", nil, "", "hunter2hunter2", "proxy_key (from "},
		{"clean key", "", map[string]string{EnvAPIKey: key}, key, "", ""},
		{"not a Chutes key", "", map[string]string{EnvAPIKey: "sk-abcdefghijklmnop"}, "sk-abcdefghijklmnop", "", "does not start with cpk_"},
		{"blank env key", "", map[string]string{EnvAPIKey: "  "}, "", "", "only white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := Load(Options{File: writeFile(t, dir, "p.toml", tt.file), Getenv: envOf(tt.env)})
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if cfg.Upstream.APIKey.Reveal() != tt.wantKey || cfg.ProxyKey.Reveal() != tt.wantProxy {
				t.Errorf("api_key, proxy_key = %q, %q; want %q, %q", cfg.Upstream.APIKey.Reveal(), cfg.ProxyKey.Reveal(), tt.wantKey, tt.wantProxy)
			}
			if tt.wantNote == "" {
				if len(cfg.Notes) > 0 {
					t.Errorf("Notes = %q; want none", cfg.Notes)
				}
				return
			}
			if len(cfg.Notes) != 1 || !strings.Contains(cfg.Notes[0], tt.wantNote) {
				t.Errorf("Notes = %q; want one containing %q", cfg.Notes, tt.wantNote)
			}
			for _, n := range cfg.Notes {
				for _, secret := range []string{key, "hunter2hunter2", "sk-abcdefghijklmnop"} {
					if strings.Contains(n, secret) {
						t.Errorf("note %q reveals the key", n)
					}
				}
			}
		})
	}
}

func TestLoadEmptyAndBOMFiles(t *testing.T) {
	tests := []struct{ name, file string }{
		{"empty", ""},
		{"comments only", "# nothing to see\n"},
		{"byte-order mark", "\ufefflisten = \"127.0.0.1:8787\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Load(Options{File: writeFile(t, dir, "p.toml", tt.file), Getenv: envOf(nil)}); err != nil {
				t.Errorf("Load() error = %v", err)
			}
		})
	}
}
