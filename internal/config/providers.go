package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Chutes is the provider name of [upstream]: "chutes:MODEL" names a Chutes
// model explicitly, and no [[providers]] table may take the name.
const Chutes = "chutes"

// Provider is one [[providers]] table: another OpenAI-compatible service
// (OpenRouter, DeepSeek's API, a local Ollama, llama.cpp's server, KoboldCpp,
// LM Studio) for when Chutes itself is down. A model "NAME:MODEL" goes to
// the provider NAME as MODEL. The pointer fields override [upstream]'s;
// nil means Chutes' value.
type Provider struct {
	Name    string `toml:"name"`
	BaseURL string `toml:"base_url"`
	// APIKey is the provider's own key; "" (and no APIKeyEnv) sends no
	// Authorization header at all, as a local server needs.
	APIKey Secret `toml:"api_key,omitempty"`
	// APIKeyEnv names the environment variable that holds the key instead.
	APIKeyEnv string `toml:"api_key_env,omitempty"`
	// Headers are sent with every request to the provider (OpenRouter's
	// HTTP-Referer and X-Title).
	Headers          map[string]string `toml:"headers,omitempty"`
	ConnectTimeout   *Duration         `toml:"connect_timeout,omitempty" check:"positive"`
	FirstByteTimeout *Duration         `toml:"first_byte_timeout,omitempty" check:"positive"`
	IdleTimeout      *Duration         `toml:"idle_timeout,omitempty" check:"positive"`
	StreamPlain      *bool             `toml:"stream_plain,omitempty"`
}

// KeySetting names where the provider's key is set, as a fix says it:
// `api_key_env = "X"` or `api_key`.
func (p Provider) KeySetting() string {
	if p.APIKeyEnv != "" {
		return fmt.Sprintf("api_key_env = %q", p.APIKeyEnv)
	}
	return "api_key"
}

// Provider returns the [[providers]] table named name, if any.
func (c *Config) Provider(name string) (Provider, bool) {
	i := slices.IndexFunc(c.Providers, func(p Provider) bool { return p.Name == name })
	if i < 0 {
		return Provider{}, false
	}
	return c.Providers[i], true
}

// Target is where a provider's requests go and how long each step may take:
// [upstream] for Chutes, a [[providers]] table over it for the others.
type Target struct {
	Name             string
	BaseURL          string
	Key              Secret
	Headers          map[string]string
	ConnectTimeout   time.Duration
	FirstByteTimeout time.Duration
	IdleTimeout      time.Duration
	StreamPlain      bool
}

// IsChutes reports whether the target is Chutes ([upstream]).
func (t Target) IsChutes() bool { return t.Name == Chutes }

// Target returns the settings of provider name ("chutes" or "" for
// [upstream]); ok is false when no such provider is configured.
func (c *Config) Target(name string) (t Target, ok bool) {
	up := c.Upstream
	t = Target{Name: Chutes, BaseURL: up.BaseURL, Key: up.APIKey, ConnectTimeout: up.ConnectTimeout.D(),
		FirstByteTimeout: up.FirstByteTimeout.D(), IdleTimeout: up.IdleTimeout.D(), StreamPlain: up.StreamPlain}
	if name == "" || name == Chutes {
		return t, true
	}
	p, ok := c.Provider(name)
	if !ok {
		return Target{}, false
	}
	t.Name, t.BaseURL, t.Key, t.Headers = p.Name, p.BaseURL, p.APIKey, p.Headers
	t.ConnectTimeout = or(p.ConnectTimeout, up.ConnectTimeout).D()
	t.FirstByteTimeout = or(p.FirstByteTimeout, up.FirstByteTimeout).D()
	t.IdleTimeout = or(p.IdleTimeout, up.IdleTimeout).D()
	t.StreamPlain = or(p.StreamPlain, up.StreamPlain)
	return t, true
}

// Split splits a model name "NAME:MODEL" whose NAME is a configured provider
// (or "chutes") into NAME and MODEL. Any other name is Chutes': Chutes ids
// have no ':' before their '/', and an unknown prefix in a client's request
// is left for Chutes to call unknown.
func (c *Config) Split(id string) (provider, model string) {
	name, rest, ok := strings.Cut(id, ":")
	switch {
	case !ok || strings.Contains(name, "/"):
		return Chutes, id
	case name == Chutes:
		return Chutes, rest
	case slices.ContainsFunc(c.Providers, func(p Provider) bool { return p.Name == name }):
		return name, rest
	}
	return Chutes, id
}

