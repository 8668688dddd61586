package failover

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// ErrHedgeLost ends the attempt of a hedged pair whose first token came
// second: the other attempt serves, this one gives up and is not counted
// against its model.
var ErrHedgeLost = errors.New("lost the hedge: the other model's first token came first")

// Do walks the chain of the requested model. try is called at most
// max_attempts times; it returns nil when a model is committed. The returned
// error is nil on success, ErrExhausted when the chain ran out, or the
// failure that must go back to the client as is (Classify's Return, or the
// first 401/402/403 when no provider served), or the context's error when
// the client went away.
//
// With [failover] hedge, an attempt that passes its model's p95 time to
// first token with no token is joined by an attempt of the next model; try
// is then called from two goroutines at once, and the one whose
// FirstToken comes second must give up (FirstToken says so).
func (r *Router) Do(ctx context.Context, req Request, try TryFunc) (res Result, err error) {
	chain := r.Resolve(req.Model)
	if req.From != "" {
		if i := slices.Index(chain, req.From); i >= 0 {
			chain = chain[i:]
		} else {
			chain = append([]string{req.From}, chain...)
		}
	}
	w := &walk{ctx: ctx, r: r, cfg: r.table.Load().cfg, req: req, try: try, chain: chain,
		res: Result{Requested: req.Model, Attempts: make([]Attempt, 0, len(chain))}}
	w.max = w.cfg.Failover.MaxAttempts
	if req.MaxAttempts > 0 {
		w.max = min(w.max, req.MaxAttempts)
	}
	if o, ok := r.obs.(WalkObserver); ok {
		defer func() { o.Walked(w.res, err) }()
	}
	for w.next < len(chain) && w.made < w.max {
		if err := ctx.Err(); err != nil {
			return w.res, err
		}
		run, err := w.admitNext(ctx)
		if err != nil {
			return w.res, err
		}
		if run == nil {
			continue // skipped
		}
		var o outcome
		if after := w.hedgeAfter(run.m.ID); after > 0 && w.made < w.max {
			o = w.hedged(ctx, run, after)
		} else {
			o = w.wait(ctx, run)
		}
		switch {
		case o.served:
			w.res.Model = o.id
			return w.res, nil
		case o.stop != nil:
			return w.res, o.stop
		}
	}
	if w.refused != nil {
		return w.res, w.refused
	}
	return w.res, ErrExhausted
}

// walk is one Do's state.
type walk struct {
	ctx   context.Context // the request's, for the log lines
	r     *Router
	cfg   *config.Config
	req   Request
	try   TryFunc
	chain []string
	next  int // the chain's next model to consider
	made  int // upstream attempts started
	max   int
	res   Result
	mu    sync.Mutex // guards res while a hedged pair runs
	// refused is the first 401/402/403, and refusers the providers it and
	// any later one came from: their other models are skipped.
	refused  error
	refusers []string
}

// run is one attempt in flight.
type run struct {
	m     *Model
	done  func(error)
	slot  slot
	start time.Time
	res   chan error // hedged runs only: the try's result
}

// outcome is what a settled attempt means for the walk.
type outcome struct {
	id     string
	served bool
	stop   error // the walk ends with this error (Return, Stop)
}

// admitNext takes the chain's next model: it records a skip and returns
// nil, or returns the admitted attempt, not yet started. An error is the
// context's, while waiting for a limiter slot.
func (w *walk) admitNext(ctx context.Context) (*run, error) {
	id := w.chain[w.next]
	w.next++
	if p, _ := w.cfg.Split(id); slices.Contains(w.refusers, p) {
		w.record(Attempt{Model: id, Kind: KindProviderRefused,
			Reason: "skipped: " + p + " refused the key or wants payment (see the attempt before)"}, 0)
		return nil, nil
	}
	m := w.r.Model(id)
	wait, skip, ok := w.r.admit(m, w.req.PromptTokens, len(w.chain) > 1)
	if !ok {
		w.record(skip, 0)
		return nil, nil
	}
	if err := wait.wait(ctx); err != nil {
		return nil, err
	}
	done, err := m.breaker.Load().Allow()
	if err != nil {
		// Half-open and its one trial request is taken by another: one
		// trial, not one per concurrent user.
		wait.cancel()
		w.record(m.skipOpen(time.Now()), 0)
		return nil, nil
	}
	w.made++
	return &run{m: m, done: done}, nil
}

