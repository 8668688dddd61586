// Package config loads chutes-proxy's configuration: the embedded defaults,
// then a TOML file, then the environment, then flags, decoded strictly and
// validated whole so that every problem is reported at once as a
// "FILE:KEY: problem" line.
package config

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"
)

// Config is the effective configuration. Its toml tags, the one set that
// koanf, go-toml and the unknown-key check all read, name the keys of
// ../../proxy.toml, which documents every one of them. A check tag is the
// range validate holds a number to: min0 (not negative), min1 (at least 1)
// or positive (a time-out or wait with no "off": 0 would fail at once).
type Config struct {
	Listen       string   `toml:"listen"`
	ProxyKey     Secret   `toml:"proxy_key"`
	MaxBodyMB    int      `toml:"max_body_mb" check:"min1"`
	AllowedHosts []string `toml:"allowed_hosts"`

	Compat    Compat     `toml:"compat"`
	Upstream  Upstream   `toml:"upstream"`
	Failover  Failover   `toml:"failover"`
	Breaker   Breaker    `toml:"breaker"`
	RateLimit RateLimit  `toml:"rate_limit"`
	Quota     Quota      `toml:"quota"`
	Health    Health     `toml:"health"`
	Providers []Provider `toml:"providers"`
	Models    []Model    `toml:"models"`

	// Source is the file the config was read from; "" means the defaults
	// embedded in the binary.
	Source string `toml:"-"`
	// Notes are things worth one log line at start-up, such as a key that
	// had white space trimmed (never the key itself).
	Notes []string `toml:"-"`
}

// Compat holds switches for clients that need something non-standard.
type Compat struct {
	CORSOrigins      []string `toml:"cors_origins"`
	ErrorsAsMessages bool     `toml:"errors_as_messages"`
}

// Upstream is where requests go and how long each step may take.
type Upstream struct {
	BaseURL          string   `toml:"base_url"`
	APIKey           Secret   `toml:"api_key"`
	ConnectTimeout   Duration `toml:"connect_timeout" check:"positive"`
	FirstByteTimeout Duration `toml:"first_byte_timeout" check:"positive"`
	IdleTimeout      Duration `toml:"idle_timeout" check:"positive"`
	// StreamPlain sends plain chat and completion requests upstream as
	// streams and assembles the reply, so that liveness is judged per
	// token (a long reply is never cut, a stalled one is left).
	StreamPlain    bool     `toml:"stream_plain"`
	RequestTimeout Duration `toml:"request_timeout" check:"positive"`
	Resolver       string   `toml:"resolver"`
	AccountURL     string   `toml:"account_url"`
}

// Failover bounds the walk along a chain.
type Failover struct {
	MaxAttempts int `toml:"max_attempts" check:"min1"`
	// ResumeStreams continues a stream cut after its first token (same
	// model first, then the chain) instead of ending it with
	// stream_interrupted. Each resume is one more upstream request.
	ResumeStreams bool `toml:"resume_streams"`
	// LearnedCutoff cuts an attempt with no token after
	// max(CutoffFloor, CutoffFactor × the model's recent p95 time to first
	// token), once 20 samples are known, never later than
	// first_byte_timeout: a hung miner costs seconds, not a minute.
	LearnedCutoff bool     `toml:"learned_cutoff"`
	CutoffFactor  float64  `toml:"cutoff_factor" check:"positive"`
	CutoffFloor   Duration `toml:"cutoff_floor" check:"positive"`
	// Hedge also starts the next model when one passes its p95 with no
	// token; the first token wins and the other request is cancelled. Each
	// hedge is one more upstream request against the daily quota.
	Hedge bool `toml:"hedge"`
	// NoCooling turns off the rest after a 429, for chutes-bench's
	// baseline (a generic gateway's "try the next model" and nothing
	// more). Not a key of proxy.toml: a proxy always rests an overloaded
	// model.
	NoCooling bool `toml:"-"`
}

// Breaker holds the circuit-breaker defaults for every model.
type Breaker struct {
	Failures int      `toml:"failures" check:"min1"`
	Cooldown Duration `toml:"cooldown" check:"positive"`
}

