// Package failover walks a model's fallback chain: for each model it asks the
// model's rate limiter and circuit breaker, makes one attempt, and classifies
// the outcome to decide whether the next model is tried.
package failover

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/human"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Skip reasons kinds, for Attempt.Kind.
const (
	KindServed      = "served"
	KindFailed      = "failed"
	KindReturned    = "returned"
	KindBreakerOpen = "breaker_open"
	KindCooling     = "cooling"
	KindLocalLimit  = "local_limit"
	KindCanceled    = "canceled"
	KindContext     = "context_too_small"
	// KindProviderRefused: skipped because the model's provider refused
	// its key or wanted payment on an earlier model of the chain.
	KindProviderRefused = "provider_refused"
)

// Attempt is one model's part in a request: an upstream attempt, or a skip
// (Status 0) with the reason.
type Attempt struct {
	Model      string `json:"model"`
	Status     int    `json:"status"`
	Reason     string `json:"reason"`
	DurationMS int64  `json:"duration_ms"`

	// Kind says what happened (KindServed, KindBreakerOpen, ...).
	Kind string `json:"-"`
	// Err is the attempt's error, nil when it served.
	Err error `json:"-"`
	// RetryAfter is when the model may be tried again, for skips and 429s.
	RetryAfter time.Duration `json:"-"`
}

// Upstream reports whether an upstream call was made.
func (a Attempt) Upstream() bool {
	return a.Kind == KindServed || a.Kind == KindFailed || a.Kind == KindReturned || a.Kind == KindCanceled
}

// Result is the walk's record: the model that served ("" if none) and every
// attempt and skip in order.
type Result struct {
	Requested string
	Model     string
	Attempts  []Attempt
}

// UpstreamAttempts counts the attempts that reached the upstream.
func (r *Result) UpstreamAttempts() int {
	n := 0
	for _, a := range r.Attempts {
		if a.Upstream() {
			n++
		}
	}
	return n
}

// ErrExhausted is returned when no model of the chain served: every one
// failed, was skipped, or max_attempts ran out. Result.Attempts says why.
var ErrExhausted = errors.New("no model of the chain could serve the request")

// TryFunc makes one upstream attempt with model. It returns nil once the
// first byte of a successful response is in hand (the model is then
// committed), or the failure.
type TryFunc func(ctx context.Context, model string) error

// Observer hears about every attempt; health keeps its statistics with it.
// Implementations must be cheap and must not block.
type Observer interface {
	Attempted(model string, a Attempt, latency time.Duration)
}

// WalkObserver, when the Observer implements it too, hears the outcome of
// every walk (to count failovers from one model to the next).
type WalkObserver interface {
	Walked(res Result, err error)
}

// Router resolves models and chains from the config and walks them. Its
// per-model state survives config reloads for models still configured.
type Router struct {
	table atomic.Pointer[table]
	log   *slog.Logger
	obs   Observer
	// contextLength returns a model's context window in tokens, 0 when
	// unknown; nil means never known.
	contextLength func(id string) int

	mu     sync.RWMutex
	models map[string]*Model
}

// table is the part of the config the router reads on every request,
// resolved once per load.
type table struct {
	cfg    *config.Config
	names  map[string]string   // id or alias → id
	folded map[string]string   // lower-case id or alias → id
	chains map[string][]string // id → [id, fallback ids...]
}

// New returns a router for cfg. log may be nil; obs may be nil.
func New(cfg *config.Config, log *slog.Logger, obs Observer) *Router {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{log: log.With("component", "failover"), obs: obs, models: map[string]*Model{}}
	r.Update(cfg)
	return r
}

// Update swaps in a new config. Models still configured keep their breaker,
// limiter and cooling state; changed limits apply at once.
func (r *Router) Update(cfg *config.Config) {
	t := &table{cfg: cfg, names: map[string]string{}, folded: map[string]string{}, chains: map[string][]string{}}
	for _, m := range cfg.Models {
		t.names[m.ID] = m.ID
	}
	for _, m := range cfg.Models {
		for _, a := range m.Aliases {
			t.names[a] = m.ID
		}
	}
	for _, m := range cfg.Models {
		chain := []string{m.ID}
		seen := map[string]bool{m.ID: true}
		for _, f := range m.Fallbacks {
			id := f
			if v, ok := t.names[f]; ok {
				id = v
			}
			if !seen[id] {
				seen[id] = true
				chain = append(chain, id)
			}
		}
		t.chains[m.ID] = chain
	}
	for n, id := range t.names {
		t.folded[strings.ToLower(n)] = id
	}
	r.table.Store(t)

	r.mu.Lock()
	defer r.mu.Unlock()
	for id, m := range r.models {
		m.apply(cfg.LimitsFor(id), r)
	}
}

