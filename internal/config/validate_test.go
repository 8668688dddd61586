package config

import (
	"errors"
	"strings"
	"testing"
)

// twoModels is a valid pair of [[models]] tables that cases build on.
const twoModels = `
[[models]]
id = "org/a"
aliases = ["a", "qwen"]
fallbacks = ["org/b", "org/elsewhere"]

[[models]]
id = "org/b"
aliases = ["b"]
`

func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		env    map[string]string
		listen string
		want   string // the problem's exact "FILE:KEY: " prefix; FILE is replaced by the path
		msg    string // a part of the message, "" to skip
	}{
		// unknown keys
		{name: "unknown top-level key", file: `lisen = "127.0.0.1:1"`, want: "FILE:lisen: ", msg: `did you mean "listen"?`},
		{name: "unknown key in a table", file: "[upstream]\nbase_uri = \"https://x\"", want: "FILE:upstream.base_uri: ", msg: `did you mean "base_url"?`},
		{name: "top-level key below a table header", file: "[upstream]\nlisten = \"127.0.0.1:1\"", want: "FILE:upstream.listen: ", msg: "move it above the first [table]"},
		{name: "key in the wrong table", file: "[breaker]\nburst = 2", want: "FILE:breaker.burst: ", msg: "rate_limit.burst"},
		{name: "unknown key in a models table", file: twoModels + `fallback = ["org/a"]`, want: "FILE:models[1].fallback: ", msg: `did you mean "fallbacks"?`},
		{name: "unknown table", file: "[limits]\nx = 1", want: "FILE:limits: ", msg: "unknown table"},
		{name: "keys are case sensitive", file: `Listen = "127.0.0.1:1"`, want: "FILE:Listen: ", msg: `did you mean "listen"?`},
		{name: "unknown key's line", file: "listen = \"127.0.0.1:1\"\n\n[upstream]\nbase_uri = 1", want: "FILE:upstream.base_uri: ", msg: "unknown key on line 4;"},
		{name: "same unknown key in two models tables, first", file: "[[models]]\nid = \"org/a\"\ncolour = 1\n[[models]]\nid = \"org/b\"\ncolour = 2", want: "FILE:models[0].colour: ", msg: "on line 3;"},
		{name: "same unknown key in two models tables, second", file: "[[models]]\nid = \"org/a\"\ncolour = 1\n[[models]]\nid = \"org/b\"\ncolour = 2", want: "FILE:models[1].colour: ", msg: "on line 6;"},
		{name: "unknown key in an inline models table", file: `models = [{id = "org/a"}, {id = "org/b", colour = 1}]`, want: "FILE:models[1].colour: ", msg: "on line 1;"},
		{name: "unknown key after a wrong type", file: "max_body_mb = \"x\"\nzzz = 1", want: "FILE:zzz: ", msg: "unknown key on line 2;"},
		{name: "unknown key after a table written as a value", file: "upstream = \"x\"\nzzz = 1", want: "FILE:zzz: ", msg: "unknown key;"},

		// syntax and wrong types
		{name: "syntax error", file: "listen = \"a\"\nmax_body_mb = = 3\n", want: "FILE:2:15: "},
		{name: "key defined twice", file: "listen = \"127.0.0.1:1\"\nmax_body_mb = 1\nlisten = \"127.0.0.1:2\"\n", want: "FILE:3: ", msg: "listen"},
		{name: "string for a number", file: `max_body_mb = "32"`, want: "FILE:max_body_mb: ", msg: `want a whole number, got "32"`},
		{name: "string for a number in models", file: twoModels + `burst = "2"`, want: "FILE:models[1].burst: ", msg: `want a whole number, got "2"`},
		{name: "fraction for a whole number", file: "[failover]\nmax_attempts = 2.5", want: "FILE:failover.max_attempts: ", msg: "want a whole number, got 2.5"},
		{name: "number for a string", file: "[upstream]\nbase_url = 3", want: "FILE:upstream.base_url: ", msg: "want a quoted string, got 3"},
		{name: "number in a list of strings", file: "allowed_hosts = [\"a\", 2]", want: "FILE:allowed_hosts[1]: ", msg: "want a quoted string, got 2"},
		{name: "string for a list", file: twoModels + `fallbacks = "org/x"`, want: "FILE:models[1].fallbacks: ", msg: "want a list of strings"},
		{name: "string for [[models]]", file: `models = "org/x"`, want: "FILE:models: ", msg: `want an array of tables, got "org/x"`},
		{name: "number for a model table", file: "models = [1]", want: "FILE:models[0]: ", msg: "want a table, got 1"},
		{name: "string for a table", file: `upstream = "https://x"`, want: "FILE:upstream: ", msg: `want a table, got "https://x"`},
		{name: "string for a bool", file: "[compat]\nerrors_as_messages = \"yes\"", want: "FILE:compat.errors_as_messages: ", msg: `want true or false, got "yes"`},
		{name: "bad duration", file: "[upstream]\nconnect_timeout = \"10x\"", want: "FILE:upstream.connect_timeout: ", msg: `"10x" is not a duration`},
		{name: "number for a duration", file: "[breaker]\ncooldown = 30", want: "FILE:breaker.cooldown: ", msg: `want a quoted duration such as "30s", got 30`},
		{name: "bad duration in models", file: twoModels + `cooldown = "soon"`, want: "FILE:models[1].cooldown: "},

		// negative numbers and ranges
		{name: "negative integer", file: "[quota]\ndaily_requests = -1", want: "FILE:quota.daily_requests: ", msg: "must not be negative"},
		{name: "negative rate", file: "[rate_limit]\nrequests_per_minute = -5", want: "FILE:rate_limit.requests_per_minute: ", msg: "must not be negative"},
		{name: "rate not a number", file: "[rate_limit]\nrequests_per_minute = nan", want: "FILE:rate_limit.requests_per_minute: ", msg: "finite"},
		{name: "negative burst", file: "[rate_limit]\nburst = -1", want: "FILE:rate_limit.burst: ", msg: "must not be negative"},
		{name: "negative duration", file: "[rate_limit]\nmax_wait = \"-1s\"", want: "FILE:rate_limit.max_wait: ", msg: "must not be negative"},
		{name: "zero time-out", file: "[upstream]\nfirst_byte_timeout = \"0s\"", want: "FILE:upstream.first_byte_timeout: ", msg: "must be more than 0"},
		{name: "zero request time-out", file: "[upstream]\nrequest_timeout = \"0s\"", want: "FILE:upstream.request_timeout: ", msg: "must be more than 0"},
		{name: "zero cooldown", file: "[breaker]\ncooldown = \"0s\"", want: "FILE:breaker.cooldown: ", msg: "must be more than 0"},
		{name: "negative timeout", file: "[upstream]\nidle_timeout = \"-1m\"", want: "FILE:upstream.idle_timeout: "},
		{name: "negative probe interval", file: "[health]\nprobe_interval = \"-1s\"", want: "FILE:health.probe_interval: "},
		{name: "negative model rate", file: twoModels + "requests_per_minute = -1", want: "FILE:models[1].requests_per_minute: "},
		{name: "negative model cooldown", file: twoModels + `cooldown = "-1s"`, want: "FILE:models[1].cooldown: "},
		{name: "burst 0 with a rate", file: "[rate_limit]\nrequests_per_minute = 60\nburst = 0", want: "FILE:rate_limit.burst: ", msg: "admits nothing"},
		{name: "model burst 0 with a rate", file: twoModels + "requests_per_minute = 10\nburst = 0", want: "FILE:models[1].burst: ", msg: "admits nothing"},
		{name: "model rate over default burst 0", file: "[rate_limit]\nburst = 0\n" + twoModels + "requests_per_minute = 10", want: "FILE:models[1].burst: ", msg: "from rate_limit.burst"},
		{name: "max_attempts 0", file: "[failover]\nmax_attempts = 0", want: "FILE:failover.max_attempts: ", msg: "at least 1"},
		{name: "failures 0", file: "[breaker]\nfailures = 0", want: "FILE:breaker.failures: ", msg: "at least 1"},
		{name: "model failures 0", file: twoModels + "failures = 0", want: "FILE:models[1].failures: ", msg: "at least 1"},
		{name: "max_body_mb 0", file: "max_body_mb = 0", want: "FILE:max_body_mb: ", msg: "at least 1"},

		// models
		{name: "empty model id", file: "[[models]]\naliases = [\"x\"]", want: "FILE:models[0].id: ", msg: "missing or empty"},
		{name: "duplicate id", file: twoModels + "\n[[models]]\nid = \"org/a\"", want: "FILE:models[2].id: ", msg: "also the id of models[0]"},
		{name: "duplicate alias", file: twoModels + "\n[[models]]\nid = \"org/c\"\naliases = [\"b\"]", want: "FILE:models[2].aliases: ", msg: `"b" is already an alias of models[1]`},
		{name: "alias is another model's id", file: twoModels + "\n[[models]]\nid = \"org/c\"\naliases = [\"org/a\"]", want: "FILE:models[2].aliases: ", msg: "is the id of models[0]"},
		{name: "unknown fallback alias", file: twoModels + `fallbacks = ["qwn"]`, want: "FILE:models[1].fallbacks: ", msg: `did you mean "qwen"?`},
		{name: "unknown fallback, nothing close", file: twoModels + `fallbacks = ["mistral"]`, want: "FILE:models[1].fallbacks: ", msg: "use the full org/model id"},
		{name: "fallback to itself", file: twoModels + `fallbacks = ["b"]`, want: "FILE:models[1].fallbacks: ", msg: `"b" is this model itself (org/b)`},
		{name: "fallback to its own id", file: twoModels + `fallbacks = ["org/b"]`, want: "FILE:models[1].fallbacks: ", msg: "this model itself"},

		// addresses and URLs
		{name: "base_url not http", file: "[upstream]\nbase_url = \"ftp://llm.chutes.ai/v1\"", want: "FILE:upstream.base_url: ", msg: "not an http:// or https:// URL"},
		{name: "base_url without scheme", file: "[upstream]\nbase_url = \"llm.chutes.ai/v1\"", want: "FILE:upstream.base_url: "},
		{name: "base_url is an endpoint", file: "[upstream]\nbase_url = \"https://llm.chutes.ai/v1/chat/completions\"", want: "FILE:upstream.base_url: ", msg: "endpoint"},
		{name: "account_url not http", file: "[upstream]\naccount_url = \"api.chutes.ai\"", want: "FILE:upstream.account_url: "},
		{name: "resolver without port", file: "[upstream]\nresolver = \"1.1.1.1\"", want: "FILE:upstream.resolver: ", msg: "not host:port"},
		{name: "listen without host", file: `listen = "8787"`, want: "FILE:listen: ", msg: "not host:port"},
		{name: "listen with a bad port", file: `listen = "127.0.0.1:http"`, want: "FILE:listen: ", msg: "port"},
		{name: "cors origin without scheme", file: "[compat]\ncors_origins = [\"janitorai.com\"]", want: "FILE:compat.cors_origins: ", msg: "scheme://host"},
		{name: "cors origin with a path", file: "[compat]\ncors_origins = [\"https://janitorai.com/\"]", want: "FILE:compat.cors_origins: ", msg: `write "https://janitorai.com"`},
		{name: "allowed host is a URL", file: `allowed_hosts = ["https://t.example.com"]`, want: "FILE:allowed_hosts: "},
		{name: "public listen without proxy_key", file: `listen = "0.0.0.0:8787"`, want: "FILE:listen: ", msg: "proxy_key must be set"},
		{name: "key with a space inside", file: "[upstream]\napi_key = \"cpk_abc def\"", want: "FILE:upstream.api_key: ", msg: "inside it"},

		// values from the environment and flags are blamed on them
		{name: "bad listen from env", file: "", env: map[string]string{EnvListen: "nonsense"}, want: "env CHUTES_PROXY_LISTEN:listen: "},
		{name: "bad upstream from env", file: "", env: map[string]string{EnvUpstream: "ftp://x"}, want: "env CHUTES_PROXY_UPSTREAM:upstream.base_url: "},
		{name: "bad key from env", file: "", env: map[string]string{EnvAPIKey: "cpk_abc\tdef"}, want: "env CHUTES_API_KEY:upstream.api_key: "},
		{name: "public listen from flag", file: "", listen: "0.0.0.0:8787", want: "flag --listen:listen: ", msg: "proxy_key"},
		{name: "flag blamed over env", file: "", env: map[string]string{EnvListen: "127.0.0.1:1"}, listen: ":8787", want: "flag --listen:listen: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeFile(t, dir, "proxy.toml", tt.file)
			cfg, err := Load(Options{File: path, Listen: tt.listen, Getenv: envOf(tt.env), Dir: dir})
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Load() = %v, %v; want Problems", cfg, err)
			}
			if cfg != nil {
				t.Errorf("Load() returned a config with problems")
			}
			want := strings.Replace(tt.want, "FILE", path, 1)
			for _, p := range ps {
				if strings.HasPrefix(p.Error(), want) && strings.Contains(p.Msg, tt.msg) {
					t.Log(p.Error())
					return
				}
			}
			t.Errorf("no problem %q…%q in:\n%v", want, tt.msg, err)
		})
	}
}

