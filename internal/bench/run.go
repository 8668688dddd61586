package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"time"
)

// Options bound a run. The defaults (see cmd/chutes-bench) keep a whole run
// under two minutes.
type Options struct {
	Binary     string   // chutes-proxy binary to run; "" = in-process
	BinaryEnv  []string // extra KEY=VALUE for the binary, e.g. GOMAXPROCS=1
	FakeListen string   // address of the fake upstream; "" = 127.0.0.1:0
	WithBare   bool     // add a bare httputil.ReverseProxy
	WithTuned  bool     // add one with chutes-proxy's idle-connection pool
	WithRelay  bool     // add a Go TCP relay: no HTTP, the floor of a Go proxy
	Externals  []*Target
	Only       map[string]bool // scenarios to run; empty = all

	Rounds   int
	Duration time.Duration // per round and target, plain scenarios
	Clients  int           // the plain-many scenario's clients (16)
	BodySize int           // plain request body bytes

	StreamClients  int
	StreamDuration time.Duration
	Events         int
	Gap            time.Duration

	FailoverCount int // requests per round and leg, failover scenarios

	LargeBodyMB int
	LargeCount  int

	Concurrent       int
	ConcurrentEvents int
	ConcurrentGap    time.Duration

	Startups int

	CPUProfile  string
	ProfileTime time.Duration

	Out io.Writer // the report (markdown)
	Log io.Writer // progress
}

// Scenario names, for --only.
var Scenarios = []string{"plain16", "plain1", "stream", "refused", "breaker", "largebody", "concurrent", "startup"}

func (o *Options) on(name string) bool { return len(o.Only) == 0 || o.Only[name] }

type runner struct {
	o       *Options
	ctx     context.Context
	c       *Client
	up      *Upstream
	chutes  *Target
	targets []*Target // direct first, then chutes, bare, externals
	res     results
}

// results are the figures the targets table is made of.
type results struct {
	mode                    string
	plain16, plain1, stream map[string]*Agg
	refused, breaker        *Agg
	breakerVsDirect         *Agg
	breakerVsAlias          *Agg
	refusedCalls, deadCalls int64
	refusedReqs             int
	largeAlloc              float64 // bytes allocated by the proxy per large request
	largeBody               int
	largeAdded              time.Duration
	largeErr                string
	conc                    map[string]*Agg
	concHeap, concStack     float64 // per stream
	concRSS                 float64 // per stream, binary only
	peakRSS, idleRSS        uint64
	idleRSSs                []uint64
	startup                 time.Duration
	startups                []time.Duration
	haveHeap                bool
	profile                 string
}

