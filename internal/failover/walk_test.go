package failover

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// history is an Observer with a fixed p95 time to first token per model.
type history struct {
	mu   sync.Mutex
	p95  map[string]time.Duration
	n    int
	seen []Attempt
}

func (h *history) Attempted(_ string, a Attempt, _ time.Duration) {
	h.mu.Lock()
	h.seen = append(h.seen, a)
	h.mu.Unlock()
}

func (h *history) FirstTokenP95(model string) (time.Duration, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.p95[model], h.n
}

func cutoffConfig(t *testing.T, edit func(*config.Failover)) *config.Config {
	cfg := testConfig(t, chain("slow/one", []string{"auto"}, "fast/two"))
	cfg.Failover.LearnedCutoff = true
	cfg.Failover.CutoffFactor = 3
	cfg.Failover.CutoffFloor = config.Duration(5 * time.Second)
	if edit != nil {
		edit(&cfg.Failover)
	}
	return cfg
}

func TestCutOff(t *testing.T) {
	const limit = 60 * time.Second
	tests := []struct {
		name    string
		p95     time.Duration
		samples int
		edit    func(*config.Failover)
		want    time.Duration
		learned bool
	}{
		{"warm-up: too few samples", 2 * time.Second, MinSamples - 1, nil, limit, false},
		{"factor x p95", 4 * time.Second, MinSamples, nil, 12 * time.Second, true},
		{"the floor for a fast model", 200 * time.Millisecond, 50, nil, 5 * time.Second, true},
		{"a slow but healthy reasoning model keeps its room", 15 * time.Second, 50, nil, 45 * time.Second, true},
		{"never past first_byte_timeout", 30 * time.Second, 50, nil, limit, false},
		{"switched off", 2 * time.Second, 50, func(f *config.Failover) { f.LearnedCutoff = false }, limit, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &history{p95: map[string]time.Duration{"slow/one": tt.p95}, n: tt.samples}
			r := New(cutoffConfig(t, tt.edit), nil, h)
			got, learned := r.CutOff("slow/one", limit)
			if got != tt.want || learned != tt.learned {
				t.Fatalf("CutOff = %v, %v; want %v, %v", got, learned, tt.want, tt.learned)
			}
		})
	}
	// No history kept at all (an Observer without Latencies).
	r := New(cutoffConfig(t, nil), nil, nil)
	if got, learned := r.CutOff("slow/one", limit); got != limit || learned {
		t.Fatalf("without history: %v, %v", got, learned)
	}
}

// hangUntilCanceled is a try that never sees a token.
func hangUntilCanceled(ctx context.Context) error {
	<-ctx.Done()
	return context.Cause(ctx)
}

// TestHedgeWinnerServes: with hedge on, an attempt still without a token at
// its model's p95 is joined by the next model's; the first token wins, the
// other attempt is cancelled and not counted against its breaker.
func TestHedgeWinnerServes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &history{p95: map[string]time.Duration{"slow/one": 2 * time.Second, "fast/two": time.Second}, n: 50}
		cfg := cutoffConfig(t, func(f *config.Failover) { f.Hedge = true })
		r := New(cfg, nil, h)
		var slowErr error
		var mu sync.Mutex
		start := time.Now()
		res, err := r.Do(context.Background(), Request{Model: "auto"}, func(ctx context.Context, model string) error {
			switch model {
			case "slow/one":
				err := hangUntilCanceled(ctx)
				mu.Lock()
				slowErr = err
				mu.Unlock()
				return err
			default:
				time.Sleep(500 * time.Millisecond) // the fast model's first token
				if !FirstToken(ctx) {
					return ErrHedgeLost
				}
				return nil
			}
		})
		if err != nil || res.Model != "fast/two" {
			t.Fatalf("Do = %v, served by %q", err, res.Model)
		}
		if d := time.Since(start); d != 2500*time.Millisecond {
			t.Errorf("served after %v, want the p95 (2s) + the hedge's own 500ms", d)
		}
		mu.Lock()
		if !errors.Is(slowErr, ErrHedgeLost) {
			t.Errorf("the losing attempt ended with %v, want ErrHedgeLost", slowErr)
		}
		mu.Unlock()
		if c := r.Model("slow/one").Counts(); c.TotalFailures != 0 || c.ConsecutiveFailures != 0 {
			t.Errorf("the loser counted against its breaker: %+v", c)
		}
		if res.UpstreamAttempts() != 2 {
			t.Errorf("attempts %+v", res.Attempts)
		}
	})
}

// TestHedgeFirstModelWins: the first model's own token, even after the
// hedge started, wins; the hedge is cancelled and not counted.
func TestHedgeFirstModelWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &history{p95: map[string]time.Duration{"slow/one": 2 * time.Second}, n: 50}
		r := New(cutoffConfig(t, func(f *config.Failover) { f.Hedge = true }), nil, h)
		res, err := r.Do(context.Background(), Request{Model: "auto"}, func(ctx context.Context, model string) error {
			if model == "fast/two" {
				return hangUntilCanceled(ctx)
			}
			time.Sleep(3 * time.Second) // past the p95: the hedge starts at 2s
			if !FirstToken(ctx) {
				return ErrHedgeLost
			}
			return nil
		})
		if err != nil || res.Model != "slow/one" {
			t.Fatalf("Do = %v, served by %q", err, res.Model)
		}
		if c := r.Model("fast/two").Counts(); c.TotalFailures != 0 {
			t.Errorf("the cancelled hedge counted: %+v", c)
		}
	})
}