// launch starts ru's try in its own goroutine, with its own cancel, as one
// of a hedged pair sharing race.
func (w *walk) launch(ctx context.Context, ru *run, race *atomic.Int32, id int32) context.CancelCauseFunc {
	ru.slot.race, ru.slot.id, ru.slot.ch = race, id, make(chan struct{})
	ru.res = make(chan error, 1)
	ctx, cancel := context.WithCancelCause(context.WithValue(ctx, slotKey{}, &ru.slot))
	ru.start = time.Now()
	go func() { ru.res <- w.try(ctx, ru.m.ID) }()
	return cancel
}

// wait runs ru alone, in the caller's goroutine, and settles it.
func (w *walk) wait(ctx context.Context, ru *run) outcome {
	ru.start = time.Now()
	err := w.try(context.WithValue(ctx, slotKey{}, &ru.slot), ru.m.ID)
	return w.settle(ru, err)
}

// hedged runs a, and from after on also the chain's next admissible model;
// the first token wins, the other is cancelled and not counted. It returns
// the winner's outcome, or with no winner the last one that ends the walk.
//
// The winner's context is never cancelled here: the proxy goes on reading
// its committed reply under it, and ends it itself.
func (w *walk) hedged(ctx context.Context, a *run, after time.Duration) outcome {
	race := new(atomic.Int32)
	cancelA := w.launch(ctx, a, race, 1)
	alone := func(err error) outcome {
		o := w.settle(a, err)
		if !o.served {
			cancelA(nil)
		}
		return o
	}
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case err := <-a.res:
		return alone(err)
	case <-a.slot.ch:
		return alone(<-a.res)
	case <-t.C:
	}
	var b *run
	for b == nil && w.next < len(w.chain) {
		var err error
		if b, err = w.admitNext(ctx); err != nil {
			break
		}
	}
	if b == nil {
		return alone(<-a.res)
	}
	cancelB := w.launch(ctx, b, race, 2)
	w.r.log.LogAttrs(ctx, slog.LevelInfo, "no token yet: hedging with the next model",
		slog.String("model", a.m.ID), slog.String("hedge", b.m.ID), slog.Duration("after", after))
	var out outcome
	keep := func(o outcome) {
		if o.served || (o.stop != nil && !out.served) {
			out = o
		}
	}
	tokA, tokB := a.slot.ch, b.slot.ch
	for pending := 2; pending > 0; {
		select {
		case <-tokA:
			tokA = nil
			if race.Load() == 1 {
				cancelB(ErrHedgeLost)
			}
		case <-tokB:
			tokB = nil
			if race.Load() == 2 {
				cancelA(ErrHedgeLost)
			}
		case err := <-a.res:
			keep(w.settleHedge(a, err, race.Load() == 2))
			pending--
		case err := <-b.res:
			keep(w.settleHedge(b, err, race.Load() == 1))
			pending--
		}
	}
	// Both have returned: release the contexts of those that did not serve.
	if !out.served || out.id != a.m.ID {
		cancelA(nil)
	}
	if !out.served || out.id != b.m.ID {
		cancelB(nil)
	}
	return out
}

// settleHedge settles one attempt of a hedged pair; lost means the other
// one's first token came first: this one is excluded from its breaker.
func (w *walk) settleHedge(ru *run, err error, lost bool) outcome {
	if lost && err != nil {
		ru.done(errExcluded)
		w.record(Attempt{Model: ru.m.ID, Kind: KindCanceled, Err: err, Reason: ErrHedgeLost.Error(),
			DurationMS: time.Since(ru.start).Milliseconds()}, time.Since(ru.start))
		return outcome{id: ru.m.ID}
	}
	return w.settle(ru, err)
}

