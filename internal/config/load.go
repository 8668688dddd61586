package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unicode"

	tomlparser "github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"github.com/pelletier/go-toml/v2"

	chutesproxy "github.com/chutes-proxy/chutes-proxy"
)

// Environment variables Load reads (through Options.Getenv). An empty value
// does not override.
const (
	EnvConfig   = "CHUTES_PROXY_CONFIG"   // the config file when --config is not given
	EnvAPIKey   = "CHUTES_API_KEY"        // sets upstream.api_key
	EnvListen   = "CHUTES_PROXY_LISTEN"   // sets listen
	EnvUpstream = "CHUTES_PROXY_UPSTREAM" // sets upstream.base_url
)

// embeddedName is how messages name the defaults compiled into the binary.
const embeddedName = "(embedded proxy.toml)"

// Options says where Load looks and what the command line set. The zero
// value reads ./proxy.toml (or the embedded defaults) and the process
// environment.
type Options struct {
	File   string // the --config flag; "" means not given
	Listen string // the --listen flag; "" means not given
	// Getenv reads the environment; nil means os.Getenv. Tests pass their own
	// so that they never depend on the real environment.
	Getenv func(string) string
	// Dir is where ./proxy.toml is looked for, and what a relative File or
	// $CHUTES_PROXY_CONFIG is relative to; "" means the current directory.
	Dir string
}

// Load finds the config in the contract's order — Options.File,
// $CHUTES_PROXY_CONFIG, ./proxy.toml in Options.Dir, UserFile, else the
// embedded defaults — and has koanf layer the embedded defaults, the file, the
// environment and the flags, then decodes the result strictly and
// validates it. The defaults come first so that a key the file leaves out
// keeps its documented value, except [[models]]: a file's tables replace
// the embedded ones (none means no model has settings), since merging them
// would resurrect models the user deleted.
//
// A file named by the flag or the environment that does not exist is an
// error (wrapping fs.ErrNotExist), not a reason to fall back: the user asked
// for that file. Invalid content is reported as Problems, every one of them;
// other errors are I/O errors. On error the *Config is nil.
func Load(opts Options) (*Config, error) {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	path, data, err := find(opts)
	if err != nil {
		return nil, err
	}
	label := cmp.Or(path, embeddedName)
	// Windows editors like to start files with a byte-order mark.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))

	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(chutesproxy.DefaultConfig), tomlparser.Parser()); err != nil {
		return nil, fmt.Errorf("loading the embedded defaults: %w", err) // the tests keep this from happening
	}
	k.Delete("models")
	if err := k.Load(rawbytes.Provider(data), tomlparser.Parser()); err != nil {
		// Nothing after a syntax error can be trusted; fix that first.
		return nil, Problems{syntaxProblem(label, data, err)}
	}
	// The environment, then the flags, which win. Empty values do not
	// override; a key is kept untrimmed for trimKey to trim and say so.
	over, origin, notes := map[string]any{}, map[string]string{}, []string(nil)
	for _, o := range []struct{ key, who, val string }{
		{"listen", "env " + EnvListen, opts.Getenv(EnvListen)},
		{"upstream.base_url", "env " + EnvUpstream, opts.Getenv(EnvUpstream)},
		{"upstream.api_key", "env " + EnvAPIKey, opts.Getenv(EnvAPIKey)},
		{"listen", "flag --listen", opts.Listen},
	} {
		if strings.TrimFunc(o.val, IsKeyJunk) == "" {
			if o.val != "" {
				notes = append(notes, o.who+" is set but holds only white space or quotes; ignored")
			}
			continue
		}
		over[o.key], origin[o.key] = o.val, o.who
	}
	if err := k.Load(confmap.Provider(over, "."), nil); err != nil {
		return nil, fmt.Errorf("applying the environment and flags: %w", err)
	}
	// A bad value is blamed on whoever set it.
	from := func(key string) string { return cmp.Or(origin[key], label) }

	cfg := &Config{Source: path}
	found := decode(k, cfg, data)
	cfg.Listen = strings.TrimSpace(cfg.Listen)
	cfg.Upstream.BaseURL = strings.TrimRight(strings.TrimSpace(cfg.Upstream.BaseURL), "/")
	cfg.Upstream.AccountURL = strings.TrimRight(cfg.Upstream.AccountURL, "/")
	cfg.Upstream.APIKey = trimKey("upstream.api_key", from("upstream.api_key"), cfg.Upstream.APIKey, &notes)
	cfg.ProxyKey = trimKey("proxy_key", from("proxy_key"), cfg.ProxyKey, &notes)
	resolveProviders(cfg, opts.Getenv, from, &notes)
	if key := cfg.Upstream.APIKey.Reveal(); key != "" && !strings.HasPrefix(key, "cpk_") {
		notes = append(notes, fmt.Sprintf("upstream.api_key (from %s) does not start with cpk_ as Chutes keys do (it starts %s); check that it is a Chutes API key",
			from("upstream.api_key"), Redact(key)))
	}
	cfg.Notes = notes
	if all := finish(cfg, found, validate(cfg), from); len(all) > 0 {
		return nil, all
	}
	return cfg, nil
}

