package config

import (
	"errors"
	"strings"
	"testing"
)

const providersTOML = `
[[providers]]
name = "openrouter"
base_url = "https://openrouter.ai/api/v1/"
api_key_env = "OPENROUTER_API_KEY"
headers = { "HTTP-Referer" = "https://example.com", "X-Title" = "chutes-proxy" }
first_byte_timeout = "20s"

[[providers]]
name = "ollama"
base_url = "http://127.0.0.1:11434/v1"
stream_plain = false

[[models]]
id = "deepseek-ai/DeepSeek-R1"
aliases = ["auto"]
fallbacks = ["Qwen/Qwen2.5-72B-Instruct", "openrouter:deepseek/deepseek-r1:free", "ollama:llama3.1:8b"]
`

func TestProviders(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "p.toml", providersTOML)
	cfg, err := Load(Options{File: f, Getenv: envOf(map[string]string{"OPENROUTER_API_KEY": " sk-or-v1-abcdef0123456789 \n"})})
	if err != nil {
		t.Fatal(err)
	}
	or, ok := cfg.Target("openrouter")
	if !ok || or.BaseURL != "https://openrouter.ai/api/v1" || or.Key.Reveal() != "sk-or-v1-abcdef0123456789" ||
		or.Headers["X-Title"] != "chutes-proxy" || or.FirstByteTimeout.Seconds() != 20 || or.IdleTimeout != cfg.Upstream.IdleTimeout.D() || !or.StreamPlain {
		t.Fatalf("openrouter target %+v", or)
	}
	ol, _ := cfg.Target("ollama")
	if ol.Key != "" || ol.StreamPlain || ol.IsChutes() {
		t.Fatalf("ollama target %+v", ol)
	}
	if ch, _ := cfg.Target(""); !ch.IsChutes() || ch.BaseURL != cfg.Upstream.BaseURL {
		t.Fatalf("chutes target %+v", ch)
	}
	if _, ok := cfg.Target("nope"); ok {
		t.Fatal("an unknown provider has a target")
	}
	for _, tt := range []struct{ in, provider, model string }{
		{"openrouter:deepseek/deepseek-r1:free", "openrouter", "deepseek/deepseek-r1:free"},
		{"ollama:llama3.1:8b", "ollama", "llama3.1:8b"},
		{"chutes:deepseek-ai/DeepSeek-R1", Chutes, "deepseek-ai/DeepSeek-R1"},
		{"unsloth/gemma-3:free", Chutes, "unsloth/gemma-3:free"},
		{"nope:model", Chutes, "nope:model"},
	} {
		if p, m := cfg.Split(tt.in); p != tt.provider || m != tt.model {
			t.Errorf("Split(%q) = %q, %q; want %q, %q", tt.in, p, m, tt.provider, tt.model)
		}
	}
	if !strings.Contains(strings.Join(cfg.Notes, "\n"), "trimmed") {
		t.Errorf("notes %q: the trimmed key is not mentioned", cfg.Notes)
	}
	if s := string(cfg.TOML()); strings.Contains(s, "abcdef0123456789") {
		t.Errorf("check-config shows a provider's key:\n%s", s)
	}
}

func TestProviderProblems(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string // facts of one problem line each
	}{
		{"unknown prefix", `
[[providers]]
name = "openrouter"
base_url = "https://openrouter.ai/api/v1"
[[models]]
id = "a/b"
fallbacks = ["opnrouter:x/y"]
`, []string{"models[0].fallbacks", `"opnrouter"`, "chutes, openrouter", `did you mean "openrouter"`}},
		{"unknown prefix as an id", `
[[models]]
id = "local:llama"
`, []string{"models[0].id", `"local"`, "[[providers]]"}},
		{"duplicate name", `
[[providers]]
name = "local"
base_url = "http://127.0.0.1:8080/v1"
[[providers]]
name = "local"
base_url = "http://127.0.0.1:8081/v1"
`, []string{"providers[1].name", "also the name of providers[0]"}},
		{"reserved name", `
[[providers]]
name = "chutes"
base_url = "http://127.0.0.1:8080/v1"
`, []string{"providers[0].name", "[upstream]"}},
		{"bad name and url", `
[[providers]]
name = "Open Router"
base_url = "openrouter.ai"
`, []string{"providers[0].name", "providers[0].base_url"}},
		{"unknown key", `
[[providers]]
name = "x"
base_url = "http://127.0.0.1:1/v1"
apikey = "k"
`, []string{"providers", "apikey", `did you mean "api_key"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, t.TempDir(), "p.toml", tt.toml)
			_, err := Load(Options{File: f, Getenv: envOf(nil)})
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Load = %v, want Problems", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems lack %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), f+":") {
				t.Errorf("problems do not name the file:\n%v", err)
			}
		})
	}
}

func TestProviderKeyInClearNoted(t *testing.T) {
	f := writeFile(t, t.TempDir(), "p.toml", `
[[providers]]
name = "lan"
base_url = "http://192.0.2.7:8080/v1"
api_key = "secret-key-123456"
[[providers]]
name = "local"
base_url = "http://localhost:8080/v1"
api_key = "another-key-123456"
`)
	cfg, err := Load(Options{File: f, Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(cfg.Notes, "\n")
	if !strings.Contains(notes, `"lan"`) || !strings.Contains(notes, "in clear") || strings.Contains(notes, `"local"`) {
		t.Errorf("notes %q: want a warning for the LAN provider only", cfg.Notes)
	}
}
