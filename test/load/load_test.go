// Package load drives chutes-proxy with many concurrent streaming chats
// through a chain where one model flaps and one is down, all in-process
// over loopback against the Chutes simulator, and prints the figures.
//
// The CI variant (TestLoad) runs 200 streams for 5 s. The full run is
// 1,000 streams for 60 s:
//
//	CHUTES_PROXY_LOAD=1 go test ./test/load -run . -v -timeout 5m
package load

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	flapModel = "load/flapping"
	downModel = "load/down"
	goodModel = "load/healthy"
)

// shape is one load run.
type shape struct {
	streams  int           // concurrent clients, each sending one chat after another
	duration time.Duration // how long new chats start
	max      int           // at most this many chats in all
	flap     time.Duration // the flapping model changes state this often
}

// TestLoad is the bounded variant CI runs.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load")
	}
	run(t, shape{streams: 200, duration: 5 * time.Second, max: 50000, flap: time.Second})
}

// TestLoadFull is 1,000 concurrent streams for 60 s, run by hand.
func TestLoadFull(t *testing.T) {
	if os.Getenv("CHUTES_PROXY_LOAD") != "1" {
		t.Skip("set CHUTES_PROXY_LOAD=1 for the 60 s, 1,000-stream run")
	}
	run(t, shape{streams: 1000, duration: 60 * time.Second, max: 2000000, flap: 5 * time.Second})
}

// tally is what the clients saw.
type tally struct {
	mu        sync.Mutex
	completed int
	errors    map[string]int // clean errors by code
	lost      []string
	ttfb      []time.Duration
	served    map[string]int
}

