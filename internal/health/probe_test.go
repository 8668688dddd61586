package health_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

// TestProbeSteps probes real loopback servers that fail at each step and
// checks that the failed step is named.
func TestProbeSteps(t *testing.T) {
	list := `{"object":"list","data":[{"id":"a/b","context_length":4096},{"id":"c/d"}]}`
	serve := func(code int, body string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s
	}
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake fails on purpose
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	plain := func() *http.Client { return &http.Client{Transport: proxy.NewTransport(config.Upstream{})} }
	tests := []struct {
		name     string
		base     string
		client   *http.Client
		wantStep string
		wantErr  string
		check    func(t *testing.T, r health.Reachability)
	}{
		{name: "ok", base: serve(200, list).URL + "/v1", client: plain(),
			check: func(t *testing.T, r health.Reachability) {
				if r.Models != 2 || r.Status != 200 || r.ConnectMS == nil || r.TTFBMS == nil || r.TLSMS != nil || r.DNSMS != nil {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "dns", base: "http://chutes-probe.test/v1",
			client:   &http.Client{Transport: proxy.NewTransport(config.Upstream{Resolver: "127.0.0.1:1", ConnectTimeout: config.Duration(2 * time.Second)})},
			wantStep: health.StepDNS, wantErr: "chutes-probe.test"},
		{name: "connect", base: closedURL + "/v1", client: plain(), wantStep: health.StepConnect, wantErr: "connection failed"},
		{name: "tls", base: tlsSrv.URL + "/v1", client: plain(), wantStep: health.StepTLS, wantErr: "certificate"},
		{name: "http status", base: serve(503, `{"detail":"busy"}`).URL + "/v1", client: plain(), wantStep: health.StepHTTP, wantErr: "answered 503 Service Unavailable"},
		{name: "not a model list", base: serve(200, `<html>welcome</html>`).URL, client: plain(), wantStep: health.StepResponse, wantErr: "base_url looks wrong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.client.CloseIdleConnections()
			cat := catalog.New()
			r := health.Probe(context.Background(), tt.client, cat, tt.base, "")
			if r.FailedStep != tt.wantStep || !strings.Contains(r.Error, tt.wantErr) || r.OK() != (tt.wantStep == "") {
				t.Fatalf("probe = %+v, want step %q error containing %q", r, tt.wantStep, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// TestProbeBacksOff runs the Monitor's loop against an upstream that
// answers 503 with a 20 ms interval: the waits double, so far fewer probes
// than 20 ms apart happen; once the upstream recovers the next probe
// (woken at once) resets the count.
func TestProbeBacksOff(t *testing.T) {
	var hits atomic.Int32
	var healthy atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !healthy.Load() {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, `{"data":[{"id":"a/b"}]}`)
	}))
	defer up.Close()
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.BaseURL = up.URL + "/v1"
		c.Health.ProbeInterval = config.Duration(20 * time.Millisecond)
	})
	h.run(t)
	time.Sleep(700 * time.Millisecond)
	n := int(hits.Load())
	// Read a settled result: not one whose next probe is still being
	// scheduled, nor one overtaken by a probe in flight.
	var r health.Reachability
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r, _ = h.mon.Reachability()
		if !r.Next.IsZero() && r.Failures >= n-1 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d probes in 700 ms at a 20 ms interval while unreachable; consecutive failures %d; next wait %v",
		n, r.Failures, r.Next.Sub(r.Checked).Round(time.Millisecond))
	// Without backoff: ~35. With it: at 0, ~40, ~120, ~280, ~600 ms.
	if n < 3 || n > 8 || r.Failures < n-1 || r.FailedStep != health.StepHTTP {
		t.Fatalf("%d probes, reachability %+v", n, r)
	}
	if d, min := r.Next.Sub(r.Checked), time.Duration(float64(20*time.Millisecond<<r.Failures)*0.89); d < min {
		t.Fatalf("next probe %v after the last, want the backed-off wait ≥ %v", d, min)
	}
	s := h.status(t)
	if s.Level != health.LevelError || !strings.HasPrefix(s.Headline, "Chutes is unreachable: GET "+up.URL+"/v1/models answered 503") {
		t.Fatalf("headline %q", s.Headline)
	}

	healthy.Store(true)
	h.mon.Wake()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, _ := h.mon.Reachability(); r.OK() {
			if r.Failures != 0 {
				t.Fatalf("failures %d after recovery", r.Failures)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no successful probe after Wake")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunStopsOnCancel: Run returns promptly when its context ends, even
// in the middle of a probe that hangs.
func TestRunStopsOnCancel(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer once.Do(func() { close(release) })
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.BaseURL = up.URL + "/v1"
		c.Health.ProbeInterval = config.Duration(time.Hour)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.mon.Run(ctx); close(done) }()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	t.Logf("Run returned %v after cancel", time.Since(start).Round(time.Millisecond))
}