// Config returns the config in force.
func (r *Router) Config() *config.Config { return r.table.Load().cfg }

// Resolve maps a client's model name (an id or an alias) to its chain of
// model ids. A name with no [[models]] entry is a chain of itself.
func (r *Router) Resolve(name string) []string {
	t := r.table.Load()
	id, ok := t.names[name]
	if !ok {
		// Clients sometimes differ in case only ("deepseek-ai/deepseek-r1").
		id, ok = t.folded[strings.ToLower(name)]
	}
	if !ok {
		return []string{name}
	}
	return t.chains[id]
}

// Aliases returns alias → id for every configured alias.
func (r *Router) Aliases() map[string]string {
	t := r.table.Load()
	out := map[string]string{}
	for n, id := range t.names {
		if n != id {
			out[n] = id
		}
	}
	return out
}

// maxAdHoc bounds how many models without a [[models]] table the router
// keeps state for, so that a client sending random model names cannot grow
// memory without end; past it such models get state that lives for one
// request.
const maxAdHoc = 4096

// Model returns the state of model id, creating it with the config's limits.
func (r *Router) Model(id string) *Model {
	r.mu.RLock()
	m, ok := r.models[id]
	r.mu.RUnlock()
	if ok {
		return m
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok = r.models[id]
	if !ok {
		t := r.table.Load()
		m = newModel(id, t.cfg.LimitsFor(id), r)
		if _, configured := t.chains[id]; configured || len(r.models) < maxAdHoc {
			r.models[id] = m
		}
	}
	return m
}

// Models returns the state of every model seen or configured so far.
func (r *Router) Models() []*Model {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Model, 0, len(r.models))
	for _, m := range r.models {
		out = append(out, m)
	}
	return out
}

// Request is what the walk needs to know of a client's request.
type Request struct {
	// Model is the client's model name: an id or an alias.
	Model string
	// PromptTokens is a cheap estimate of the prompt's size (0 = unknown);
	// a fallback whose context window is smaller is skipped.
	PromptTokens int
	// From starts the walk at this model of the chain (a resumed stream
	// goes back to the model that was serving it); "" = the chain's head.
	From string
	// MaxAttempts, when above 0, bounds the walk below [failover]
	// max_attempts (what a resumed stream has left).
	MaxAttempts int
}

// EstimateTokens guesses a prompt's token count from its body size, erring
// low (4 bytes a token, less the JSON around the text) so that a model is
// tried rather than skipped when in doubt.
func EstimateTokens(bodyBytes int) int { return bodyBytes / 4 }

// admit decides whether m may be tried now: it skips a model whose context
// window is too small for the prompt (only when the chain has another), whose
// breaker is open, which is cooling after a 429, or whose limiter has no
// slot within max_wait. On admission the limiter slot is reserved.
func (r *Router) admit(m *Model, promptTokens int, others bool) (waiter, Attempt, bool) {
	if skip, ok := r.fits(m.ID, promptTokens); !ok && others {
		return waiter{}, skip, false
	}
	now := time.Now()
	if skip, ok := m.check(now); !ok {
		return waiter{}, skip, false
	}
	return m.reserve(now)
}

// settle records an attempt's outcome in the breaker and the 429 cooling,
// and says what the walk does next.
func (m *Model) settle(err error, done func(error), cool bool) (Attempt, Action) {
	a := Attempt{Model: m.ID, Err: err}
	if err == nil {
		done(nil)
		m.succeeded()
		a.Kind, a.Status, a.Reason = KindServed, 200, "served"
		return a, Return
	}
	action, failure := Classify(err)
	a.Reason = Describe(err)
	var ue *UpstreamError
	if errors.As(err, &ue) {
		a.Status = ue.Status
	}
	switch {
	case action == Stop:
		done(errExcluded)
		a.Kind = KindCanceled
	case failure:
		done(err)
		a.Kind = KindFailed
	default:
		done(nil) // the model answered; the problem is the request's
		a.Kind = KindReturned
	}
	if a.Status == 429 && cool {
		a.RetryAfter = m.cool(time.Now(), ue.RetryAfter)
	}
	return a, action
}

