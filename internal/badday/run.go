package badday

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// Timeline is how long each phase of a run lasts.
type Timeline struct {
	// Warmup: every model healthy, so that model-a has the 20 served
	// replies a learned cut-off needs.
	Warmup time.Duration
	// Bad: the scenario plays; the figures are of the replies sent then.
	Bad time.Duration
	// Recovery: model-a healthy again; the run measures when it serves
	// again. Not played by scenarios with nothing to recover.
	Recovery time.Duration
}

// Result is one run: a scenario through one setup.
type Result struct {
	Scenario Scenario
	Setup    Setup
	Replies  []Reply
	// Requests counts the upstream requests (both providers) by reply.
	Requests map[int64]int
	// Refused counts attempts that reached no upstream (connection
	// refused): they spend nothing, and are not in Requests.
	Refused int
	// Cuts are the attempts left at a learned cut-off.
	Cuts []Cut
	// CutOff is model-a's cut-off when the bad phase began, and whether it
	// was learned (else first_byte_timeout).
	CutOff  time.Duration
	Learned bool
	// Latencies: the Observer gave the router a p95 (failover.Latencies);
	// without it no cut-off is learned and nothing is hedged.
	Latencies bool
	// BadStart and BadEnd bound the bad phase; Recovered is when model-a
	// last became healthy (0: never bad, or never recovered).
	BadStart, BadEnd, Recovered time.Duration
}

// tap is the router's Observer: health's Monitor, as chutes-proxy wires it,
// with the run listening in. Embedding passes on what the Monitor
// implements besides (the WalkObserver, and failover.Latencies once it
// does).
type tap struct {
	*health.Monitor
	t0      time.Time
	healthy func(model string, at time.Duration) bool

	mu      sync.Mutex
	refused int
	cuts    []Cut
}

// Cut is an attempt left at its model's learned cut-off.
type Cut struct {
	Model string
	// At is when the attempt began, from the run's start.
	At time.Duration
	// Healthy: the model was scripted healthy then (a healthy reply cut).
	Healthy bool
}

func (t *tap) Attempted(model string, a failover.Attempt, latency time.Duration) {
	t.Monitor.Attempted(model, a, latency)
	if !a.Upstream() || a.Err == nil {
		return
	}
	var te *failover.TimeoutError
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case errors.As(a.Err, &te) && te.Learned && !te.Idle:
		at := time.Since(t.t0) - te.After
		t.cuts = append(t.cuts, Cut{Model: model, At: at, Healthy: t.healthy(model, at)})
	case failover.IsNetwork(a.Err):
		t.refused++
	}
}

// phases records when model-a turned bad and healthy, for telling a
// healthy model cut from a hung one.
type phases struct {
	mu    sync.Mutex
	marks []mark
}

type mark struct {
	at  time.Duration
	bad bool
}

func (p *phases) set(at time.Duration, bad bool) {
	p.mu.Lock()
	p.marks = append(p.marks, mark{at, bad})
	p.mu.Unlock()
}

func (p *phases) healthy(model string, at time.Duration) bool {
	if model != ModelA {
		return true // model-b and model-c never have a bad day
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	bad := false
	for _, m := range p.marks {
		if m.at > at {
			break
		}
		bad = m.bad
	}
	return !bad
}

// lastRecovery is when model-a last turned healthy after being bad.
func (p *phases) lastRecovery() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var at time.Duration
	bad := false
	for _, m := range p.marks {
		if bad && !m.bad {
			at = m.at
		}
		bad = m.bad
	}
	return at
}