func run(t *testing.T, s shape) {
	healthy := simulator.Behavior{Kind: simulator.KindHealthy, TTFT: 100 * time.Millisecond, TokensPerSecond: 20}
	sim := simulator.New(simulator.Scenario{
		Models: []simulator.ModelScenario{
			{ID: flapModel, Behavior: healthy},
			{ID: downModel, Behavior: simulator.Behavior{Kind: simulator.KindDown}},
			{ID: goodModel, Behavior: healthy},
		},
	})
	up := httptest.NewServer(sim)

	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = up.URL + "/v1"
	cfg.Upstream.APIKey = "cpk_load.test"
	cfg.Upstream.FirstByteTimeout = config.Duration(10 * time.Second)
	cfg.Upstream.IdleTimeout = config.Duration(10 * time.Second)
	cfg.Upstream.RequestTimeout = config.Duration(60 * time.Second)
	cfg.Breaker.Cooldown = config.Duration(2 * time.Second)
	cfg.Models = []config.Model{{ID: flapModel, Fallbacks: []string{downModel, goodModel}}}
	srv := proxy.New(proxy.Options{Config: cfg})
	hs := proxy.HTTPServer("127.0.0.1:0", srv, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(ln) }()
	base := "http://" + ln.Addr().String()

	// The flapping model goes down and comes back every s.flap.
	flapCtx, stopFlap := context.WithCancel(context.Background())
	flapDone := make(chan struct{})
	var flips atomic.Int64
	go func() {
		defer close(flapDone)
		tick := time.NewTicker(s.flap)
		defer tick.Stop()
		down := false
		for {
			select {
			case <-flapCtx.Done():
				return
			case <-tick.C:
				down = !down
				b := healthy
				if down {
					b = simulator.Behavior{Kind: simulator.KindDown}
				}
				sim.SetBehavior(flapModel, b)
				flips.Add(1)
			}
		}
	}()

	tr := &http.Transport{MaxIdleConnsPerHost: s.streams, MaxIdleConns: s.streams, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	body := `{"model":"` + flapModel + `","messages":[{"role":"user","content":"hello"}],"stream":true}`

	res := &tally{errors: map[string]int{}, served: map[string]int{}}
	var started atomic.Int64
	baseline := runtime.NumGoroutine()
	deadline := time.Now().Add(s.duration)
	begin := time.Now()
	var wg sync.WaitGroup
	var peakG atomic.Int64
	for range s.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && started.Add(1) <= int64(s.max) {
				one(client, base, body, res)
				if g := int64(runtime.NumGoroutine()); g > peakG.Load() {
					peakG.Store(g)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)

	stopFlap()
	<-flapDone
	tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = hs.Shutdown(ctx)
	cancel()
	<-served
	srv.Close()
	sim.Close()
	up.Close()
	// Poll, for up to 5 s, until the goroutines are back to the baseline;
	// the report below gives the count either way.
	after := runtime.NumGoroutine()
	for i := 0; i < 100 && after > baseline; i++ {
		time.Sleep(50 * time.Millisecond) // the poll's period
		after = runtime.NumGoroutine()
	}

	res.mu.Lock()
	defer res.mu.Unlock()
	slices.Sort(res.ttfb)
	pct := func(p float64) time.Duration {
		if len(res.ttfb) == 0 {
			return 0
		}
		return res.ttfb[min(len(res.ttfb)-1, int(p*float64(len(res.ttfb))))]
	}
	total := res.completed + len(res.lost)
	for _, n := range res.errors {
		total += n
	}
	t.Logf("load: %d concurrent streams for %v (%d chats started at most), chain %s -> %s -> %s, %s flapping every %v (%d flips), %s down",
		s.streams, elapsed.Round(time.Millisecond), s.max, flapModel, downModel, goodModel, flapModel, s.flap, flips.Load(), downModel)
	t.Logf("requests: %d in all, %.0f/s; completed %d; clean errors %d %v; lost %d",
		total, float64(total)/elapsed.Seconds(), res.completed, total-res.completed-len(res.lost), res.errors, len(res.lost))
	t.Logf("served by: %v", res.served)
	t.Logf("time to first byte: p50 %v, p90 %v, p99 %v, max %v",
		pct(0.50).Round(time.Millisecond), pct(0.90).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), pct(1).Round(time.Millisecond))
	t.Logf("peak RSS (VmHWM, proxy + simulator + clients in one process): %s; goroutines: before %d, peak %d, after %d",
		vmHWM(), baseline, peakG.Load(), after)
	if len(res.lost) > 0 {
		t.Errorf("%d requests lost, e.g. %q", len(res.lost), res.lost[:min(5, len(res.lost))])
	}
	if res.completed == 0 {
		t.Error("nothing completed")
	}
	if after > baseline+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines after: %d, before %d\n%s", after, baseline, buf[:runtime.Stack(buf, true)])
	}
}

// one sends a streaming chat and notes what came back.
func one(c *http.Client, base, body string, res *tally) {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		res.lose("no response: " + err.Error())
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == nil || e.Error.Message == "" {
			res.lose(fmt.Sprintf("%d without an OpenAI error: %.200q", resp.StatusCode, b))
			return
		}
		res.clean(strconv.Itoa(resp.StatusCode) + " " + e.Error.Code)
		return
	}
	br := bufio.NewReader(resp.Body)
	var first time.Duration
	last := ""
	for {
		line, err := br.ReadString('\n')
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data: "); ok {
			if first == 0 {
				first = time.Since(start)
			}
			last = v
		}
		if err == io.EOF && last == "[DONE]" {
			res.complete(first, resp.Header.Get("X-Chutes-Proxy-Model"))
			return
		}
		if err != nil {
			if strings.Contains(last, `"stream_interrupted"`) {
				res.clean("stream_interrupted")
				return
			}
			res.lose(fmt.Sprintf("stream cut after %q: %v", last, err))
			return
		}
	}
}

func (r *tally) lose(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = append(r.lost, why)
}

func (r *tally) clean(code string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[code]++
}

func (r *tally) complete(ttfb time.Duration, model string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.completed++
	r.ttfb = append(r.ttfb, ttfb)
	r.served[model]++
}

// vmHWM is the process's peak resident set size, from /proc.
func vmHWM() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