// RateLimit holds the limiter defaults for every model. RequestsPerMinute 0
// means unlimited.
type RateLimit struct {
	RequestsPerMinute float64  `toml:"requests_per_minute" check:"min0"`
	Burst             int      `toml:"burst" check:"min0"`
	MaxWait           Duration `toml:"max_wait" check:"min0"`
}

// Quota is the proxy's own daily request cap. DailyRequests 0 means not
// tracked; StateFile "" means the user's state directory.
type Quota struct {
	DailyRequests int    `toml:"daily_requests" check:"min0"`
	StateFile     string `toml:"state_file"`
}

// Health configures the background probe. ProbeInterval 0 turns it off.
type Health struct {
	ProbeInterval Duration `toml:"probe_interval" check:"min0"`
}

// Model is one [[models]] table. The pointer fields are per-model overrides;
// nil means "use the [rate_limit] / [breaker] default".
type Model struct {
	ID                string    `toml:"id"`
	Aliases           []string  `toml:"aliases,omitempty"`
	Fallbacks         []string  `toml:"fallbacks,omitempty"`
	RequestsPerMinute *float64  `toml:"requests_per_minute,omitempty" check:"min0"`
	Burst             *int      `toml:"burst,omitempty" check:"min0"`
	Failures          *int      `toml:"failures,omitempty" check:"min1"`
	Cooldown          *Duration `toml:"cooldown,omitempty" check:"positive"`
}

// Limits are the breaker and limiter settings in force for one model.
type Limits struct {
	RequestsPerMinute float64
	Burst             int
	MaxWait           time.Duration
	Failures          int
	Cooldown          time.Duration
}

// LimitsFor returns the settings for model id: its [[models]] overrides over
// the defaults. A model with no table gets the defaults.
func (c *Config) LimitsFor(id string) Limits {
	var m Model
	if i := slices.IndexFunc(c.Models, func(m Model) bool { return m.ID == id }); i >= 0 {
		m = c.Models[i]
	}
	return Limits{
		RequestsPerMinute: or(m.RequestsPerMinute, c.RateLimit.RequestsPerMinute),
		Burst:             or(m.Burst, c.RateLimit.Burst),
		MaxWait:           c.RateLimit.MaxWait.D(),
		Failures:          or(m.Failures, c.Breaker.Failures),
		Cooldown:          or(m.Cooldown, c.Breaker.Cooldown).D(),
	}
}

// or returns *p, or def if p is nil: an override the table leaves out.
func or[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// SourceName is the config's origin for messages: the file path, or
// "(embedded proxy.toml)".
func (c *Config) SourceName() string { return cmp.Or(c.Source, embeddedName) }

// Duration is a time.Duration written in Go syntax ("30s") in TOML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%q is not a duration; use Go syntax such as \"500ms\", \"30s\", \"10m\"", b)
	}
	*d = Duration(v)
	return nil
}

// String writes Go duration syntax.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes Go duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Secret is a key. It never prints itself whole: String, MarshalText and
// LogValue show a prefix such as "cpk_ab…". Use Reveal to send it.
type Secret string

// Reveal returns the key itself, for an Authorization header and nothing else.
func (s Secret) Reveal() string { return string(s) }

// String returns the redacted form.
func (s Secret) String() string { return Redact(string(s)) }

// GoString returns the redacted form, so %#v cannot leak it either.
func (s Secret) GoString() string { return Redact(string(s)) }

// MarshalText returns the redacted form (used by check-config).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redact(string(s))), nil }

// LogValue returns the redacted form for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redact(string(s))) }

// Redact shortens a key to at most its first 6 characters and an ellipsis;
// "" stays "" so that "not set" remains visible.
func Redact(key string) string {
	switch r := []rune(key); {
	case key == "":
		return ""
	case len(r) <= 8:
		return "…" // too short to show any of it safely
	default:
		return string(r[:6]) + "…"
	}
}

// IsLoopback reports whether addr ("host:port" or a bare host, IPv6 in
// brackets or not) names this machine only: localhost, *.localhost, or a
// loopback address. It is the one loopback check, for listen addresses,
// Host headers and base URLs alike. An empty host (":8787") binds every
// interface, so it is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
