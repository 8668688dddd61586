package chaos

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Client-visible outcomes, as result.outcome names them.
var (
	failedOver  = "200 " + goodModel + " (2 attempts)"
	interrupted = "200 " + faultModel + " then stream_interrupted, closed"
	truncated   = "200 " + faultModel + " truncated, closed"
	allDown     = "503 all_models_unavailable"
	rateLimited = "429 rate_limit_exceeded"
)

// fault is one upstream misbehaviour and what a client must see, streaming
// and not.
type fault struct {
	name string
	// h answers for faultModel; with whole, for every model.
	h     handler
	whole bool
	tls   bool                      // the upstream serves TLS with a certificate the proxy does not trust
	base  func(t *testing.T) string // overrides the upstream's URL
	// plain and stream are the expected outcomes; raw is the plain one
	// with stream_plain = false (the plain request sent as it is), ""
	// meaning the same as plain.
	plain, stream, raw string
	check              func(t *testing.T, r result)
}

// sseHead and jsonHead start a raw HTTP/1.1 response.
const (
	sseHead     = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	jsonHead    = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	chunkedHead = "Transfer-Encoding: chunked\r\n\r\n"
)

func head(stream bool) string {
	if stream {
		return sseHead
	}
	return jsonHead
}

// firstPart is what a fault model sends before it breaks: two whole events
// (so the proxy commits), or the first half of a completion.
func firstPart(stream bool) string {
	if stream {
		return "data: " + chunk(faultModel, "one ") + "\n\ndata: " + chunk(faultModel, "two ") + "\n\n"
	}
	c := completion(faultModel)
	return c[:len(c)/2]
}