// runOne plays sc through setup: two simulators behind their upstream
// stand-ins, chutes-proxy in this process as app.go wires it (health's
// Monitor as the router's Observer), users on loopback.
func runOne(ctx context.Context, sc Scenario, setup Setup, tl Timeline, users int, seed uint64, files map[string]simulator.Scenario) (*Result, error) {
	base := files["healthy.toml"]
	sim := simulator.New(base)
	defer sim.Close()
	if sc.Base != "" {
		play(sim, files[sc.Base])
	}
	local := simulator.New(files["local.toml"])
	defer local.Close()
	upC := newUpstream(sim, sc.Prefill, seed)
	upL := newUpstream(local, sc.Prefill, seed+1)
	chutes, err := newFront(upC)
	if err != nil {
		return nil, err
	}
	defer chutes.down()
	other, err := newFront(upL)
	if err != nil {
		return nil, err
	}
	defer other.down()

	dir, err := os.MkdirTemp("", "badday-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg, err := setup.load(dir, chutes.URL(), other.URL())
	if err != nil {
		return nil, err
	}
	ph := &phases{}
	cat := catalog.New()
	tp := &tap{Monitor: health.New(health.Options{Config: cfg, Catalog: cat}), healthy: ph.healthy}
	router := failover.New(cfg, nil, tp)
	srv := proxy.New(proxy.Options{Config: cfg, Router: router, Catalog: cat})
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := proxy.HTTPServer(ln.Addr().String(), srv, nil)
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	defer client.CloseIdleConnections()

	res := &Result{Scenario: sc, Setup: setup}
	_, res.Latencies = any(tp).(failover.Latencies)
	if sc.Length > 0 {
		tl.Bad = sc.Length
	}
	if !sc.Recovers {
		tl.Recovery = 0
	}
	t0 := time.Now()
	tp.t0 = t0
	res.BadStart, res.BadEnd = tl.Warmup, tl.Warmup+tl.Bad
	stop := t0.Add(res.BadEnd + tl.Recovery)

	var mu sync.Mutex
	var wg sync.WaitGroup
	ids := new(atomic.Int64)
	for i := range users {
		u := &user{n: i, stream: i%2 == 1, long: sc.LongShare, client: client, url: "http://" + ln.Addr().String(),
			t0: t0, ids: ids, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		wg.Go(func() {
			u.loop(ctx, stop, func(r Reply) {
				mu.Lock()
				res.Replies = append(res.Replies, r)
				mu.Unlock()
			})
		})
	}

	healthyA := files["healthy.toml"]
	if sc.Base != "" {
		healthyA = files[sc.Base]
	}
	err = drive(ctx, t0, sc, tl, func(bad bool) error {
		at := time.Since(t0)
		switch {
		case sc.Outage && bad:
			ph.set(at, true)
			chutes.down()
		case sc.Outage:
			if err := chutes.up(); err != nil {
				return fmt.Errorf("Chutes back on %s: %w", chutes.addr, err)
			}
			ph.set(at, false)
		case bad:
			play(sim, files[sc.Bad])
			ph.set(at, true)
		default:
			play(sim, healthyA)
			ph.set(at, false)
		}
		return nil
	}, func() {
		res.CutOff, res.Learned = router.CutOff(ModelA, FirstByteTimeout)
	})
	if err != nil {
		return nil, err
	}
	if d := time.Until(stop); d > 0 {
		_ = wait(ctx, d)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.Recovered = ph.lastRecovery()
	res.Requests = upC.requests()
	for id, n := range upL.requests() {
		res.Requests[id] += n
	}
	tp.mu.Lock()
	res.Refused, res.Cuts = tp.refused, tp.cuts
	tp.mu.Unlock()
	return res, nil
}

// drive plays the bad phase: at the warm-up's end, begin() and then set(true);
// for a storm that comes and goes, set(false) and set(true) by turns; at the
// bad phase's end set(false).
func drive(ctx context.Context, t0 time.Time, sc Scenario, tl Timeline, set func(bad bool) error, begin func()) error {
	if err := wait(ctx, time.Until(t0.Add(tl.Warmup))); err != nil {
		return err
	}
	begin()
	if sc.Bad == "" && !sc.Outage {
		return nil // nothing changes: the scenario is the traffic
	}
	end := t0.Add(tl.Warmup + tl.Bad)
	for bad := true; time.Now().Before(end); bad = !bad {
		if err := set(bad); err != nil {
			return err
		}
		spell := sc.On
		if !bad {
			spell = sc.Off
		}
		if sc.Off == 0 {
			spell = time.Until(end)
		}
		if err := wait(ctx, min(spell, time.Until(end))); err != nil {
			return err
		}
	}
	return set(false)
}

// play scripts every model of sc in sim.
func play(sim *simulator.Simulator, sc simulator.Scenario) {
	for _, m := range sc.Models {
		sim.SetBehavior(m.ID, m.Behavior)
	}
}