// TestNoHedgeWithoutHistoryOrSwitch: no hedge while the model has too few
// samples, or with hedge off: one attempt at a time.
func TestNoHedgeWithoutHistoryOrSwitch(t *testing.T) {
	for _, tt := range []struct {
		name  string
		n     int
		hedge bool
	}{{"warm-up", MinSamples - 1, true}, {"off", 50, false}} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := &history{p95: map[string]time.Duration{"slow/one": time.Second}, n: tt.n}
				r := New(cutoffConfig(t, func(f *config.Failover) { f.Hedge = tt.hedge }), nil, h)
				s := newScript(nil)
				res, err := r.Do(context.Background(), Request{Model: "auto"}, func(ctx context.Context, model string) error {
					time.Sleep(3 * time.Second)
					return s.try(ctx, model)
				})
				if err != nil || res.Model != "slow/one" || s.count("fast/two") != 0 {
					t.Fatalf("Do = %v via %q; fast/two called %d times", err, res.Model, s.count("fast/two"))
				}
			})
		})
	}
}

// TestHalfOpenOneTrial: when a model's breaker is half-open, one trial
// request goes through, not one per concurrent user: the others skip it
// and cost no upstream request.
func TestHalfOpenOneTrial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(t, chain("dead/one", []string{"auto"}, "good/two"))
		cfg.Breaker.Failures = 1
		cfg.Breaker.Cooldown = config.Duration(10 * time.Second)
		r := New(cfg, nil, nil)
		s := newScript(map[string]error{"dead/one": up(503)})
		if _, err := r.Do(context.Background(), Request{Model: "auto"}, s.try); err != nil {
			t.Fatal(err)
		}
		time.Sleep(11 * time.Second) // the cooldown: the breaker is half-open now
		var mu sync.Mutex
		calls := map[string]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_, _ = r.Do(context.Background(), Request{Model: "auto"}, func(ctx context.Context, model string) error {
					mu.Lock()
					calls[model]++
					mu.Unlock()
					if model == "dead/one" {
						time.Sleep(time.Second) // the trial takes a while; the others arrive meanwhile
						return up(503)
					}
					return nil
				})
			})
		}
		wg.Wait()
		if got := calls["dead/one"]; got != 1 {
			t.Fatalf("the half-open model was tried %d times by 8 concurrent users, want 1", got)
		}
	})
}

// TestHedgedWinnerKeepsItsContext: the context an attempt served under
// stays alive after Do returns (the proxy reads the committed stream under
// it), whether the hedge started or the model answered before its p95.
func TestHedgedWinnerKeepsItsContext(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first time.Duration // the first model's time to its token
	}{{"before the hedge", time.Second}, {"after the hedge started", 3 * time.Second}} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := &history{p95: map[string]time.Duration{"slow/one": 2 * time.Second}, n: 50}
				r := New(cutoffConfig(t, func(f *config.Failover) { f.Hedge = true }), nil, h)
				var served context.Context
				res, err := r.Do(context.Background(), Request{Model: "auto"}, func(ctx context.Context, model string) error {
					if model == "fast/two" {
						return hangUntilCanceled(ctx)
					}
					time.Sleep(tt.first)
					if !FirstToken(ctx) {
						return ErrHedgeLost
					}
					served = ctx
					return nil
				})
				if err != nil || res.Model != "slow/one" {
					t.Fatalf("Do = %v via %q", err, res.Model)
				}
				synctest.Wait()
				if served.Err() != nil {
					t.Fatalf("the winner's context ended with Do: %v", context.Cause(served))
				}
			})
		})
	}
}

// TestCutCountsAgainstTheBreaker: replies that break off after their
// commit count as failures, so a model whose miners die mid-reply opens its
// breaker like one that fails before its first token.
func TestCutCountsAgainstTheBreaker(t *testing.T) {
	cfg := testConfig(t, chain("cut/one", nil))
	cfg.Breaker.Failures = 2
	r := New(cfg, nil, nil)
	r.Cut("cut/one")
	if st := r.Model("cut/one").State(); st != gobreaker.StateClosed {
		t.Fatalf("one cut opened the breaker: %v", st)
	}
	r.Cut("cut/one")
	if st := r.Model("cut/one").State(); st != gobreaker.StateOpen {
		t.Fatalf("two cuts in a row: breaker %v, want open", st)
	}
	r.Cut("cut/one") // an open breaker needs no telling, and must not panic
}

// TestCoolingOneStrikePerEpisode: the 429s of requests that were already in
// flight when the first one came back do not lengthen the rest; the next
// episode's does.
func TestCoolingOneStrikePerEpisode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(testConfig(t), nil, nil).Model("busy/one")
		now := time.Now()
		for range 5 {
			if d := m.cool(now, 0); d != time.Second {
				t.Fatalf("a 429 of the same burst rests %v, want 1s", d)
			}
		}
		later := now.Add(2 * time.Second)
		if d := m.cool(later, 0); d != 2*time.Second {
			t.Fatalf("the next episode rests %v, want 2s", d)
		}
	})
}
