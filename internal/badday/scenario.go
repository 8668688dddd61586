package badday

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The chain every scenario's users ask for as "auto": model-a, the one that
// has the bad day, then model-b on Chutes, then model-c on another provider
// (a local model server), so that the chain keeps a healthy model even when
// Chutes is wholly unreachable.
const (
	ModelA   = "bad-day/model-a"
	ModelB   = "bad-day/model-b"
	ModelC   = "local:model-c"
	Alias    = "auto"
	provider = "local"
)

// Scenario is one bad day: what happens to the chain after the warm-up, for
// how long, and when it is over.
type Scenario struct {
	Name  string
	Title string
	// Base is a scenario file played from the start, over healthy.toml
	// ("" = none): the reasoning model.
	Base string
	// Bad is the scenario file played once the warm-up is over ("" =
	// nothing changes in the simulator).
	Bad string
	// On and Off make the bad spell come and go: Bad for On, healthy.toml
	// for Off, and so on; Off 0 means Bad stays until the recovery.
	On, Off time.Duration
	// Outage makes Chutes wholly unreachable (nothing listens at its
	// address) during the bad phase; only the other provider is left.
	Outage bool
	// LongShare is the share of requests with a long prompt, whose first
	// token comes Prefill[model] later.
	LongShare float64
	Prefill   map[string]time.Duration
	// Length, when set, is how long this scenario's bad phase lasts instead
	// of the timeline's: long enough for rare events to show.
	Length time.Duration
	// Recovers: model-a is healthy again at the end of the bad phase, and
	// the run measures when it is used again.
	Recovers bool
	// Setups are extra setups run for this scenario only.
	Setups []Setup
}

// Scenarios are the bad days of issue 16, in report order.
var Scenarios = []Scenario{
	{Name: "hang", Title: "model-a's miner hangs before the first token (200 headers, then silence)",
		Bad: "hang.toml", Recovers: true},
	{Name: "storm", Title: "503 storms that come and go (80% of model-a's requests, 2 s on, 3 s off)",
		Bad: "storm.toml", On: 2 * time.Second, Off: 3 * time.Second, Recovers: true},
	{Name: "overload", Title: "429 bursts without Retry-After (1.5 s on, 2.5 s off)",
		Bad: "overloaded.toml", On: 1500 * time.Millisecond, Off: 2500 * time.Millisecond, Recovers: true},
	{Name: "flap", Title: "model-a flaps: down 0.6 s, up 0.6 s",
		Bad: "flap.toml", On: 600 * time.Millisecond, Off: 600 * time.Millisecond, Recovers: true},
	{Name: "midstream", Title: "mid-stream cuts: half of model-a's replies cut after three words",
		Bad: "midstream.toml", Recovers: true, Setups: []Setup{ProxyResume}},
	{Name: "outage", Title: "Chutes wholly unreachable (connection refused); local:model-c left",
		Outage: true, Recovers: true},
	{Name: "reasoning", Title: "model-a is a healthy reasoning model; 4% of prompts are long (first token +2 s)",
		Base: "reasoning.toml", LongShare: 0.04, Length: 30 * time.Second,
		Prefill: map[string]time.Duration{ModelA: 2 * time.Second, ModelB: time.Second, "model-c": time.Second}},
}

// Find returns the scenario called name.
func Find(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

//go:embed scenarios/*.toml
var files embed.FS

// loadScenarios reads every embedded scenario file with the simulator's own
// strict loader, by name.
func loadScenarios() (map[string]simulator.Scenario, error) {
	dir, err := os.MkdirTemp("", "badday-scenarios-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	entries, err := files.ReadDir("scenarios")
	if err != nil {
		return nil, err
	}
	out := make(map[string]simulator.Scenario, len(entries))
	for _, e := range entries {
		b, err := files.ReadFile("scenarios/" + e.Name())
		if err != nil {
			return nil, err
		}
		// LoadScenario reads a path: the simulator's checks, unchanged.
		p := filepath.Join(dir, e.Name())
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, err
		}
		sc, err := simulator.LoadScenario(p)
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", e.Name(), err)
		}
		out[e.Name()] = sc
	}
	return out, nil
}
