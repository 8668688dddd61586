package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowloris opens many connections that never finish their headers
// and measures real requests meanwhile: the proxy must not be starved.
func TestSlowloris(t *testing.T) {
	up := newUpstream(t, false)
	p := startProxy(t, newConfig(t, up.URL, nil))

	measure := func(n int) []time.Duration {
		// A new connection per request, so that accepting is measured too.
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var ds []time.Duration
		for range n {
			start := time.Now()
			if got := send(t, c, p.URL, goodModel, true).outcome(); !strings.HasPrefix(got, "200 ") {
				t.Fatalf("a real request: %s", got)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds
	}
	before := measure(20)

	const attackers = 1000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var opened, started atomic.Int64
	acceptedBefore := p.accepted.Load()
	for range attackers {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatalf("dialling attacker %d: %v", opened.Load(), err)
		}
		opened.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
			started.Add(1)
			if err != nil {
				return
			}
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := fmt.Fprintf(c, "X-Slow-%d: 1\r\n", i); err != nil {
						return
					}
				}
			}
		}()
	}
	// Measure once the server holds every attacker's connection and each
	// has sent its first line.
	if !eventually(10*time.Second, func() bool {
		return p.accepted.Load()-acceptedBefore >= attackers && started.Load() == attackers
	}) {
		t.Fatalf("after 10 s the server had accepted %d of %d attackers, %d had written", p.accepted.Load()-acceptedBefore, attackers, started.Load())
	}
	during := measure(20)
	close(stop)
	wg.Wait()

	t.Logf("real request latency, %d samples: before p50 %v max %v; with %d slowloris connections p50 %v max %v",
		len(before), before[len(before)/2], before[len(before)-1], attackers, during[len(during)/2], during[len(during)-1])
	if worst := during[len(during)-1]; worst > time.Second {
		t.Errorf("a real request took %v during the attack", worst)
	}
}

// TestSlowlorisHeaderDeadline checks that the server itself drops a
// connection whose headers drip forever, after ReadHeaderTimeout (10 s).
func TestSlowlorisHeaderDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 10 s ReadHeaderTimeout")
	}
	t.Parallel()
	up := newUpstream(t, false)
	p := startProxy(t, newConfig(t, up.URL, nil))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	closed := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case d := <-closed:
			t.Logf("the server dropped the dripping connection after %v", d.Round(100*time.Millisecond))
			if d < 9*time.Second {
				t.Errorf("dropped after %v, before ReadHeaderTimeout", d)
			}
			return
		case <-tick.C:
			if time.Since(start) > 13*time.Second {
				t.Fatal("the server kept a connection whose headers never ended for 13 s")
			}
			fmt.Fprintf(c, "X-Drip-%d: 1\r\n", i)
		}
	}
}

// watched is an upstream handler that notes when the proxy cancels it.
type watched struct {
	started  chan struct{}
	canceled chan time.Time
}

func newWatched() *watched {
	return &watched{started: make(chan struct{}, 1), canceled: make(chan time.Time, 1)}
}

func (wt *watched) wait(u *upstream, r *http.Request) {
	select {
	case <-r.Context().Done():
		wt.canceled <- time.Now()
	case <-u.stop:
	}
}

// TestClientVanishes: a client that goes away, before or after the
// commit, cancels its upstream request within a second.
func TestClientVanishes(t *testing.T) {
	tests := []struct {
		name   string
		stream bool
		// upstream: announce start, then behave until canceled
		h func(wt *watched) handler
		// leave: how the client goes away once the upstream started
		leave string
		// stay: how long the client waits, once the upstream started,
		// before it cancels
		stay time.Duration
	}{
		{"mid-stream, body closed", true, endlessStream, "close body after first event", 0},
		{"mid-stream, connection reset", true, endlessStream, "reset after first event", 0},
		{"waiting for headers", false, hangBefore, "cancel context", 0},
		{"waiting for headers, stream", true, hangBefore, "cancel context", 0},
		{"waiting for the first event", true, headersThenWait, "cancel context", 50 * time.Millisecond},
		{"mid plain body", false, endlessPlain, "cancel context", 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, false)
			wt := newWatched()
			up.set(faultModel, tt.h(wt))
			p := startProxy(t, newConfig(t, up.URL, func(c *configT) {
				c.Upstream.FirstByteTimeout = cfgDuration(10 * time.Second)
				c.Upstream.IdleTimeout = cfgDuration(10 * time.Second)
			}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/chat/completions", strings.NewReader(chatBody(faultModel, tt.stream)))
			req.Header.Set("Authorization", "Bearer "+proxyKey)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			var conn net.Conn
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				conn = c
				return c, err
			}
			type answer struct {
				resp *http.Response
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				got <- answer{resp, err}
			}()
			<-wt.started
			var left time.Time
			switch tt.leave {
			case "cancel context":
				// A client that gives up after a moment: by then the proxy
				// is most likely reading what the upstream sent (headers,
				// part of the body), which nothing outside it can see. The
				// check below does not depend on it: the cancel must reach
				// the upstream in any phase.
				time.Sleep(tt.stay)
				left = time.Now()
				cancel()
				if a := <-got; a.err == nil {
					a.resp.Body.Close()
				}
			default:
				a := <-got
				if a.err != nil {
					t.Fatal(a.err)
				}
				buf := make([]byte, 4096)
				n, _ := a.resp.Body.Read(buf)
				if !strings.Contains(string(buf[:n]), "data:") {
					t.Fatalf("first read %q", buf[:n])
				}
				left = time.Now()
				if tt.leave == "reset after first event" {
					reset(conn)
				}
				a.resp.Body.Close()
			}
			select {
			case at := <-wt.canceled:
				d := at.Sub(left)
				t.Logf("upstream canceled %v after the client left", d.Round(time.Millisecond))
				if d > time.Second {
					t.Errorf("upstream canceled only after %v", d)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the upstream request was not canceled within 3 s of the client leaving")
			}
		})
	}
}

