// Package bench measures what chutes-proxy costs. It serves the simulator's
// fast path (simulator.Bench) on loopback, puts chutes-proxy (in-process, or
// the built binary) and the comparisons in front of it, and drives the same
// load through each and directly, round after round, so that every figure
// is a ratio or a difference taken in one run on one machine.
// cmd/chutes-bench is its command line; docs/BENCHMARKS.md has the method.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"
)

// Options bound a run; Defaults gives the command's.
type Options struct {
	Binary     string   // chutes-proxy binary to run; "" = in-process
	BinaryEnv  []string // extra KEY=VALUE for the binary, e.g. GOMAXPROCS=1
	FakeListen string   // the simulator's address; "" = a free loopback port
	// WithBare, WithTuned and WithRelay add the Bare, BareTuned and
	// TCPRelay comparisons.
	WithBare, WithTuned, WithRelay bool
	Externals                      []*Target       // proxies someone else runs in front of FakeListen
	Only                           map[string]bool // scenarios to run; empty = all

	Rounds   int
	Duration time.Duration // per round and target, plain scenarios
	Clients  int           // the plain16 scenario's clients

	StreamClients  int
	StreamDuration time.Duration
	Events         int
	Gap            time.Duration

	FailoverCount int // requests per round and leg, failover scenarios
	LargeCount    int // 1 MB requests per round

	Concurrent       int // streams open at once
	ConcurrentEvents int
	// ConcurrentGap must let the streams outlive the time it takes to open
	// them all.
	ConcurrentGap time.Duration

	Startups int // start-ups of the binary to time

	CPUProfile  string // with Binary: a CPU profile of it under the plain16 load
	ProfileTime time.Duration

	Out io.Writer // the report (markdown)
	Log io.Writer // progress; nil = none
}

// Defaults keep a whole run under two minutes.
func Defaults() Options {
	return Options{
		Rounds: 3, Duration: 2 * time.Second, Clients: 16,
		StreamClients: 4, StreamDuration: 2 * time.Second, Events: 20, Gap: 2 * time.Millisecond,
		FailoverCount: 300, LargeCount: 30,
		Concurrent: 1000, ConcurrentEvents: 20, ConcurrentGap: 150 * time.Millisecond,
		Startups: 5, ProfileTime: 5 * time.Second,
	}
}

// Scenarios are the names Options.Only takes.
var Scenarios = []string{"plain16", "plain1", "stream", "assemble", "refused", "breaker", "largebody", "concurrent", "startup"}

func (o *Options) on(name string) bool { return len(o.Only) == 0 || o.Only[name] }

func (o *Options) check() error {
	for s := range o.Only {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q (known: %v)", s, Scenarios)
		}
	}
	if min(o.Rounds, o.Clients, o.StreamClients, o.Events, o.FailoverCount, o.LargeCount, o.Concurrent, o.ConcurrentEvents) < 1 {
		return errors.New("counts must be at least 1")
	}
	if o.CPUProfile != "" && o.Binary == "" {
		return errors.New("a CPU profile needs --binary")
	}
	return nil
}

type runner struct {
	o       *Options
	ctx     context.Context
	c       *client
	up      *upstream
	dir     string // the run's configs
	chutes  *Target
	targets []*Target // direct, chutes-proxy, then the comparisons
	res     results
}

// results are what the report is made of.
type results struct {
	plain16, plain1, stream map[string]*Agg
	refused, breaker        *Agg
	breakerVsAlias          *Agg
	refusedCalls, deadCalls int
	refusedReqs             int
	large                   *Agg
	largeAlloc              float64 // bytes the binary allocated per large request; 0 = unknown
	conc                    map[string]*Agg
	concHeap, concStack     float64 // per stream, 0 = unknown
	concRSS                 float64
	peakRSS, idleRSS        uint64
	startups                []time.Duration
	assemble                *assembleResult
}

