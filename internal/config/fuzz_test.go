package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	chutesproxy "github.com/chutes-proxy/chutes-proxy"
)

// FuzzLoad feeds Load arbitrary files: it must never panic, and must return
// exactly one of a config or an error; content problems must be Problems
// that each name a file and say something; and a config it accepts must
// render (TOML) to a file it accepts again.
func FuzzLoad(f *testing.F) {
	f.Add(chutesproxy.DefaultConfig)
	broken, err := os.ReadFile(filepath.Join("testdata", "broken.toml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(broken)
	for _, s := range []string{
		"",
		"listen = ",
		"listen = \"a\"\nlisten = \"b\"",
		"[upstream]\n[upstream]",
		"upstream = 3\nmodels = [1, \"x\", {id = 2}]",
		"[[models]]\nid = \"a/a\"\nfallbacks = [\"a/a\"]\naliases = [\"a/a\", \"\"]",
		"[rate_limit]\nrequests_per_minute = inf\nburst = 9223372036854775807\n[failover]\nmax_attempts = 1e300",
		"[breaker]\ncooldown = 1979-05-27T07:32:00Z",
		"[\".\"]\n\"a.b\" = 1\n[upstream.\"x.y\"]",
		"models = [{id = \"a/a\", colour = 1}]\n[[models]]\nid = \"b/b\"",
		"[upstream]\napi_key = \"\\u200b 'cpk_x' \"\nresolver = \"[::1]:53\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "proxy.toml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(Options{File: path, Getenv: envOf(nil)})
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Load() = %v, %v; want a config or an error", cfg, err)
		}
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("Load() error %v (%T) is not Problems", err, err)
			}
			for _, p := range ps {
				if p.File != path || p.Msg == "" {
					t.Errorf("problem %#v lacks its file or message", p)
				}
			}
			return
		}
		out := cfg.TOML()
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(Options{File: path, Getenv: envOf(nil)}); err != nil {
			t.Fatalf("TOML() of an accepted config is rejected: %v\n%s", err, out)
		}
	})
}