func endlessStream(wt *watched) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		wt.started <- struct{}{}
		go wt.wait(u, r)
		for {
			if _, err := fmt.Fprintf(w, "data: %s\n\n", chunk(faultModel, "tok ")); err != nil {
				return
			}
			if rc.Flush() != nil || !u.sleep(r, 20*time.Millisecond) {
				return
			}
		}
	}
}

func endlessPlain(wt *watched) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		w.Header().Set("Content-Type", "application/json")
		rc := http.NewResponseController(w)
		io.WriteString(w, `{"id":"x","choices":[{"message":{"content":"`)
		rc.Flush()
		wt.started <- struct{}{}
		go wt.wait(u, r)
		for {
			if _, err := io.WriteString(w, "tok "); err != nil {
				return
			}
			if rc.Flush() != nil || !u.sleep(r, 20*time.Millisecond) {
				return
			}
		}
	}
}

func hangBefore(wt *watched) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		wt.started <- struct{}{}
		wt.wait(u, r)
	}
}

func headersThenWait(wt *watched) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		wt.started <- struct{}{}
		wt.wait(u, r)
	}
}

// TestCancellationStorm sends 10,000 requests (4,000 under -race, where
// 10,000 take 25-35 s on two cores), a third of which the
// client abandons at a random moment (before the answer, mid-stream), over
// a chain whose first model fails over now and then. Every request not
// abandoned gets a clean answer; afterwards no upstream request is still
// open and the goroutine count is back to where it started.
func TestCancellationStorm(t *testing.T) {
	t.Parallel()
	requests, workers := 10000, 48
	if raceEnabled {
		requests = 4000
	}
	up := newUpstream(t, false)
	var inflight atomic.Int64
	up.set(faultModel, func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		inflight.Add(1)
		defer inflight.Add(-1)
		switch n := rand.IntN(10); {
		case n < 2:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"detail":"No instances available (yet) for chute_id='storm'"}`)
		case !stream:
			okAs(faultModel)(u, w, r, false)
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for range 3 {
				fmt.Fprintf(w, "data: %s\n\n", chunk(faultModel, "tok "))
				if rc.Flush() != nil || !u.sleep(r, time.Millisecond) {
					return
				}
			}
			io.WriteString(w, "data: [DONE]\n\n")
		}
	})
	p := startProxy(t, newConfig(t, up.URL, func(c *configT) {
		c.Breaker.Failures = 1000 // keep both models in play
	}))
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	client := &http.Client{Transport: tr}
	runtime.GC()
	baseline := runtime.NumGoroutine()

	var abandoned, served, cleanErr atomic.Int64
	var lostMu sync.Mutex
	var lost []string
	var peak atomic.Int64
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				stream := i%2 == 0
				ctx, cancel := context.WithCancel(context.Background())
				var timer *time.Timer
				if rand.IntN(3) == 0 {
					timer = time.AfterFunc(time.Duration(rand.IntN(4000))*time.Microsecond, cancel)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/chat/completions", strings.NewReader(chatBody(faultModel, stream)))
				req.Header.Set("Authorization", "Bearer "+proxyKey)
				r := doRequest(t, client, req, stream)
				leave := timer != nil && !timer.Stop() // the client left before the end
				cancel()
				if g := int64(runtime.NumGoroutine()); g > peak.Load() {
					peak.Store(g)
				}
				got := r.outcome()
				switch {
				case strings.HasPrefix(got, "200 ") && !strings.Contains(got, "closed"):
					served.Add(1)
				case leave:
					abandoned.Add(1)
				case !strings.HasPrefix(got, "LOST"):
					if cleanErr.Add(1) <= 3 {
						t.Logf("clean error: %s: %.300s", got, r.body)
					}
				default:
					lostMu.Lock()
					lost = append(lost, got)
					lostMu.Unlock()
				}
			}
		}()
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	tr.CloseIdleConnections()
	p.Srv.Close()

	// Wait for the goroutines to wind down; the checks below say what is
	// left after 10 s.
	after := runtime.NumGoroutine()
	eventually(10*time.Second, func() bool {
		tr.CloseIdleConnections()
		p.Srv.Close()
		after = runtime.NumGoroutine()
		return after <= baseline+5 && inflight.Load() == 0
	})
	t.Logf("%d requests in %v: served %d, abandoned by the client %d, clean errors %d, lost %d; goroutines: baseline %d, peak %d, after %d; upstream requests still open %d",
		requests, took.Round(time.Millisecond), served.Load(), abandoned.Load(), cleanErr.Load(), len(lost), baseline, peak.Load(), after, inflight.Load())
	if len(lost) > 0 {
		t.Errorf("%d requests lost, e.g. %q", len(lost), lost[:min(5, len(lost))])
	}
	if inflight.Load() != 0 {
		t.Errorf("%d upstream requests still open", inflight.Load())
	}
	if after > baseline+5 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after, baseline %d\n%s", after, baseline, buf[:runtime.Stack(buf, true)])
	}
}
