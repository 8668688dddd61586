package health_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
)

// inMemory serves requests with a handler, without sockets, so that a
// Monitor runs inside a synctest bubble.
type inMemory http.HandlerFunc

func (h inMemory) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	h(rec, r)
	return rec.Result(), nil
}

// bubble is a Monitor for an upstream served in memory.
type bubble struct {
	mon    *health.Monitor
	cfg    *config.Config
	pages  http.Handler
	client func() *http.Client
}

// newBubble is a Monitor for an upstream served by h, with the probe every
// interval.
func newBubble(t *testing.T, interval time.Duration, h http.HandlerFunc) *bubble {
	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = "https://llm.chutes.ai/v1"
	cfg.Upstream.AccountURL = ""
	cfg.Health.ProbeInterval = config.Duration(interval)
	b := &bubble{cfg: cfg, mon: health.New(health.Options{Config: cfg})}
	b.pages = b.mon.Handler(failover.New(cfg, nil, b.mon))
	client := &http.Client{Transport: inMemory(h)}
	b.client = func() *http.Client { return client }
	return b
}

// status decodes GET /status.
func (b *bubble) status(t *testing.T) health.Status {
	t.Helper()
	rec := httptest.NewRecorder()
	b.pages.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	var s health.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
		t.Fatalf("/status: %v", err)
	}
	return s
}

// TestProbeBacksOff runs the Monitor's loop against an upstream that
// answers 503 with a 20 ms interval: the waits double (40, 80, 160, 320,
// 640 ms, ±10 %), so 700 ms hold 5 probes, not 35; once the upstream
// recovers, a Reload probes at once and resets the count.
func TestProbeBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hits atomic.Int32
		var healthy atomic.Bool
		b := newBubble(t, 20*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if !healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, `{"data":[{"id":"a/b"}]}`)
		})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.mon.Run(ctx, func(string) *http.Client { return b.client() }) })
		defer func() { cancel(); wg.Wait() }()

		time.Sleep(700 * time.Millisecond)
		synctest.Wait()
		s := b.status(t)
		p := s.Upstream.Probe
		if n := hits.Load(); n != 5 || p == nil || p.Failures != 5 || p.FailedStep != chutes.StepHTTP {
			t.Fatalf("%d probes in 700 ms, last probe %+v", n, p)
		}
		if wait := p.Next.Sub(p.Checked); wait < 576*time.Millisecond {
			t.Fatalf("next probe %v after the last, want the backed-off 640 ms ±10 %%", wait)
		}
		if s.Level != health.LevelError {
			t.Fatalf("level %s", s.Level)
		}
		hasAll(t, s.Headline, "unreachable", "/v1/models", "503")

		healthy.Store(true)
		b.mon.Reload(b.cfg)
		synctest.Wait()
		if p := b.status(t).Upstream.Probe; !p.OK() || p.Failures != 0 || p.Models != 1 || hits.Load() != 6 {
			t.Fatalf("after recovery: %d probes, last %+v", hits.Load(), p)
		}
	})
}

// TestRunStopsOnCancel: Run returns when its context ends, even in the
// middle of a probe that hangs, without waiting for the probe's time-out.
func TestRunStopsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, time.Hour, func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { b.mon.Run(ctx, func(string) *http.Client { return b.client() }); close(done) }()
		synctest.Wait() // the probe hangs
		start := time.Now()
		cancel()
		<-done
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("Run returned %v after cancel", waited)
		}
	})
}
