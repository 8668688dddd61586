// Package simulator is an in-process stand-in for llm.chutes.ai, the
// OpenAI-compatible Chutes API: an http.Handler whose models can be scripted
// to be healthy, down, overloaded, hanging, cut mid-stream and so on, with
// the exact status codes, bodies and SSE framing the real service sends. It
// backs the proxy's tests, `chutes-proxy demo` and `chutes-proxy simulate`.
//
// Every wait inside a request ends when the client goes away or the
// Simulator is closed, and the handler starts no goroutines, so nothing
// outlives a request.
package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxBody bounds a request body; Chutes' own limit is not published, and
// anything larger is surely a test gone wrong.
const maxBody = 64 << 20

// Outcomes recorded besides the behavior kinds.
const (
	OutcomeUnauthorized = "unauthorized" // 401: missing, malformed or rejected key
	OutcomeBadRequest   = "bad_request"  // 400: body is not JSON or lacks "model"
)

// errClosed is what a wait returns when the Simulator was closed under it.
var errClosed = errors.New("simulator closed")

// Simulator is the fake Chutes API. Create it with New; it is safe for
// concurrent use.
type Simulator struct {
	seed         uint64
	keys         map[string]bool // nil: any cpk_ key
	acceptAnyKey bool

	done      chan struct{}
	closeOnce sync.Once
	seq       atomic.Uint64 // completion ids
	listCalls atomic.Int64  // GET /models

	mu     sync.Mutex
	models map[string]*model
	order  []string // configured models in listing order
	def    *Behavior
}

// model is one model's script and what it has seen. Guarded by Simulator.mu.
type model struct {
	id         string
	b          Behavior
	configured bool // from the scenario or SetBehavior; else only counted
	rng        *rand.Rand

	requests   int
	outcomes   map[string]int
	lastHeader http.Header
	lastBody   []byte
}

// New returns a Simulator playing sc. Behaviors are not validated here; use
// Scenario.Validate (LoadScenario does). An unknown kind answers 500.
func New(sc Scenario) *Simulator {
	s := &Simulator{
		seed:         sc.Seed,
		acceptAnyKey: sc.AcceptAnyKey,
		done:         make(chan struct{}),
		models:       make(map[string]*model),
	}
	if len(sc.Keys) > 0 {
		s.keys = make(map[string]bool, len(sc.Keys))
		for _, k := range sc.Keys {
			s.keys[k] = true
		}
	}
	if sc.DefaultBehavior != nil {
		d := *sc.DefaultBehavior
		s.def = &d
	}
	for _, m := range sc.Models {
		s.setLocked(m.ID, m.Behavior)
	}
	return s
}

// Close unblocks every hanging or pacing request (their connections are cut)
// and makes later inference requests fail with 503. It is idempotent.
func (s *Simulator) Close() {
	s.closeOnce.Do(func() { close(s.done) })
}

func (s *Simulator) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// SetBehavior scripts model from now on; requests already in flight keep the
// behavior they started with. A model not in the scenario is added (and
// listed by /v1/models unless b is not_found).
func (s *Simulator) SetBehavior(id string, b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(id, b)
}

func (s *Simulator) setLocked(id string, b Behavior) {
	m := s.modelLocked(id)
	m.b = b
	if !m.configured {
		m.configured = true
		s.order = append(s.order, id)
	}
}

// modelLocked returns id's state, creating it (unconfigured) if needed.
func (s *Simulator) modelLocked(id string) *model {
	m := s.models[id]
	if m == nil {
		h := fnv.New64a()
		h.Write([]byte(id))
		// One stream per model, so a model's flaky sequence does not
		// depend on the traffic other models get.
		m = &model{id: id, rng: rand.New(rand.NewPCG(s.seed, h.Sum64())), outcomes: make(map[string]int)}
		s.models[id] = m
	}
	return m
}

// Requests returns how many inference requests named model, whatever their
// outcome (auth failures included).
func (s *Simulator) Requests(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.models[model]; m != nil {
		return m.requests
	}
	return 0
}

// Outcomes returns model's request counts by outcome: a behavior kind as
// served (a flaky model's requests count as "down" or "healthy"),
// OutcomeUnauthorized or OutcomeBadRequest. The map is a copy.
func (s *Simulator) Outcomes(model string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int)
	if m := s.models[model]; m != nil {
		for k, v := range m.outcomes {
			out[k] = v
		}
	}
	return out
}

// LastRequest returns copies of the headers and body of the last inference
// request that named model; nil, nil if there was none.
func (s *Simulator) LastRequest(model string) (header http.Header, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.models[model]
	if m == nil || m.lastHeader == nil {
		return nil, nil
	}
	return m.lastHeader.Clone(), append([]byte(nil), m.lastBody...)
}