// settle records an attempt that ended with err and says what it means.
func (w *walk) settle(ru *run, err error) outcome {
	elapsed := time.Since(ru.start)
	if tok := ru.slot.tok; !tok.IsZero() {
		elapsed = tok.Sub(ru.start)
	}
	a, action := ru.m.settle(err, ru.done, !w.cfg.Failover.NoCooling)
	a.DurationMS = elapsed.Milliseconds()
	w.record(a, elapsed)
	id := ru.m.ID
	switch {
	case err == nil:
		return outcome{id: id, served: true}
	case action == SkipProvider:
		p, _ := w.cfg.Split(id)
		w.mu.Lock()
		w.refusers = append(w.refusers, p)
		w.refused = cmp.Or(w.refused, err)
		w.mu.Unlock()
		w.r.log.LogAttrs(w.ctx, slog.LevelInfo, "provider refused the key or wants payment, trying other providers",
			slog.String("model", id), slog.String("provider", p), slog.Int("status", a.Status), slog.String("reason", a.Reason))
		return outcome{id: id}
	case action != Next:
		return outcome{id: id, stop: err}
	}
	w.r.log.LogAttrs(w.ctx, slog.LevelInfo, "model failed, trying the next",
		slog.String("model", id), slog.Int("status", a.Status), slog.String("reason", a.Reason))
	return outcome{id: id}
}

// record appends a to the walk's record and tells the observer.
func (w *walk) record(a Attempt, d time.Duration) {
	w.mu.Lock()
	w.res.Attempts = append(w.res.Attempts, a)
	w.mu.Unlock()
	if w.r.obs != nil {
		w.r.obs.Attempted(a.Model, a, d)
	}
}

// hedgeAfter is when an attempt of model is joined by the next model's:
// its p95 time to first token, with [failover] hedge and enough history,
// and only when the chain has a next model; 0 means no hedge.
func (w *walk) hedgeAfter(model string) time.Duration {
	if !w.cfg.Failover.Hedge || w.next >= len(w.chain) {
		return 0
	}
	p95, ok := w.r.p95(model)
	if !ok {
		return 0
	}
	return p95
}

type slotKey struct{}

// slot is what an attempt's try shares with the walk: when its first token
// came, and for a hedged pair, which one came first.
type slot struct {
	tok  time.Time     // set once, in the try's goroutine
	ch   chan struct{} // hedged: closed at the first token
	race *atomic.Int32 // hedged: the winner's id
	id   int32
}

// FirstToken marks, from inside a TryFunc and in its goroutine, the moment
// its attempt's first token arrived, and reports whether the attempt may
// go on. A try that returns later than that (a plain reply read whole
// before it is committed) is observed with its time to first token, which
// is what the health statistics and learned cut-offs are about, not the
// length of the reply. When the attempt runs as one of a hedged pair whose
// other first token came first, it reports false: the try must then give
// up and return ErrHedgeLost.
func FirstToken(ctx context.Context) bool {
	s, ok := ctx.Value(slotKey{}).(*slot)
	if !ok {
		return true
	}
	won := s.race == nil || s.race.CompareAndSwap(0, s.id) || s.race.Load() == s.id
	if s.tok.IsZero() {
		s.tok = time.Now()
		if s.ch != nil {
			close(s.ch)
		}
	}
	return won
}

// Latencies is what learned cut-offs and hedging read: the recent times to
// first token of a model's served attempts. The Observer (health's Monitor)
// provides it when it keeps them.
type Latencies interface {
	// FirstTokenP95 returns the p95 time to first token of model's recent
	// served attempts, and how many there were.
	FirstTokenP95(model string) (p95 time.Duration, samples int)
}

// MinSamples is how many recent served attempts a model needs before its
// p95 is trusted for a learned cut-off or a hedge.
const MinSamples = 20

func (r *Router) p95(model string) (time.Duration, bool) {
	l, ok := r.obs.(Latencies)
	if !ok {
		return 0, false
	}
	p95, n := l.FirstTokenP95(model)
	return p95, n >= MinSamples && p95 > 0
}

// CutOff is how long an attempt of model may wait for its first token:
// with [failover] learned_cutoff and enough history, max(cutoff_floor,
// cutoff_factor × its p95), never more than limit (first_byte_timeout);
// limit otherwise. learned says which.
func (r *Router) CutOff(model string, limit time.Duration) (d time.Duration, learned bool) {
	f := r.table.Load().cfg.Failover
	if !f.LearnedCutoff {
		return limit, false
	}
	p95, ok := r.p95(model)
	if !ok {
		return limit, false
	}
	d = max(f.CutoffFloor.D(), time.Duration(f.CutoffFactor*float64(p95)))
	if d >= limit {
		return limit, false
	}
	return d, true
}