// providerName is what a [[providers]] name may be: it is written before a
// ':' in model names and shown in metrics labels.
var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// ValidProviderName reports whether name may name a [[providers]] table.
func ValidProviderName(name string) bool { return name != Chutes && providerName.MatchString(name) }

// resolveProviders reads each provider's api_key_env and trims its key, as
// Load does for [upstream]'s.
func resolveProviders(cfg *Config, getenv func(string) string, from func(string) string, notes *[]string) {
	for i := range cfg.Providers {
		p := &cfg.Providers[i]
		p.BaseURL = strings.TrimRight(strings.TrimSpace(p.BaseURL), "/")
		key := fmt.Sprintf("providers[%d].api_key", i)
		src := from(key)
		if p.APIKey == "" && p.APIKeyEnv != "" {
			p.APIKey, src = Secret(getenv(p.APIKeyEnv)), "env "+p.APIKeyEnv
			if p.APIKey == "" {
				*notes = append(*notes, fmt.Sprintf("providers %q: api_key_env names %s, which is not set: its requests carry no key", p.Name, p.APIKeyEnv))
			}
		}
		p.APIKey = trimKey(key, src, p.APIKey, notes)
		if u, err := url.Parse(p.BaseURL); err == nil && u.Scheme == "http" && p.APIKey != "" && !IsLoopback(u.Host) {
			*notes = append(*notes, fmt.Sprintf("providers %q: base_url %s is plain http:// to another machine: its key would travel in clear; use https://", p.Name, p.BaseURL))
		}
	}
}

// providers checks the [[providers]] tables.
func (c *checker) providers(cfg *Config) {
	seen := map[string]int{}
	for i, p := range cfg.Providers {
		key := fmt.Sprintf("providers[%d]", i)
		switch j, dup := seen[p.Name]; {
		case !c.named(key+".name", p.Name, `missing or empty; every [[providers]] table needs name = "..." (used as NAME:MODEL)`):
		case p.Name == Chutes:
			c.add(key+".name", `"chutes" is [upstream]; name this provider otherwise`)
		case !providerName.MatchString(p.Name):
			c.add(key+".name", "%q may hold only lower-case letters, digits and '-' (it is written before the ':' in NAME:MODEL)", p.Name)
		case dup:
			c.add(key+".name", "%q is also the name of providers[%d]; names must differ", p.Name, j)
		default:
			seen[p.Name] = i
		}
		if msg := URLProblem(p.BaseURL); msg != "" {
			c.add(key+".base_url", "%s; e.g. \"https://openrouter.ai/api/v1\" or \"http://127.0.0.1:11434/v1\" for Ollama", msg)
		}
		if p.APIKeyEnv != "" && strings.ContainsFunc(p.APIKeyEnv, IsKeyJunk) {
			c.add(key+".api_key_env", "%q is not an environment variable's name", p.APIKeyEnv)
		}
		for h := range p.Headers {
			if !validHeaderName(h) {
				c.add(key+".headers", "%q is not a header name", h)
			}
		}
	}
}

// modelRef checks a model name that may carry a provider prefix: a prefix
// with no '/' that names no provider is a typo.
func (c *checker) modelRef(cfg *Config, key, id string) {
	name, _, ok := strings.Cut(id, ":")
	if !ok || strings.Contains(name, "/") || name == Chutes || slices.ContainsFunc(cfg.Providers, func(p Provider) bool { return p.Name == name }) {
		return
	}
	names := []string{Chutes}
	for _, p := range cfg.Providers {
		names = append(names, p.Name)
	}
	msg := fmt.Sprintf("%q names the provider %q, which is not configured (providers: %s)", id, name, strings.Join(names, ", "))
	if best := closest(name, names); best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	} else {
		msg += "; add a [[providers]] table named " + fmt.Sprintf("%q", name)
	}
	c.add(key, "%s", msg)
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, r := range h {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}