func TestLoadReportsEveryProblemInOrder(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "proxy.toml", `
surprise = 1
listen = "8787"

[upstream]
connect_timeout = "10x"
first_byte_timeout = 5

[breaker]
failures = 0

[[models]]
id = "org/a"
fallbacks = ["nope"]
colour = "blue"
`)
	_, err := Load(Options{File: path, Getenv: envOf(nil)})
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Load() error = %v; want Problems", err)
	}
	var keys []string
	for _, p := range ps {
		if p.File != path {
			t.Errorf("problem %q names file %q; want %q", p.Error(), p.File, path)
		}
		keys = append(keys, p.Key)
	}
	// What could not be read first, in the tables' order with unknown keys
	// after a table's known ones; then the values' problems.
	want := []string{"upstream.connect_timeout", "upstream.first_byte_timeout", "models[0].colour", "surprise",
		"breaker.failures", "listen", "models[0].fallbacks"}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("keys = %v\nwant   %v", keys, want)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) {
		t.Errorf("Error() has %d lines; want %d:\n%v", len(lines), len(want), err)
	}

	// The same file gives the same lines every time.
	for range 5 {
		_, again := Load(Options{File: path, Getenv: envOf(nil)})
		if again.Error() != err.Error() {
			t.Fatalf("second Load differs:\n%v\nvs\n%v", again, err)
		}
	}
}