// Run runs the scenarios and writes the report.
func Run(ctx context.Context, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	r := &runner{o: &o, ctx: ctx, c: newClient()}
	defer r.c.Close()
	up, err := startUpstream(cmp.Or(o.FakeListen, "127.0.0.1:0"))
	if err != nil {
		return fmt.Errorf("the simulator: %w", err)
	}
	defer up.Close()
	r.up = up
	r.logf("simulator on %s", up.URL)
	dir, err := os.MkdirTemp("", "chutes-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r.dir = dir

	if o.Binary != "" {
		r.chutes, err = r.startBinary(dir)
	} else {
		r.chutes, err = startInProcess(dir, up.URL, true)
	}
	if err != nil {
		return err
	}
	defer r.chutes.Close()
	r.targets = []*Target{{Name: "direct", URL: up.URL}, r.chutes}
	for _, v := range []struct {
		name string
		on   bool
	}{{Bare, o.WithBare}, {BareTuned, o.WithTuned}, {TCPRelay, o.WithRelay}} {
		if v.on {
			t, err := startBare(up.URL, v.name, o.Binary != "")
			if err != nil {
				return err
			}
			defer t.Close()
			r.targets = append(r.targets, t)
		}
	}
	r.targets = append(r.targets, o.Externals...)
	if err := r.check(); err != nil {
		return err
	}

	started := time.Now()
	for _, s := range []struct {
		name string
		f    func() error
	}{
		{"plain16", r.plain16}, {"plain1", r.plain1}, {"stream", r.streamScenario}, {"assemble", r.assembleScenario},
		{"refused", r.refusedScenario}, {"breaker", r.breakerScenario},
		{"largebody", r.largeBody}, {"concurrent", r.concurrent},
	} {
		if !o.on(s.name) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.logf("scenario %s ...", s.name)
		if err := s.f(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if m, err := r.chutes.Mem(false); err == nil {
		r.res.peakRSS = m.HWM
	}
	r.logf("done in %s", time.Since(started).Round(time.Second))
	r.report(o.Out)
	return nil
}

// startBinary starts the binary Startups times (once when the startup
// scenario is off), timing each start and reading its idle RSS, and keeps
// the last one running.
func (r *runner) startBinary(dir string) (*Target, error) {
	b, err := newBinary(r.o.Binary, r.o.BinaryEnv, dir, r.up.URL, true)
	if err != nil {
		return nil, err
	}
	n := 1
	if r.o.on("startup") {
		n = max(r.o.Startups, 1)
	}
	var rss []uint64
	for i := 0; ; i++ {
		t, d, err := b.start()
		if err != nil {
			return nil, err
		}
		r.res.startups = append(r.res.startups, d)
		// The idle figure is after start-up, not during it.
		time.Sleep(100 * time.Millisecond)
		if m, err := t.Mem(false); err == nil {
			rss = append(rss, m.RSS)
		}
		if i == n-1 {
			r.res.idleRSS = median(rss)
			r.logf("chutes-proxy binary pid %d on %s (listening %s after exec)", t.PID, t.URL, d.Round(time.Microsecond))
			return t, nil
		}
		t.Close()
	}
}

func (r *runner) logf(format string, args ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, "chutes-bench: "+format+"\n", args...)
	}
}

func chatURL(t *Target) string { return t.URL + "/v1/chat/completions" }

// check sends one request through every target, so that a misconfigured
// external proxy fails the run at once with a clear message, and then finds
// the processes of the external ones.
func (r *runner) check() error {
	body := chatBody(ModelOK, false, 512)
	for _, t := range r.targets {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		_, err := r.c.post(ctx, chatURL(t), body)
		cancel()
		if err != nil {
			return fmt.Errorf("target %s (%s) does not answer a chat request: %w", t.Name, t.URL, err)
		}
		if t.external {
			if u, err := url.Parse(t.URL); err == nil {
				if t.CPUPIDs, err = listenerPIDs(u.Host); err != nil {
					r.logf("no CPU figures for %s: %v", t.Name, err)
				}
			}
		}
	}
	return nil
}

// leg is one measured side of a round: a target and what is sent to it.
type leg struct {
	name string
	t    *Target
	run  func() sample
}

// rounds warms every leg up with warm, unless nil, then runs each once per
// round, alternating the order (direct first, then last), and returns the
// samples by leg name in round order.
func (r *runner) rounds(legs []leg, warm func(l leg)) map[string][]sample {
	out := map[string][]sample{}
	for _, l := range legs {
		if warm != nil {
			warm(l)
		}
	}
	for i := range r.o.Rounds {
		order := slices.Clone(legs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, l := range order {
			if r.ctx.Err() != nil {
				return out
			}
			out[l.name] = append(out[l.name], l.run())
		}
	}
	return out
}

// Agg is one leg's figures over the rounds, medians throughout; the added
// figures and the ratio are taken per round against the base leg of the
// same round.
type Agg struct {
	Name                 string
	RPS, Ratio           float64
	P50, P99             time.Duration
	AddP50, AddP99       time.Duration
	EvP50, EvP99         time.Duration
	AddEvP50, AddEvP99   time.Duration
	N, Errors, Coalesced int
	Events               int
	// CPUPerReq and CPUPerEvent are the serving side's CPU time per request
	// (stream) and per event, 0 when unknown.
	CPUPerReq, CPUPerEvent time.Duration
	FirstErr               string
	base                   bool
}

func aggregate(name string, s, base []sample) *Agg {
	a := &Agg{Name: name}
	var rps, ratio []float64
	var p50, p99, ap50, ap99, e50, e99, ae50, ae99, cpr, cpe []time.Duration
	for i, x := range s {
		if x.haveCPU && x.n > 0 {
			cpr = append(cpr, x.cpu/time.Duration(x.n))
			if x.events > 0 {
				cpe = append(cpe, x.cpu/time.Duration(x.events))
			}
		}
		a.N += x.n
		a.Errors += x.errs
		a.Coalesced += x.coalesced
		a.Events += x.events
		a.FirstErr = cmp.Or(a.FirstErr, x.firstErr)
		rps = append(rps, x.rps())
		p50, p99 = append(p50, pct(x.lat, 50)), append(p99, pct(x.lat, 99))
		e50, e99 = append(e50, pct(x.delay, 50)), append(e99, pct(x.delay, 99))
		if i < len(base) {
			b := base[i]
			if b.rps() > 0 {
				ratio = append(ratio, x.rps()/b.rps())
			}
			ap50 = append(ap50, pct(x.lat, 50)-pct(b.lat, 50))
			ap99 = append(ap99, pct(x.lat, 99)-pct(b.lat, 99))
			ae50 = append(ae50, pct(x.delay, 50)-pct(b.delay, 50))
			ae99 = append(ae99, pct(x.delay, 99)-pct(b.delay, 99))
		}
	}
	a.RPS, a.Ratio = median(rps), median(ratio)
	a.P50, a.P99 = median(p50), median(p99)
	a.AddP50, a.AddP99 = median(ap50), median(ap99)
	a.EvP50, a.EvP99 = median(e50), median(e99)
	a.AddEvP50, a.AddEvP99 = median(ae50), median(ae99)
	a.CPUPerReq, a.CPUPerEvent = median(cpr), median(cpe)
	return a
}

// median is the middle value of xs (the mean of the two middle ones for an
// even count), 0 for none; xs is not reordered.
func median[T time.Duration | float64 | uint64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return xs[len(xs)/2-1]/2 + xs[len(xs)/2]/2
}

// targetScenario runs run(t) against every target, each round measuring
// the target's CPU time, and aggregates against direct.
func (r *runner) targetScenario(run func(t *Target, warm bool) sample) map[string]*Agg {
	return aggregateAll(r.targetRounds(r.targets, run))
}

// targetRounds runs run(t) against each of targets (the first is direct),
// each round measuring the target's CPU time, and returns the samples by
// target name in round order.
func (r *runner) targetRounds(targets []*Target, run func(t *Target, warm bool) sample) map[string][]sample {
	var legs []leg
	for _, t := range targets {
		legs = append(legs, leg{name: t.Name, t: t, run: func() sample {
			c0, ok0 := procCPU(t.CPUPIDs)
			s := run(t, false)
			c1, ok1 := procCPU(t.CPUPIDs)
			s.cpu, s.haveCPU = c1-c0, ok0 && ok1
			return s
		}})
	}
	return r.rounds(legs, func(l leg) { run(l.t, true) })
}

// aggregateAll aggregates every target's samples against direct's.
func aggregateAll(got map[string][]sample) map[string]*Agg {
	out := map[string]*Agg{}
	for name, s := range got {
		out[name] = aggregate(name, s, got["direct"])
		out[name].base = name == "direct"
	}
	return out
}

func (r *runner) plain(clients int) map[string]*Agg {
	return r.targetScenario(r.plainRun(clients))
}

// plainRun posts plain chats from clients workers for a round, or for a
// warm-up of 300 ms (no longer than a round).
func (r *runner) plainRun(clients int) func(t *Target, warm bool) sample {
	body := chatBody(ModelOK, false, bodySize)
	return func(t *Target, warm bool) sample {
		d := r.o.Duration
		if warm {
			d = min(d, 300*time.Millisecond)
		}
		return r.c.plain(r.ctx, chatURL(t), body, clients, d, 0)
	}
}

func (r *runner) plain16() error {
	r.res.plain16 = r.plain(r.o.Clients)
	if r.o.CPUProfile != "" {
		return r.profile()
	}
	return nil
}

func (r *runner) plain1() error {
	r.res.plain1 = r.plain(1)
	return nil
}

// profile takes a CPU profile of the binary under the plain16 load from its
// own serve --pprof.
func (r *runner) profile() error {
	if r.chutes.PprofAddr == "" {
		return errors.New("--cpuprofile needs a binary with serve --pprof")
	}
	f, err := os.Create(r.o.CPUProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	d := r.o.ProfileTime
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", r.chutes.PprofAddr, int(d.Seconds())))
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	r.c.plain(r.ctx, chatURL(r.chutes), chatBody(ModelOK, false, bodySize), r.o.Clients, d+500*time.Millisecond, 0)
	if err := <-errc; err != nil {
		return err
	}
	r.logf("CPU profile of %s written to %s", d, r.o.CPUProfile)
	return nil
}

func (r *runner) streamScenario() error {
	body := chatBody(ModelOK, true, bodySize)
	q := streamQuery(r.o.Events, r.o.Gap)
	r.res.stream = r.targetScenario(func(t *Target, warm bool) sample {
		d := r.o.StreamDuration
		if warm {
			d = 200 * time.Millisecond
		}
		return r.c.streams(r.ctx, chatURL(t)+q, body, r.o.Events, r.o.StreamClients, d)
	})
	return nil
}

// failoverLegs compares a request whose first model fails, through the
// proxy, with the second model served directly and through the proxy, and
// with more legs for the models in extra, through the proxy.
func (r *runner) failoverLegs(first string, extra ...string) []leg {
	one := func(name string, t *Target, model string) leg {
		body := chatBody(model, false, bodySize)
		return leg{name: name + model, t: t, run: func() sample {
			return r.c.plain(r.ctx, chatURL(t), body, 1, 0, r.o.FailoverCount)
		}}
	}
	legs := []leg{one("direct ", r.targets[0], ModelBackup), one("proxied ", r.chutes, ModelBackup), one("proxied ", r.chutes, first)}
	for _, m := range extra {
		legs = append(legs, one("proxied ", r.chutes, m))
	}
	return legs
}

// warm runs each leg once, before its upstream calls are counted.
func warm(legs []leg) {
	for _, l := range legs {
		l.run()
	}
}

func (r *runner) refusedScenario() error {
	// One request first: it must be served by the backup after 2 attempts.
	rep, err := r.c.post(r.ctx, chatURL(r.chutes), chatBody(ModelRefused, false, bodySize))
	if err != nil {
		return fmt.Errorf("a request for %s through the proxy: %w", ModelRefused, err)
	}
	if rep.model != ModelBackup || rep.attempts != "2" {
		return fmt.Errorf("a request for %s was served by %q after %s attempts; want %s after 2", ModelRefused, rep.model, rep.attempts, ModelBackup)
	}
	legs := r.failoverLegs(ModelRefused)
	warm(legs)
	before := r.up.Requests(ModelRefused)
	got := r.rounds(legs, nil)
	r.res.refusedCalls = r.up.Requests(ModelRefused) - before
	for _, s := range got[legs[2].name] {
		r.res.refusedReqs += s.n + s.errs
	}
	r.res.refused = aggregate("vs direct "+ModelBackup, got[legs[2].name], got[legs[0].name])
	return nil
}

func (r *runner) breakerScenario() error {
	if err := r.openBreaker(); err != nil {
		return err
	}
	// The skip's own cost, apart from the body rewrite that every fallback
	// pays: the backup asked for by an alias is rewritten too.
	legs := r.failoverLegs(ModelDead, AliasBackup)
	warm(legs)
	before := r.up.Requests(ModelDead)
	got := r.rounds(legs, nil)
	r.res.deadCalls = r.up.Requests(ModelDead) - before
	dead := got[legs[2].name]
	r.res.breaker = aggregate("vs proxied "+ModelBackup, dead, got[legs[1].name])
	r.res.breakerVsAlias = aggregate("vs proxied "+AliasBackup+" (rewritten, no skip)", dead, got[legs[3].name])
	return nil
}

// openBreaker sends requests for ModelDead until the proxy answers them
// with one upstream attempt: the dead model's breaker is open.
func (r *runner) openBreaker() error {
	body := chatBody(ModelDead, false, bodySize)
	for range 20 {
		rep, err := r.c.post(r.ctx, chatURL(r.chutes), body)
		if err != nil {
			return fmt.Errorf("a request for %s through the proxy: %w", ModelDead, err)
		}
		if rep.attempts == "1" && rep.model == ModelBackup {
			return nil
		}
	}
	return fmt.Errorf("the breaker of %s did not open after 20 requests", ModelDead)
}

// largeBody sends 1 MB bodies whose model is rewritten (ModelDead's breaker
// is open, so they go to the backup with the model replaced) and reads what
// the binary allocates per request.
func (r *runner) largeBody() error {
	if err := r.openBreaker(); err != nil {
		return err
	}
	rewrite, direct := chatBody(ModelDead, false, largeSize), chatBody(ModelBackup, false, largeSize)
	n := r.o.LargeCount
	var ds, ps []sample
	var allocs []float64
	for range r.o.Rounds {
		ds = append(ds, r.c.plain(r.ctx, chatURL(r.targets[0]), direct, 1, 0, n))
		m0, err0 := r.chutes.Mem(false)
		s := r.c.plain(r.ctx, chatURL(r.chutes), rewrite, 1, 0, n)
		m1, err1 := r.chutes.Mem(false)
		ps = append(ps, s)
		if err0 == nil && err1 == nil && m1.HaveHeap && s.n > 0 {
			allocs = append(allocs, float64(m1.TotalAlloc-m0.TotalAlloc)/float64(s.n))
		}
	}
	r.res.large = aggregate("large", ps, ds)
	r.res.largeAlloc = median(allocs)
	return nil
}

// concurrent opens Concurrent streams at once through each target and
// reads the binary's memory while all of them are open.
func (r *runner) concurrent() error {
	body := chatBody(ModelOK, true, bodySize)
	q := streamQuery(r.o.ConcurrentEvents, r.o.ConcurrentGap)
	n := r.o.Concurrent
	r.res.conc = map[string]*Agg{}
	for _, t := range r.targets {
		var before, peak Mem
		var err0, err1 error
		if t == r.chutes {
			before, err0 = t.Mem(true)
		}
		s := r.c.concurrent(r.ctx, chatURL(t)+q, body, r.o.ConcurrentEvents, n, func() {
			if t == r.chutes && err0 == nil {
				peak, err1 = t.Mem(true)
			}
		})
		r.c.Close()
		if t == r.chutes && err0 == nil && err1 == nil {
			r.res.concRSS = (float64(peak.RSS) - float64(before.RSS)) / float64(n)
			if peak.HaveHeap {
				r.res.concHeap = (float64(peak.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
				r.res.concStack = (float64(peak.StackInuse) - float64(before.StackInuse)) / float64(n)
			}
		}
		a := aggregate(t.Name, []sample{s}, nil)
		r.res.conc[t.Name] = a
		r.logf("  %d streams via %s: %d ok, %d errors %s", n, t.Name, a.N, a.Errors, a.FirstErr)
	}
	return nil
}