// Run runs every scenario and writes the report.
func Run(ctx context.Context, o Options) error {
	r := &runner{o: &o, ctx: ctx, c: NewClient()}
	defer r.c.Close()
	up, err := StartUpstream(cmpOr(o.FakeListen, "127.0.0.1:0"))
	if err != nil {
		return fmt.Errorf("the fake upstream: %w", err)
	}
	defer up.Close()
	r.up = up
	r.logf("fake upstream on %s", up.URL)

	dir, err := os.MkdirTemp("", "chutes-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	direct := &Target{Name: "direct", Kind: KindDirect, URL: up.URL}
	if o.Binary != "" {
		bin, err := NewBinary(o.Binary, dir)
		if err != nil {
			return err
		}
		bin.Env = o.BinaryEnv
		if o.on("startup") && o.Startups > 0 {
			for range o.Startups {
				t, d, err := bin.Start(up.URL)
				if err != nil {
					return err
				}
				time.Sleep(100 * time.Millisecond)
				if m, err := t.Mem(false); err == nil {
					r.res.idleRSSs = append(r.res.idleRSSs, m.RSS)
				}
				t.Close()
				r.res.startups = append(r.res.startups, d)
			}
			r.res.startup = median(r.res.startups)
		}
		t, d, err := bin.Start(up.URL)
		if err != nil {
			return err
		}
		defer t.Close()
		r.chutes = t
		r.res.mode = "binary " + o.Binary
		if len(r.res.startups) == 0 {
			r.res.startups = []time.Duration{d}
			r.res.startup = d
		}
		time.Sleep(100 * time.Millisecond)
		if m, err := t.Mem(false); err == nil {
			r.res.idleRSSs = append(r.res.idleRSSs, m.RSS)
		}
		r.res.idleRSS = median(r.res.idleRSSs)
		r.logf("chutes-proxy binary pid %d on %s (listening %s after exec; pprof %q)", t.PID, t.URL, d.Round(time.Microsecond), t.PprofAddr)
	} else {
		t, err := StartInProcess(dir, up.URL)
		if err != nil {
			return err
		}
		defer t.Close()
		r.chutes = t
		r.res.mode = "in-process"
		r.logf("chutes-proxy in-process on %s", t.URL)
	}
	r.targets = []*Target{direct, r.chutes}
	for _, v := range []struct {
		variant string
		on      bool
	}{{Bare, o.WithBare}, {BareTuned, o.WithTuned}, {TCPRelay, o.WithRelay}} {
		if !v.on {
			continue
		}
		start := StartBare
		if o.Binary != "" {
			start = StartBareProcess
		}
		b, err := start(up.URL, v.variant)
		if err != nil {
			return err
		}
		defer b.Close()
		r.targets = append(r.targets, b)
	}
	r.targets = append(r.targets, o.Externals...)
	if err := r.check(); err != nil {
		return err
	}

	started := time.Now()
	steps := []struct {
		name string
		f    func() error
	}{
		{"plain16", r.plain16}, {"plain1", r.plain1}, {"stream", r.streamScenario},
		{"refused", r.refusedScenario}, {"breaker", r.breakerScenario},
		{"largebody", r.largeBody}, {"concurrent", r.concurrent},
	}
	for _, s := range steps {
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

func (r *runner) logf(format string, args ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, "chutes-bench: "+format+"\n", args...)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func chatURL(t *Target) string { return t.URL + "/v1/chat/completions" }

// check sends one request through every target, so that a misconfigured
// external proxy fails the run at once with a clear message.
func (r *runner) check() error {
	body := ChatBody(ModelOK, false, 512)
	for _, t := range r.targets {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		_, err := r.c.post(ctx, chatURL(t), body)
		cancel()
		if err != nil {
			return fmt.Errorf("target %s (%s) does not answer a chat request: %w", t.Name, t.URL, err)
		}
	}
	return nil
}

// leg is one measured side of a round: a target and what is sent to it.
type leg struct {
	name string
	t    *Target
	run  func() Sample
}

// rounds runs every leg once per round, alternating the order (direct
// first, then last), after one short warm-up each. It returns the samples
// by leg name, in round order.
func (r *runner) rounds(legs []leg, warm func(l leg)) map[string][]Sample {
	out := map[string][]Sample{}
	if warm != nil {
		for _, l := range legs {
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
	// CPUPerReq and CPUPerEvent are the serving side's CPU time per request
	// (stream) and per event, 0 when unknown.
	CPUPerReq, CPUPerEvent time.Duration
	Events                 int
	FirstErr               string
	base                   bool
}

func aggregate(name string, s, base []Sample) *Agg {
	a := &Agg{Name: name}
	var rps, ratio []float64
	var p50, p99, ap50, ap99, e50, e99, ae50, ae99, cpr, cpe []time.Duration
	for i, x := range s {
		if x.HaveCPU && x.N > 0 {
			cpr = append(cpr, x.CPU/time.Duration(x.N))
			if x.Events > 0 {
				cpe = append(cpe, x.CPU/time.Duration(x.Events))
			}
		}
		a.N += x.N
		a.Errors += x.Errors
		a.Coalesced += x.Coalesced
		a.Events += x.Events
		if a.FirstErr == "" {
			a.FirstErr = x.FirstErr
		}
		rps = append(rps, x.RPS())
		p50 = append(p50, pct(x.Lat, 50))
		p99 = append(p99, pct(x.Lat, 99))
		e50 = append(e50, pct(x.Delay, 50))
		e99 = append(e99, pct(x.Delay, 99))
		if i < len(base) {
			b := base[i]
			if b.RPS() > 0 {
				ratio = append(ratio, x.RPS()/b.RPS())
			}
			ap50 = append(ap50, pct(x.Lat, 50)-pct(b.Lat, 50))
			ap99 = append(ap99, pct(x.Lat, 99)-pct(b.Lat, 99))
			ae50 = append(ae50, pct(x.Delay, 50)-pct(b.Delay, 50))
			ae99 = append(ae99, pct(x.Delay, 99)-pct(b.Delay, 99))
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

// targetLegs makes one leg per target with run(t).
func (r *runner) targetLegs(run func(t *Target) Sample) []leg {
	var legs []leg
	for _, t := range r.targets {
		legs = append(legs, leg{name: t.Name, t: t, run: func() Sample {
			c0, ok0 := procCPU(t.CPUPIDs)
			s := run(t)
			c1, ok1 := procCPU(t.CPUPIDs)
			s.CPU, s.HaveCPU = c1-c0, ok0 && ok1
			return s
		}})
	}
	return legs
}

func (r *runner) aggregateAll(legs []leg, got map[string][]Sample, base string) map[string]*Agg {
	out := map[string]*Agg{}
	for _, l := range legs {
		a := aggregate(l.name, got[l.name], got[base])
		a.base = l.name == base
		out[l.name] = a
	}
	return out
}

func (r *runner) plainScenario(clients int) map[string]*Agg {
	body := ChatBody(ModelOK, false, r.o.BodySize)
	legs := r.targetLegs(func(t *Target) Sample {
		return r.c.Plain(r.ctx, chatURL(t), body, clients, r.o.Duration, 0)
	})
	got := r.rounds(legs, func(l leg) { r.c.Plain(r.ctx, chatURL(l.t), body, clients, 300*time.Millisecond, 0) })
	return r.aggregateAll(legs, got, "direct")
}

func (r *runner) plain16() error {
	r.res.plain16 = r.plainScenario(r.o.Clients)
	if r.o.CPUProfile != "" {
		return r.profile()
	}
	return nil
}

func (r *runner) plain1() error {
	r.res.plain1 = r.plainScenario(1)
	return nil
}

// profile takes a CPU profile of the proxy under the plain 16-client load:
// from the binary's own --pprof, or of this whole process when in-process
// (client and fake upstream included; focus on proxy frames).
func (r *runner) profile() error {
	body := ChatBody(ModelOK, false, r.o.BodySize)
	d := r.o.ProfileTime
	f, err := os.Create(r.o.CPUProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	if r.chutes.PID != 0 {
		if r.chutes.PprofAddr == "" {
			return errors.New("--cpuprofile with --binary needs a binary with serve --pprof")
		}
		errc := make(chan error, 1)
		go func() {
			resp, err := http.Get(cpuProfileURL(r.chutes.PprofAddr, d))
			if err == nil {
				_, err = io.Copy(f, resp.Body)
				resp.Body.Close()
			}
			errc <- err
		}()
		r.c.Plain(r.ctx, chatURL(r.chutes), body, r.o.Clients, d+500*time.Millisecond, 0)
		if err := <-errc; err != nil {
			return err
		}
		r.res.profile = "binary's /debug/pprof/profile, " + d.String()
	} else {
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		r.c.Plain(r.ctx, chatURL(r.chutes), body, r.o.Clients, d, 0)
		pprof.StopCPUProfile()
		r.res.profile = "whole bench process (in-process proxy), " + d.String()
	}
	r.logf("CPU profile written to %s", r.o.CPUProfile)
	return nil
}

func (r *runner) streamScenario() error {
	body := ChatBody(ModelOK, true, r.o.BodySize)
	q := StreamQuery(r.o.Events, r.o.Gap)
	legs := r.targetLegs(func(t *Target) Sample {
		return r.c.Stream(r.ctx, chatURL(t)+q, body, r.o.Events, r.o.StreamClients, r.o.StreamDuration)
	})
	got := r.rounds(legs, func(l leg) {
		r.c.Stream(r.ctx, chatURL(l.t)+q, body, r.o.Events, r.o.StreamClients, 200*time.Millisecond)
	})
	r.res.stream = r.aggregateAll(legs, got, "direct")
	return nil
}

// failoverLegs compares a request whose first model fails, through the
// proxy, with the second model served directly and through the proxy.
func (r *runner) failoverLegs(first string) ([]leg, string) {
	backupBody, firstBody := ChatBody(ModelBackup, false, r.o.BodySize), ChatBody(first, false, r.o.BodySize)
	n := r.o.FailoverCount
	legs := []leg{
		{name: "direct " + ModelBackup, t: r.targets[0], run: func() Sample {
			return r.c.Plain(r.ctx, chatURL(r.targets[0]), backupBody, 1, 0, n)
		}},
		{name: "proxied " + ModelBackup, t: r.chutes, run: func() Sample {
			return r.c.Plain(r.ctx, chatURL(r.chutes), backupBody, 1, 0, n)
		}},
		{name: "proxied " + first, t: r.chutes, run: func() Sample {
			return r.c.Plain(r.ctx, chatURL(r.chutes), firstBody, 1, 0, n)
		}},
	}
	return legs, "proxied " + first
}

// warmLeg runs a failover leg once before measuring.
func (r *runner) warmLeg(l leg) { l.run() }

func (r *runner) refusedScenario() error {
	// One request first: it must be served by the backup after 2 attempts.
	rep, err := r.c.post(r.ctx, chatURL(r.chutes), ChatBody(ModelRefused, false, r.o.BodySize))
	if err != nil {
		return fmt.Errorf("a request for %s through the proxy: %w", ModelRefused, err)
	}
	if rep.model != ModelBackup || rep.attempts != "2" {
		return fmt.Errorf("a request for %s was served by %q after %s attempts; want %s after 2", ModelRefused, rep.model, rep.attempts, ModelBackup)
	}
	legs, name := r.failoverLegs(ModelRefused)
	for _, l := range legs {
		r.warmLeg(l)
	}
	before := r.up.Refused()
	got := r.rounds(legs, nil)
	r.res.refusedCalls = r.up.Refused() - before
	for _, s := range got[name] {
		r.res.refusedReqs += s.N + s.Errors
	}
	r.res.refused = aggregate(name, got[name], got[legs[0].name])
	r.res.refused.Name = "vs direct " + ModelBackup
	return nil
}

func (r *runner) breakerScenario() error {
	if err := r.openBreaker(); err != nil {
		return err
	}
	legs, name := r.failoverLegs(ModelDead)
	// The skip's own cost, apart from the body rewrite that every
	// fallback pays: the backup asked for by an alias is rewritten too.
	aliasBody := ChatBody(AliasBackup, false, r.o.BodySize)
	aliasLeg := "proxied " + AliasBackup
	legs = append(legs, leg{name: aliasLeg, t: r.chutes, run: func() Sample {
		return r.c.Plain(r.ctx, chatURL(r.chutes), aliasBody, 1, 0, r.o.FailoverCount)
	}})
	for _, l := range legs {
		r.warmLeg(l)
	}
	before := r.up.Dead()
	got := r.rounds(legs, nil)
	r.res.deadCalls = r.up.Dead() - before
	r.res.breakerVsAlias = aggregate(name, got[name], got[aliasLeg])
	r.res.breakerVsAlias.Name = "vs proxied " + AliasBackup + " (rewritten, no skip)"
	r.res.breaker = aggregate(name, got[name], got[legs[1].name])
	r.res.breaker.Name = "vs proxied " + ModelBackup
	r.res.breakerVsDirect = aggregate(name, got[name], got[legs[0].name])
	r.res.breakerVsDirect.Name = "vs direct " + ModelBackup
	return nil
}

// openBreaker sends requests for ModelDead until the proxy answers them
// with one upstream attempt: the dead model's breaker is open.
func (r *runner) openBreaker() error {
	body := ChatBody(ModelDead, false, r.o.BodySize)
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

// largeBody sends a large body whose model is rewritten (ModelDead's
// breaker is open, so the body goes to the backup with the model replaced)
// and measures what the proxy allocates per request.
func (r *runner) largeBody() error {
	if err := r.openBreaker(); err != nil {
		return err
	}
	size := r.o.LargeBodyMB << 20
	r.res.largeBody = size
	rewrite, direct := ChatBody(ModelDead, false, size), ChatBody(ModelBackup, false, size)
	n := r.o.LargeCount
	mem := r.chutes.Mem
	perReq := func(f func() Sample) (Sample, float64) {
		m0, _ := mem(false)
		s := f()
		m1, _ := mem(false)
		if s.N == 0 || !m0.HaveHeap {
			return s, -1
		}
		return s, float64(m1.TotalAlloc-m0.TotalAlloc) / float64(s.N)
	}
	var dAlloc, pAlloc []float64
	var ds, ps []Sample
	for range r.o.Rounds {
		s, a := perReq(func() Sample { return r.c.Plain(r.ctx, chatURL(r.targets[0]), direct, 1, 0, n) })
		ds, dAlloc = append(ds, s), append(dAlloc, a)
		s, a = perReq(func() Sample { return r.c.Plain(r.ctx, chatURL(r.chutes), rewrite, 1, 0, n) })
		ps, pAlloc = append(ps, s), append(pAlloc, a)
	}
	a := aggregate("large", ps, ds)
	r.res.largeAdded = a.AddP50
	if a.Errors > 0 {
		r.res.largeErr = fmt.Sprintf("%d errors: %s", a.Errors, a.FirstErr)
	}
	switch {
	case median(pAlloc) < 0:
		r.res.largeAlloc = -1
	case r.chutes.PID == 0:
		// In-process, TotalAlloc counts the client and the fake upstream
		// too: the direct leg's share is theirs.
		r.res.largeAlloc = median(pAlloc) - median(dAlloc)
	default:
		r.res.largeAlloc = median(pAlloc)
	}
	return nil
}

// concurrent opens Concurrent streams at once through each target and
// reads the proxy's memory while all of them are open.
func (r *runner) concurrent() error {
	body := ChatBody(ModelOK, true, r.o.BodySize)
	q := StreamQuery(r.o.ConcurrentEvents, r.o.ConcurrentGap)
	n := r.o.Concurrent
	r.res.conc = map[string]*Agg{}
	type delta struct{ heap, stack, rss float64 }
	deltas := map[string]delta{}
	for _, t := range r.targets {
		var before, peak Mem
		var ok bool
		measure := t.Kind == KindDirect || t.Kind == KindChutes
		if measure {
			before, _ = r.chutes.Mem(true)
		}
		s := r.c.Concurrent(r.ctx, chatURL(t)+q, body, r.o.ConcurrentEvents, n, func() {
			if measure {
				var err error
				peak, err = r.chutes.Mem(true)
				ok = err == nil
			}
		})
		r.c.Close()
		if ok {
			deltas[t.Name] = delta{
				heap:  (float64(peak.HeapAlloc) - float64(before.HeapAlloc)) / float64(n),
				stack: (float64(peak.StackInuse) - float64(before.StackInuse)) / float64(n),
				rss:   (float64(peak.RSS) - float64(before.RSS)) / float64(n),
			}
			r.res.haveHeap = peak.HaveHeap
		}
		a := aggregate(t.Name, []Sample{s}, nil)
		r.res.conc[t.Name] = a
		r.logf("  %d streams via %s: %d ok, %d errors %s", n, t.Name, a.N, a.Errors, a.FirstErr)
	}
	p, d := deltas[r.chutes.Name], deltas["direct"]
	if r.chutes.PID == 0 {
		// In-process the readings cover the client and the fake too.
		r.res.concHeap, r.res.concStack = p.heap-d.heap, p.stack-d.stack
	} else {
		r.res.concHeap, r.res.concStack, r.res.concRSS = p.heap, p.stack, p.rss
	}
	// Leave the fake's and the client's goroutines time to end.
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
	return nil
}