func TestProblemError(t *testing.T) {
	tests := []struct {
		name string
		p    Problem
		want string
	}{
		{"key", Problem{"proxy.toml", "upstream.connect_timeout", "bad"}, "proxy.toml:upstream.connect_timeout: bad"},
		{"embedded", Problem{embeddedName, "listen", "bad"}, "(embedded proxy.toml):listen: bad"},
		{"no key", Problem{"proxy.toml", "", "bad"}, "proxy.toml: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Error(); got != tt.want {
				t.Errorf("Error() = %q; want %q", got, tt.want)
			}
		})
	}
	ps := Problems{tests[0].p, tests[2].p}
	if got, want := ps.Error(), tests[0].want+"\n"+tests[2].want; got != want {
		t.Errorf("Problems.Error() = %q; want %q", got, want)
	}
}

// TestLoadMutualFallbacks checks that two models may name each other: a
// chain is one level deep, so A → B and B → A is no cycle.
func TestLoadMutualFallbacks(t *testing.T) {
	tests := []struct{ name, file string }{
		{"by alias", twoModels + `fallbacks = ["a"]`},
		{"by id", twoModels + `fallbacks = ["org/a"]`},
		{"three in a ring", twoModels + "fallbacks = [\"org/c\"]\n[[models]]\nid = \"org/c\"\nfallbacks = [\"a\", \"b\"]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(Options{File: writeFile(t, t.TempDir(), "proxy.toml", tt.file), Getenv: envOf(nil)})
			if err != nil {
				t.Fatalf("Load() error = %v; want none", err)
			}
			if got := cfg.Models[1].Fallbacks; len(got) == 0 {
				t.Errorf("models[1].fallbacks = %v; want the file's", got)
			}
		})
	}
}