// SetContextLengths tells the router where context windows are known (the
// upstream's model list). Call it before serving.
func (r *Router) SetContextLengths(f func(id string) int) { r.contextLength = f }

// fits skips a model whose context window is known to be smaller than the
// prompt, so that a long roleplay does not land on a model that rejects it.
func (r *Router) fits(id string, tokens int) (Attempt, bool) {
	if tokens <= 0 || r.contextLength == nil {
		return Attempt{}, true
	}
	n := r.contextLength(id)
	if n <= 0 || tokens <= n {
		return Attempt{}, true
	}
	return Attempt{Model: id, Kind: KindContext,
		Reason: "context " + kTokens(n) + " < ~" + kTokens(tokens) + " tokens"}, false
}

func kTokens(n int) string {
	if n >= 1000 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// errExcluded settles a breaker's half-open trial without counting it.
var errExcluded = errors.New("excluded from breaker counts")

// Model is one model's health state: breaker, limiter and 429 cooling.
type Model struct {
	ID      string
	breaker atomic.Pointer[gobreaker.TwoStepCircuitBreaker[struct{}]]
	limiter *rate.Limiter

	limits    atomic.Pointer[config.Limits]
	failures  atomic.Int64 // breaker threshold, read by ReadyToTrip
	openUntil atomic.Int64 // unix nanos; set when the breaker opens
	coolUntil atomic.Int64 // unix nanos; after a 429
	strikes   atomic.Int32 // consecutive 429s, for the cooling backoff
}

func newModel(id string, l config.Limits, r *Router) *Model {
	m := &Model{ID: id}
	m.limiter = rate.NewLimiter(rate.Inf, 1)
	m.breaker.Store(m.newBreaker(l.Cooldown, r))
	m.apply(l, r)
	return m
}

func (m *Model) newBreaker(cooldown time.Duration, r *Router) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	log := r.log
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        m.ID,
		MaxRequests: 1,
		Timeout:     cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return int64(c.ConsecutiveFailures) >= m.failures.Load()
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, errExcluded) || errors.Is(err, context.Canceled)
		},
		// Runs under the breaker's lock: record and log, never call back.
		OnStateChange: func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				m.openUntil.Store(time.Now().Add(m.limits.Load().Cooldown).UnixNano())
			}
			log.Warn("breaker state changed", "model", name, "from", from.String(), "to", to.String())
		},
	})
}

// apply sets new limits. Rate and burst change in place; a changed cooldown
// needs a new breaker (gobreaker's Timeout is fixed), which is only swapped
// in while the breaker is closed so that a reload never revives a dead model.
func (m *Model) apply(l config.Limits, r *Router) {
	old := m.limits.Swap(&l)
	m.failures.Store(int64(max(l.Failures, 1)))
	if l.RequestsPerMinute > 0 {
		m.limiter.SetLimit(rate.Limit(l.RequestsPerMinute / 60))
		m.limiter.SetBurst(max(l.Burst, 1))
	} else {
		m.limiter.SetLimit(rate.Inf)
	}
	if old != nil && old.Cooldown != l.Cooldown && m.State() == gobreaker.StateClosed {
		m.breaker.Store(m.newBreaker(l.Cooldown, r))
	}
}

// State is the breaker's state: closed, open or half-open.
func (m *Model) State() gobreaker.State { return m.breaker.Load().State() }

// Counts returns the breaker's counters.
func (m *Model) Counts() gobreaker.Counts { return m.breaker.Load().Counts() }

// Limits returns the limits in force for the model.
func (m *Model) Limits() config.Limits { return *m.limits.Load() }

// Tokens is the limiter's available tokens now (+Inf when unlimited).
func (m *Model) Tokens() float64 { return m.limiter.Tokens() }

// CoolingUntil is when a model that answered 429 may be tried again (zero
// when it is not cooling).
func (m *Model) CoolingUntil(now time.Time) time.Time {
	u := m.coolUntil.Load()
	if u == 0 || now.UnixNano() >= u {
		return time.Time{}
	}
	return time.Unix(0, u)
}