// ModelListRequests returns how many times /v1/models was fetched.
func (s *Simulator) ModelListRequests() int { return int(s.listCalls.Load()) }

// ServeHTTP routes the Chutes paths, with or without the /v1 prefix.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/v1" || strings.HasPrefix(path, "/v1/") {
		path = path[len("/v1"):]
	}
	switch path {
	case "/models", "/models/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		s.serveModels(w)
	case "/chat/completions", "/completions", "/embeddings":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.serveInference(w, r, endpoint(path))
	default:
		writeDetail(w, http.StatusNotFound, "Not Found")
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeDetail(w, http.StatusMethodNotAllowed, "Method Not Allowed")
}

// request holds the fields of an inference body the simulator looks at.
type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens            int             `json:"max_tokens"`
	MaxCompletionTokens  int             `json:"max_completion_tokens"`
	N                    *int            `json:"n"`
	Messages             json.RawMessage `json:"messages"`
	Prompt               json.RawMessage `json:"prompt"`
	Input                json.RawMessage `json:"input"`
	Tools                json.RawMessage `json:"tools"`
	ToolChoice           json.RawMessage `json:"tool_choice"`
	Logprobs             json.RawMessage `json:"logprobs"` // chat: true; completions: a count
	TopLogprobs          int             `json:"top_logprobs"`
	ContinueFinalMessage bool            `json:"continue_final_message"`
	AddGenerationPrompt  *bool           `json:"add_generation_prompt"` // vLLM: nil means true
}

func (s *Simulator) serveInference(w http.ResponseWriter, r *http.Request, ep endpoint) {
	if s.closed() {
		writeDetail(w, http.StatusServiceUnavailable, "simulator closed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeDetail(w, http.StatusRequestEntityTooLarge, "Request body too large")
		}
		return // otherwise the client is gone
	}
	var req request
	jsonErr := json.Unmarshal(body, &req)

	// Record before judging, so tests can see exactly what arrived even
	// when it was refused.
	s.mu.Lock()
	var m *model
	if req.Model != "" {
		m = s.modelLocked(req.Model)
		m.requests++
		m.lastHeader = r.Header.Clone()
		m.lastBody = body
	}
	s.mu.Unlock()

	// Chutes checks the key before it looks at the body.
	if detail, ok := s.authorize(r.Header); !ok {
		s.count(m, OutcomeUnauthorized)
		writeDetail(w, http.StatusUnauthorized, detail)
		return
	}
	if jsonErr != nil {
		s.count(m, OutcomeBadRequest)
		writeDetailMessage(w, http.StatusBadRequest, "Invalid request body: "+jsonErr.Error())
		return
	}
	if req.Model == "" {
		writeDetailMessage(w, http.StatusBadRequest, "Invalid request body: model is required")
		return
	}

	b, kind := s.decide(m)
	x := &exchange{s: s, w: w, ctx: r.Context(), req: &req, ep: ep, b: b}
	x.serve(kind)
}

// decide picks the behavior and the kind to serve for one request to m, and
// counts the outcome.
func (s *Simulator) decide(m *model) (Behavior, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b Behavior
	switch {
	case m.configured:
		b = m.b
	case s.def != nil:
		b = *s.def
	default:
		b = Behavior{Kind: KindNotFound}
	}
	kind := b.kind()
	if kind == KindFlaky {
		kind = KindHealthy
		if m.rng.Float64() < b.FailureRate {
			kind = b.failureKind()
		}
	}
	m.outcomes[kind]++
	return b, kind
}

func (s *Simulator) count(m *model, outcome string) {
	if m == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m.outcomes[outcome]++
}

// authorize checks the key the way Chutes does: Authorization: Bearer (or
// X-API-Key), then the key itself. The key is not trimmed: a key pasted with
// stray spaces is refused, as upstream would.
func (s *Simulator) authorize(h http.Header) (detail string, ok bool) {
	const (
		missing = "Missing or invalid authorization header(s)"
		invalid = "Invalid token or user not found"
	)
	if s.acceptAnyKey {
		return "", true
	}
	var key string
	if a := h.Get("Authorization"); a != "" {
		scheme, token, found := strings.Cut(a, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || token == "" {
			return missing, false
		}
		key = token
	} else if key = h.Get("X-API-Key"); key == "" {
		return missing, false
	}
	if s.keys != nil {
		if !s.keys[key] {
			return invalid, false
		}
	} else if !strings.HasPrefix(key, "cpk_") {
		return invalid, false
	}
	return "", true
}

// wait pauses for d (forever if d < 0), ending early when ctx is done or the
// Simulator is closed.
func (s *Simulator) wait(ctx context.Context, d time.Duration) error {
	if d == 0 {
		return nil
	}
	var tc <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-tc:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errClosed
	}
}