func chunked(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// settle gives the proxy time to read what was sent and commit, well
// inside the idle time-out.
const settle = 100 * time.Millisecond

func faults() []fault {
	return []fault{
		{name: "connection refused", whole: true, base: func(t *testing.T) string { return "http://" + freePort(t) },
			plain: allDown, stream: allDown, check: messageHas("connection refused")},
		{name: "TLS handshake failure (untrusted cert)", whole: true, tls: true, h: okAs(faultModel),
			plain: allDown, stream: allDown, check: messageHas("TLS certificate not trusted")},
		{name: "reset before headers", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, _ := hijack(w)
			reset(c)
		}, plain: failedOver, stream: failedOver},
		{name: "reset after headers", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			rw.WriteString(head(stream) + chunkedHead)
			rw.Flush()
			u.sleep(r, 20*time.Millisecond)
			reset(c)
		}, plain: failedOver, stream: failedOver},
		{name: "reset mid-body", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			if stream {
				rw.WriteString(head(stream) + chunkedHead + chunked(firstPart(stream)))
			} else {
				rw.WriteString(head(stream) + "Content-Length: " + strconv.Itoa(len(completion(faultModel))) + "\r\n\r\n" + firstPart(stream))
			}
			rw.Flush()
			u.sleep(r, settle)
			reset(c)
		}, plain: failedOver, stream: interrupted},
		{name: "reset mid-body of a 2 MiB reply", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			big := bigReply(stream)
			if stream { // cut at an event boundary; "reset mid-line" cuts inside an event
				rw.WriteString(head(stream) + chunkedHead + chunked(big[:strings.LastIndex(big[:len(big)/2], "\n\n")+2]))
			} else {
				rw.WriteString(head(stream) + "Content-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big[:len(big)/2])
			}
			rw.Flush()
			u.sleep(r, settle)
			reset(c)
		}, plain: failedOver, raw: truncated, stream: interrupted},
		{name: "headers then silence", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			w.Header().Set("Content-Type", strings.TrimPrefix(strings.Split(head(stream), "\r\n")[1], "Content-Type: "))
			w.WriteHeader(http.StatusOK)
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-u.stop:
			}
		}, plain: failedOver, stream: failedOver},
		{name: "1 byte/s drip of the headers", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, _ := hijack(w)
			defer c.Close()
			drip(u, r, c, head(stream)+"Content-Length: 2\r\n\r\n{}")
		}, plain: failedOver, stream: failedOver},
		{name: "1 byte/s drip of the body", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, _ := hijack(w)
			defer c.Close()
			if _, err := io.WriteString(c, head(stream)+"Connection: close\r\n\r\n"); err != nil {
				return
			}
			body := completion(faultModel)
			if stream {
				body = "data: " + chunk(faultModel, "slow") + "\n\ndata: [DONE]\n\n"
			}
			drip(u, r, c, body)
		}, plain: failedOver, stream: failedOver},
		{name: "response headers over 10 MiB", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, _ := hijack(w)
			defer c.Close()
			if _, err := io.WriteString(c, head(stream)+"X-Big: "); err != nil {
				return
			}
			junk := strings.Repeat("a", 64<<10)
			for i := 0; i < 11<<4; i++ { // 11 MiB
				if _, err := io.WriteString(c, junk); err != nil {
					return
				}
			}
			io.WriteString(c, "\r\nContent-Length: 2\r\n\r\n{}")
		}, plain: failedOver, stream: failedOver},
		{name: "invalid chunked encoding at once", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			defer c.Close()
			rw.WriteString(head(stream) + chunkedHead + "ZZZ\r\nhello\r\n")
			rw.Flush()
		}, plain: failedOver, stream: failedOver},
		{name: "invalid chunked encoding mid-body", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			defer c.Close()
			rw.WriteString(head(stream) + chunkedHead + chunked(firstPart(stream)))
			rw.Flush()
			u.sleep(r, settle)
			rw.WriteString("ZZZ\r\nhello\r\n")
			rw.Flush()
		}, plain: failedOver, stream: interrupted},
		{name: "200 with an HTML body", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, "<!DOCTYPE html><html><head><title>502</title></head><body>Bad gateway</body></html>")
		}, plain: failedOver, stream: failedOver},
		{name: "200 with an HTML body, no content type", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "\n  <html><body>Welcome to nginx!</body></html>")
		}, plain: failedOver, stream: failedOver},
		{name: "SSE error event mid-stream", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, firstPart(true))
			_ = http.NewResponseController(w).Flush()
			u.sleep(r, settle)
			io.WriteString(w, `data: {"error":{"message":"CUDA out of memory","type":"InternalServerError","code":500}}`+"\n\n")
		}, plain: failedOver, raw: interrupted, stream: interrupted, check: bodyHas("CUDA out of memory")},
		{name: "bare error line mid-stream (Chutes), then cut", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			defer c.Close()
			if !stream {
				rw.WriteString(head(false) + "Content-Length: " + strconv.Itoa(len(completion(faultModel))) + "\r\n\r\n" + firstPart(false))
				rw.Flush()
				return
			}
			rw.WriteString(sseHead + chunkedHead + chunked(firstPart(true)))
			rw.Flush()
			u.sleep(r, settle)
			rw.WriteString(chunked(`{"error":"Unhandled exception during response stream: boom"}` + "\n"))
			rw.Flush()
		}, plain: failedOver, stream: interrupted},
		{name: "Content-Length longer than the body", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			defer c.Close()
			body := completion(faultModel)
			if stream {
				body = firstPart(true)
			}
			rw.WriteString(head(stream) + "Content-Length: " + strconv.Itoa(len(body)+4000) + "\r\n\r\n" + body)
			rw.Flush()
			u.sleep(r, settle)
		}, plain: failedOver, stream: interrupted},
		{name: "Content-Length longer than an empty body", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			defer c.Close()
			rw.WriteString(head(stream) + "Content-Length: 4000\r\n\r\n")
			rw.Flush()
		}, plain: failedOver, stream: failedOver},
		{name: "reset mid-body, no Content-Length", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			rw.WriteString(head(stream) + chunkedHead + chunked(firstPart(stream)))
			rw.Flush()
			u.sleep(r, settle)
			reset(c)
		}, plain: failedOver, stream: interrupted},
		{name: "reset mid-line", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			c, rw := hijack(w)
			part := firstPart(true) + `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"delta":{"content":"par`
			if !stream {
				part = firstPart(false)
			}
			rw.WriteString(head(stream) + chunkedHead + chunked(part))
			rw.Flush()
			u.sleep(r, settle)
			reset(c)
		}, plain: failedOver, stream: interrupted},
		{name: "silence mid-line until idle_timeout", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, firstPart(true)+`data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"par`)
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-u.stop:
			}
		}, plain: failedOver, raw: interrupted, stream: interrupted},
		{name: "200 with an error object as the body (Chutes, non-stream)", h: func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
			if stream {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, `{"error":"Unhandled exception during response stream: CUDA out of memory"}`+"\n")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"error":{"message":"Unhandled exception during response stream: CUDA out of memory","type":"InternalServerError","param":null,"code":500}}`)
		}, plain: failedOver, stream: failedOver},
		{name: "429 with Retry-After in seconds", whole: true, h: tooMany("7"),
			plain: rateLimited, stream: rateLimited, check: retryAfterIn(7, 7)},
		{name: "429 with Retry-After as an HTTP date", whole: true, h: tooMany("+10s"),
			plain: rateLimited, stream: rateLimited, check: retryAfterIn(8, 11)},
		{name: "429 with Retry-After as garbage", whole: true, h: tooMany("soon-ish"),
			plain: rateLimited, stream: rateLimited, check: retryAfterIn(1, 5)},
		{name: "429 with Retry-After garbage, fallback healthy", h: tooMany("Wed, 99 Foo"),
			plain: failedOver, stream: failedOver},
	}
}

// bigReply is a 2 MiB reply: larger than what the proxy holds before
// committing to a non-stream answer. Built once: under -race building it
// takes longer than the first-byte time-out.
func bigReply(stream bool) string {
	if stream {
		return bigStream()
	}
	return bigCompletion()
}

var (
	bigStream     = sync.OnceValue(func() string { return makeBigReply(true) })
	bigCompletion = sync.OnceValue(func() string { return makeBigReply(false) })
)

func makeBigReply(stream bool) string {
	if stream {
		var b strings.Builder
		for b.Len() < 2<<20 {
			b.WriteString("data: " + chunk(faultModel, strings.Repeat("x", 1000)) + "\n\n")
		}
		return b.String()
	}
	c := completion(faultModel)
	i := strings.Index(c, "hello from")
	return c[:i] + strings.Repeat("x", 2<<20) + c[i:]
}

// drip writes s one byte a second until done, the request ends or a write
// fails.
func drip(u *upstream, r *http.Request, c io.Writer, s string) {
	for i := 0; i < len(s); i++ {
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
		if !u.sleep(r, time.Second) {
			return
		}
	}
}

// tooMany answers 429 with a Retry-After; "+10s" means an HTTP date that
// far ahead.
func tooMany(retryAfter string) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		v := retryAfter
		if d, err := time.ParseDuration(strings.TrimPrefix(v, "+")); err == nil && v[0] == '+' {
			v = time.Now().Add(d).UTC().Format(http.TimeFormat)
		}
		w.Header().Set("Retry-After", v)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"detail":"Infrastructure is at maximum capacity, try again later"}`)
	}
}

