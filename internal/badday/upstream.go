package badday

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Headers the bench's users send; the proxy passes them upstream, where the
// upstream stand-in reads them.
const (
	headerReply  = "X-Badday-Reply"  // the user-visible reply a request belongs to
	headerPrompt = "X-Badday-Prompt" // "long": the prompt is long (prefill)
)

// Queueing is the median of the random delay every upstream request waits
// before its simulator sees it; QueueSigma is its lognormal spread (p95
// 2.3×, p99.9 4.7× the median), so that first tokens spread as a loaded
// miner's do and a p95 means something.
const (
	Queueing   = 60 * time.Millisecond
	QueueSigma = 0.5
)

// upstream stands in front of a simulator as the network and a miner's
// queue do: each request waits a random delay, plus a long prompt's
// prefill, before the simulator sees it. It counts every request it gets
// (a request that reached the upstream is spent, whatever its outcome) by
// the reply it belongs to.
type upstream struct {
	next    http.Handler
	prefill map[string]time.Duration // by model, for long prompts

	mu       sync.Mutex
	rng      *rand.Rand
	perReply map[int64]int
}

func newUpstream(next http.Handler, prefill map[string]time.Duration, seed uint64) *upstream {
	return &upstream{next: next, prefill: prefill, rng: rand.New(rand.NewPCG(seed, 16)), perReply: map[int64]int{}}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return // the proxy gave up
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var m struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &m)
	id, _ := strconv.ParseInt(r.Header.Get(headerReply), 10, 64)
	u.mu.Lock()
	u.perReply[id]++
	d := time.Duration(float64(Queueing) * math.Exp(QueueSigma*u.rng.NormFloat64()))
	u.mu.Unlock()
	if r.Header.Get(headerPrompt) == "long" {
		d += u.prefill[m.Model]
	}
	if err := wait(r.Context(), d); err != nil {
		return
	}
	u.next.ServeHTTP(w, r)
}

// requests returns the count of upstream requests by reply.
func (u *upstream) requests() map[int64]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[int64]int, len(u.perReply))
	for k, v := range u.perReply {
		out[k] = v
	}
	return out
}

// wait pauses for d or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// front serves a handler on one loopback address that can go away (every
// connection closed, nothing listening: connection refused) and come back
// on the same address: Chutes wholly unreachable, then back.
type front struct {
	h    http.Handler
	addr string

	mu  sync.Mutex
	srv *http.Server
}

func newFront(h http.Handler) (*front, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &front{h: h, addr: ln.Addr().String()}
	f.serve(ln)
	return f, nil
}

// URL is the front's base URL with /v1.
func (f *front) URL() string { return "http://" + f.addr + "/v1" }

func (f *front) serve(ln net.Listener) {
	srv := &http.Server{Handler: f.h, ReadHeaderTimeout: 10 * time.Second}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// down closes the listener and every connection.
func (f *front) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		_ = f.srv.Close()
		f.srv = nil
	}
}

// up listens again on the same address.
func (f *front) up() error {
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	f.serve(ln)
	return nil
}
