package badday

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Scale is how much shorter than real time the bench's times are: a 6 s
// first_byte_timeout here stands for the default 60 s, a 2.5 s floor for
// the default 25 s, a 3 s breaker cooldown for 30 s.
const Scale = 10

// The scaled-down time-outs every setup shares.
const (
	FirstByteTimeout = 6 * time.Second // 60 s
	IdleTimeout      = 6 * time.Second // 60 s
	RequestTimeout   = 60 * time.Second
	Cooldown         = 3 * time.Second // [breaker] cooldown 30 s
	Floor            = 2500 * time.Millisecond
	Factor           = 3.0
)

// Setup is one way of running the proxy in front of a bad day.
type Setup struct {
	Name string
	// Learned is [failover] learned_cutoff, with Factor and Floor.
	Learned bool
	Factor  float64
	Floor   time.Duration
	Hedge   bool
	Resume  bool
	// Failures and Cooldown are the [breaker]'s.
	Failures int
	Cooldown time.Duration
	// Baseline marks the generic gateway the others are compared with.
	Baseline bool
}

// The setups of every scenario: the proxy's defaults (times scaled), the
// same with hedging, and the baseline: a breaker that never opens, no 429
// cooling, no learned cut-off: only fixed time-outs and "try the next
// model".
var (
	Proxy       = Setup{Name: "proxy", Learned: true, Factor: Factor, Floor: Floor, Failures: 3, Cooldown: Cooldown}
	ProxyHedge  = Setup{Name: "proxy+hedge", Learned: true, Factor: Factor, Floor: Floor, Hedge: true, Failures: 3, Cooldown: Cooldown}
	ProxyResume = Setup{Name: "proxy+resume", Learned: true, Factor: Factor, Floor: Floor, Resume: true, Failures: 3, Cooldown: Cooldown}
	Baseline    = Setup{Name: "baseline", Factor: Factor, Floor: Floor, Failures: 1_000_000_000, Cooldown: time.Millisecond, Baseline: true}
	Setups      = []Setup{Proxy, ProxyHedge, Baseline}
)

// TOML is the setup's config file for a Chutes at chutesURL and the other
// provider at localURL (both with /v1).
func (s Setup) TOML(chutesURL, localURL string) string {
	d := func(t time.Duration) string { return strconv.Quote(t.String()) }
	return fmt.Sprintf(`# chutes-bench badday, setup %q
listen = "127.0.0.1:0"

[upstream]
base_url = %q
api_key = "cpk_badday0123456789abcdef.baddaybaddayba"
first_byte_timeout = %s
idle_timeout = %s
request_timeout = %s
account_url = ""

[failover]
max_attempts = 3
resume_streams = %t
learned_cutoff = %t
cutoff_factor = %.2f
cutoff_floor = %s
hedge = %t

[breaker]
failures = %d
cooldown = %s

[health]
probe_interval = "0s"

[[providers]]
name = %q
base_url = %q

[[models]]
id = %q
aliases = [%q]
fallbacks = [%q, %q]
`, s.Name, chutesURL, d(FirstByteTimeout), d(IdleTimeout), d(RequestTimeout),
		s.Resume, s.Learned, s.Factor, d(s.Floor), s.Hedge, s.Failures, d(s.Cooldown),
		provider, localURL, ModelA, Alias, ModelB, ModelC)
}

// load writes the setup's config into dir and loads it as the proxy does,
// with an empty environment.
func (s Setup) load(dir, chutesURL, localURL string) (*config.Config, error) {
	path := filepath.Join(dir, "proxy.toml")
	if err := os.WriteFile(path, []byte(s.TOML(chutesURL, localURL)), 0o600); err != nil {
		return nil, err
	}
	cfg, err := config.Load(config.Options{File: path, Getenv: func(string) string { return "" }, Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("setup %s: %w", s.Name, err)
	}
	cfg.Failover.NoCooling = s.Baseline
	return cfg, nil
}