func messageHas(s string) func(*testing.T, result) {
	return func(t *testing.T, r result) {
		if _, msg, _ := openAIError(r.body); !strings.Contains(msg, s) {
			t.Errorf("error message lacks %q: %s", s, r.body)
		}
	}
}

func bodyHas(s string) func(*testing.T, result) {
	return func(t *testing.T, r result) {
		if !strings.Contains(string(r.body), s) {
			t.Errorf("body lacks %q: %s", s, r.body)
		}
	}
}

func retryAfterIn(lo, hi int) func(*testing.T, result) {
	return func(t *testing.T, r result) {
		v := r.header.Get("Retry-After")
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			t.Errorf("Retry-After %q, want whole seconds in [%d, %d]", v, lo, hi)
		}
	}
}

// faultTable collects rows for the closing table.
type faultTable struct {
	mu   sync.Mutex
	rows []string
}

func (ft *faultTable) add(row string) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.rows = append(ft.rows, row)
}

// TestFaults runs every upstream fault, streaming and not, through a chain
// of the faulty model and a healthy fallback (or, for faults of the whole
// upstream, both models faulty), and prints the table of outcomes.
func TestFaults(t *testing.T) {
	bigStream()
	bigCompletion()
	runFaults(t, faults())
}

func runFaults(t *testing.T, fs []fault) {
	table := &faultTable{}
	t.Cleanup(func() {
		slices.Sort(table.rows)
		t.Logf("\n| fault | request | client saw | time |\n| --- | --- | --- | --- |\n%s", strings.Join(table.rows, "\n"))
	})
	for _, f := range fs {
		for _, mode := range []string{"plain", "raw", "stream"} {
			stream := mode == "stream"
			want := map[string]string{"plain": f.plain, "raw": cmp.Or(f.raw, f.plain), "stream": f.stream}[mode]
			t.Run(f.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				up := newUpstream(t, f.tls)
				if f.h != nil {
					up.set(faultModel, f.h)
					if f.whole {
						up.set(goodModel, f.h)
					}
				}
				base := up.URL
				if f.base != nil {
					base = f.base(t)
				}
				p := startProxy(t, newConfig(t, base, func(c *config.Config) {
					c.Upstream.StreamPlain = mode != "raw"
				}))
				start := time.Now()
				r := send(t, newClient(t), p.URL, faultModel, stream)
				took := time.Since(start)
				got := r.outcome()
				table.add(fmt.Sprintf("| %s | %s | %s | %s |", f.name, mode, got, took.Round(10*time.Millisecond)))
				if got != want {
					t.Fatalf("client saw %q, want %q\nheaders %v\nbody %.600s", got, want, r.header, r.body)
				}
				if f.check != nil && want != failedOver { // a fallback's reply says nothing of the fault
					f.check(t, r)
				}
				if want == failedOver && (up.count(faultModel) != 1 || up.count(goodModel) != 1) {
					t.Errorf("upstream calls: fault %d, good %d; want 1 each", up.count(faultModel), up.count(goodModel))
				}
			})
		}
	}
}

