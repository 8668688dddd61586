package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// TestThousandParallelThroughFlappingChain: 1,000 requests at once through
// a chain whose first model fails every other request; every one is
// answered, by the chain or with a clean error.
func TestThousandParallelThroughFlappingChain(t *testing.T) {
	f, up := newFake(t)
	var n atomic.Int64
	f.set("flap/one", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			status(503, `{"detail":"No instances available (yet)"}`)(w, r)
			return
		}
		ok("flap/one")(w, r)
	})
	f.set("down/two", status(503, `{"detail":"No instances available (yet)"}`))
	f.set("ok/three", ok("ok/three"))
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "flap/one", Fallbacks: []string{"down/two", "ok/three"}}}
		c.Breaker.Cooldown = config.Duration(50 * time.Millisecond)
		// A busy 2-core machine under -race can take seconds per request:
		// this test is about answers, not speed.
		c.Upstream.FirstByteTimeout = config.Duration(20 * time.Second)
	})
	ts, _, _ := startProxy(t, cfg)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	const total = 1000
	var wg sync.WaitGroup
	var served, clean, lost atomic.Int64
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := i%2 == 0
			body := fmt.Sprintf(`{"model":"flap/one","stream":%v,"messages":[]}`, stream)
			req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(body))
			if stream {
				req.Header.Set("Accept", "text/event-stream")
			}
			resp, err := client.Do(req)
			if err != nil {
				lost.Add(1)
				t.Errorf("request %d: %v", i, err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case err != nil:
				lost.Add(1)
				t.Errorf("request %d: reading: %v", i, err)
			case resp.StatusCode == 200 && strings.Contains(string(b), "hello"):
				served.Add(1)
			case resp.StatusCode >= 400 && strings.Contains(string(b), `"error":{`):
				clean.Add(1)
			default:
				lost.Add(1)
				t.Errorf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	t.Logf("served %d, clean errors %d, lost %d", served.Load(), clean.Load(), lost.Load())
	if lost.Load() != 0 || served.Load()+clean.Load() != total {
		t.Fatal("requests lost")
	}
	if served.Load() == 0 {
		t.Fatal("nothing served: the healthy fallback was never reached")
	}
}

// TestReloadSwapsChain: a reload reorders the chain for new requests and
// keeps an open breaker open.
func TestReloadSwapsChain(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", status(503, `{"detail":"No instances available (yet)"}`))
	f.set("b/two", ok("b/two"))
	f.set("c/three", ok("c/three"))
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "a/one", Aliases: []string{"auto"}, Fallbacks: []string{"b/two", "c/three"}}}
		c.Breaker.Failures = 1
	})
	ts, srv, _ := startProxy(t, cfg)
	if res := chat(t, ts.URL, "auto", false); res.header.Get("X-Chutes-Proxy-Model") != "b/two" {
		t.Fatalf("before reload: %s", res.header.Get("X-Chutes-Proxy-Model"))
	}
	cfg2 := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "a/one", Aliases: []string{"auto", "new"}, Fallbacks: []string{"c/three", "b/two"}}}
		c.Breaker.Failures = 1
	})
	srv.Reload(cfg2)
	res := chat(t, ts.URL, "new", false)
	if res.header.Get("X-Chutes-Proxy-Model") != "c/three" || res.header.Get("X-Chutes-Proxy-Attempts") != "1" || f.count("a/one") != 1 {
		t.Fatalf("after reload: served by %s after %s attempts; a/one called %d times",
			res.header.Get("X-Chutes-Proxy-Model"), res.header.Get("X-Chutes-Proxy-Attempts"), f.count("a/one"))
	}
}