// OpenUntil is when an open breaker lets a trial request through.
func (m *Model) OpenUntil() time.Time {
	if m.State() != gobreaker.StateOpen {
		return time.Time{}
	}
	return time.Unix(0, m.openUntil.Load())
}

// check skips a model whose breaker is open or which is cooling after a 429.
func (m *Model) check(now time.Time) (Attempt, bool) {
	if m.State() == gobreaker.StateOpen {
		return m.skipOpen(now), false
	}
	if until := m.CoolingUntil(now); !until.IsZero() {
		d := until.Sub(now)
		return Attempt{Model: m.ID, Kind: KindCooling, RetryAfter: d,
			Reason: "overloaded (429), resting for " + human.Duration(d) + " before the next try"}, false
	}
	return Attempt{}, true
}

func (m *Model) skipOpen(now time.Time) Attempt {
	until := time.Unix(0, m.openUntil.Load())
	d := until.Sub(now)
	reason := "circuit open until " + until.Local().Format("15:04:05") + " after repeated failures"
	if d <= 0 {
		d = time.Second
		reason = "circuit half-open: a trial request is in flight"
	}
	return Attempt{Model: m.ID, Kind: KindBreakerOpen, RetryAfter: d, Reason: reason}
}

// waiter waits for a limiter reservation; cancel gives the token back.
type waiter struct {
	res   *rate.Reservation
	delay time.Duration
}

func (w waiter) cancel() {
	if w.res != nil {
		w.res.Cancel()
	}
}

// wait blocks until the reservation is due or ctx ends (then the token is
// returned).
func (w waiter) wait(ctx context.Context) error {
	if w.delay <= 0 {
		return nil
	}
	t := time.NewTimer(w.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		w.cancel()
		return ctx.Err()
	}
}

// reserve takes a limiter token, or skips the model when the token would
// come later than max_wait.
func (m *Model) reserve(now time.Time) (waiter, Attempt, bool) {
	if m.limiter.Limit() == rate.Inf {
		return waiter{}, Attempt{}, true
	}
	res := m.limiter.ReserveN(now, 1)
	if !res.OK() {
		return waiter{}, Attempt{Model: m.ID, Kind: KindLocalLimit, RetryAfter: time.Minute,
			Reason: "local rate limit admits no request (burst 0)"}, false
	}
	d := res.DelayFrom(now)
	if maxWait := m.limits.Load().MaxWait; d > maxWait {
		res.CancelAt(now)
		l := m.limits.Load()
		return waiter{}, Attempt{Model: m.ID, Kind: KindLocalLimit, RetryAfter: d,
			Reason: "local rate limit of " + trimFloat(l.RequestsPerMinute) + " requests/minute: next slot in " + human.Duration(d)}, false
	}
	return waiter{res: res, delay: d}, Attempt{}, true
}

// cool marks a model that answered 429 as resting: until the upstream's
// Retry-After when given, else an own backoff of 1 s, 2 s, 4 s ... 30 s,
// because Chutes rarely sends Retry-After and trying again at once only
// collects more 429s.
//
// A strike counts once per resting episode: the 429s of requests already
// in flight when the first one came back say nothing new, and used to turn
// one burst into a rest of many seconds.
func (m *Model) cool(now time.Time, retryAfter time.Duration) time.Duration {
	var n int32
	if until := m.coolUntil.Load(); now.UnixNano() >= until {
		n = m.strikes.Add(1)
	} else {
		n = max(m.strikes.Load(), 1)
	}
	d := retryAfter
	if d <= 0 {
		d = time.Second << min(n-1, 5)
		d = min(d, 30*time.Second)
	}
	if until := now.Add(d).UnixNano(); until > m.coolUntil.Load() {
		m.coolUntil.Store(until)
	}
	return d
}

// errCut is a reply that broke off after its commit, for the breaker.
var errCut = errors.New("the reply broke off after its first token")

// Cut tells model's breaker that a reply it had started broke off: a
// stream cut, stalled or ended without [DONE] after its commit. It counts
// as a failure, as one before the first token does, so that a model whose
// miners keep dying mid-reply opens its breaker too. A breaker that is
// open, or half-open with its trial taken, needs no telling.
func (r *Router) Cut(model string) {
	if done, err := r.Model(model).breaker.Load().Allow(); err == nil {
		done(errCut)
	}
}

func (m *Model) succeeded() {
	m.strikes.Store(0)
}