// TestFlapping sends requests one after another to a model that fails every
// other N requests; each must be served, by it or by its fallback. With
// failures = 3, runs of one or two failures never open its breaker (every
// request tries it once), while runs of four do (some requests skip it).
func TestFlapping(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("every %d/stream=%v", n, stream), func(t *testing.T) {
				t.Parallel()
				up := newUpstream(t, false)
				var mu sync.Mutex
				calls := 0
				up.set(faultModel, func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
					mu.Lock()
					calls++
					down := (calls-1)/n%2 == 1
					mu.Unlock()
					if down {
						w.Header().Set("Content-Type", "application/json")
						w.WriteHeader(http.StatusServiceUnavailable)
						io.WriteString(w, `{"detail":"No instances available (yet) for chute_id='flap'"}`)
						return
					}
					okAs(faultModel)(u, w, r, stream)
				})
				p := startProxy(t, newConfig(t, up.URL, func(c *config.Config) {
					c.Breaker.Failures = 3
				}))
				c := newClient(t)
				served := map[string]int{}
				const requests = 24
				for i := 0; i < requests; i++ {
					r := send(t, c, p.URL, faultModel, stream)
					got := r.outcome()
					if !strings.HasPrefix(got, "200 ") || strings.Contains(got, "closed") {
						t.Fatalf("request %d: %s: %.300s", i, got, r.body)
					}
					served[r.header.Get("X-Chutes-Proxy-Model")]++
				}
				upCalls := up.count(faultModel)
				t.Logf("served: %v; upstream calls to the flapping model: %d", served, upCalls)
				if served[faultModel]+served[goodModel] != requests {
					t.Errorf("served %v: want all %d by the two models", served, requests)
				}
				if opens := n >= 3; opens && upCalls >= requests {
					t.Errorf("runs of %d failures never opened the breaker: %d calls for %d requests", n, upCalls, requests)
				} else if !opens && upCalls != requests {
					t.Errorf("runs of %d failures opened the breaker: %d calls for %d requests, want one each", n, upCalls, requests)
				}
			})
		}
	}
}