// find returns the config file's path and content, or "" and the embedded
// defaults. After ./proxy.toml it looks in the user's config directory, so
// that an installed binary started from anywhere (a login item, a desktop
// shortcut, Termux:Boot) finds the file `chutes-proxy init` put there.
func find(opts Options) (string, []byte, error) {
	p, via := opts.File, "--config"
	if p == "" {
		p, via = opts.Getenv(EnvConfig), "$"+EnvConfig
	}
	if p == "" {
		for _, p := range []string{filepath.Join(opts.Dir, "proxy.toml"), UserFile(opts.Getenv)} {
			if p == "" {
				continue
			}
			if b, err := os.ReadFile(p); !errors.Is(err, fs.ErrNotExist) {
				return p, b, err
			}
		}
		return "", chutesproxy.DefaultConfig, nil
	}
	if !filepath.IsAbs(p) && opts.Dir != "" {
		p = filepath.Join(opts.Dir, p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", nil, fmt.Errorf("config file named by %s: %w", via, err)
	}
	return p, b, nil
}

// UserFile is chutes-proxy/proxy.toml in the user's config directory, the
// one os.UserConfigDir names — %AppData% on Windows, ~/Library/Application
// Support on macOS, $XDG_CONFIG_HOME or ~/.config elsewhere, Termux
// included — but read through getenv (nil means os.Getenv), so that tests
// never see the real one. "" when the environment names no such directory.
func UserFile(getenv func(string) string) string {
	if getenv == nil {
		getenv = os.Getenv
	}
	var dir string
	switch runtime.GOOS {
	case "windows":
		dir = getenv("APPDATA")
	case "darwin", "ios":
		if home := getenv("HOME"); filepath.IsAbs(home) {
			dir = filepath.Join(home, "Library", "Application Support")
		}
	default:
		dir = getenv("XDG_CONFIG_HOME")
		if home := getenv("HOME"); !filepath.IsAbs(dir) && filepath.IsAbs(home) {
			dir = filepath.Join(home, ".config")
		}
	}
	if !filepath.IsAbs(dir) {
		return ""
	}
	return filepath.Join(dir, "chutes-proxy", "proxy.toml")
}

// trimKey removes what a copy and paste drags along around a key — spaces,
// line ends, quotes, zero-width characters — since no key contains them and
// a key with them is rejected upstream with a message that does not say
// why. It notes the trim, showing only the key's redacted prefix.
func trimKey(name, from string, s Secret, notes *[]string) Secret {
	raw := s.Reveal()
	t := strings.TrimFunc(raw, IsKeyJunk)
	what := "white space"
	if strings.ContainsAny(strings.Replace(raw, t, "", 1), `"'`) { // what is around t
		what += " or quotes"
	}
	switch {
	case t == raw:
	case t == "":
		*notes = append(*notes, fmt.Sprintf("%s (from %s) held only %s; treated as not set", name, from, what))
	default:
		*notes = append(*notes, fmt.Sprintf("%s (from %s) had %s around it; trimmed: %s", name, from, what, Redact(t)))
	}
	return Secret(t)
}

// IsKeyJunk reports whether r is never part of a key but often pasted with
// one: white space, quotes, zero-width and control characters.
func IsKeyJunk(r rune) bool {
	return unicode.IsSpace(r) || r == '"' || r == '\'' || unicode.Is(unicode.Cf, r) || unicode.IsControl(r)
}

// TOML renders the effective configuration for check-config: the file's
// values with the environment and flags applied and defaults filled in. Keys
// are redacted (Secret marshals itself as a prefix), so the output is safe
// to paste into a bug report but is not a working config.
func (c *Config) TOML() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# effective config from %s, with environment and flags applied; keys redacted\n\n", c.SourceName())
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(c); err != nil {
		// Only a type the encoder cannot handle gets here, which the tests
		// rule out; say so rather than print half a file.
		fmt.Fprintf(&b, "# cannot render the config: %v\n", err)
	}
	return b.Bytes()
}
