// Package bench measures what chutes-proxy costs: it runs a fast fake
// upstream on loopback, puts chutes-proxy (in-process or the built binary),
// optionally a bare httputil.ReverseProxy and other proxies in front of it,
// and drives the same load through each and directly, round after round, so
// that every figure is a ratio or a difference taken in one run on one
// machine.
package bench

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// Models the fake upstream knows. Their behaviour is fixed by name so that
// every proxy in front of the one upstream sees the same thing.
const (
	// ModelOK answers at once; its chain is [ok, backup].
	ModelOK = "bench/ok"
	// ModelBackup answers at once; it is every chain's fallback.
	ModelBackup = "bench/backup"
	// AliasBackup is an alias of ModelBackup: a request for it is served by
	// the backup with the body's model rewritten, as after a failover, but
	// without a skip.
	AliasBackup = "bench-backup-alias"
	// ModelRefused stands for a model whose upstream refuses connections:
	// the fake reads the request and resets the TCP connection (SO_LINGER
	// 0), which the proxy sees as a connection error before any byte.
	ModelRefused = "bench/refused"
	// ModelDead answers 503; three of those open its breaker for an hour.
	ModelDead = "bench/dead"
)

// Upstream is the fake Chutes: plain chat completions, SSE streams whose
// events carry the unix nanos at which they were written, a connection reset
// for ModelRefused and a 503 for ModelDead. It does no work beyond that, so
// that what is measured is the proxy, not the upstream.
type Upstream struct {
	URL string // http://127.0.0.1:PORT, no trailing slash

	srv *http.Server
	ln  net.Listener

	refused atomic.Int64 // requests for ModelRefused
	dead    atomic.Int64 // requests for ModelDead
	open    atomic.Int64 // streams being written
}

// Refused and Dead count the upstream calls made for those models.
func (u *Upstream) Refused() int64 { return u.refused.Load() }

// Dead counts the requests for ModelDead that reached the upstream.
func (u *Upstream) Dead() int64 { return u.dead.Load() }

// StartUpstream listens on addr ("127.0.0.1:0" for any port).
func StartUpstream(addr string) (*Upstream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	u := &Upstream{ln: ln, URL: "http://" + ln.Addr().String()}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

// Close stops the upstream and cuts its connections.
func (u *Upstream) Close() { _ = u.srv.Close() }

// bodies is a free list of request buffers. Not a sync.Pool: a GC empties
// a Pool, and the large-body scenario subtracts this process's allocations
// in the direct run from those in the proxied run, so the fake upstream
// must allocate the same (nothing) in both.
var bodies = make(chan *bytes.Buffer, 4096)

func getBody() *bytes.Buffer {
	select {
	case b := <-bodies:
		return b
	default:
		return new(bytes.Buffer)
	}
}

func putBody(b *bytes.Buffer) {
	if b.Cap() > 4<<20 {
		return
	}
	select {
	case bodies <- b:
	default:
	}
}

// plainReply is a typical non-stream chat completion (~450 bytes).
var plainReply = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench/ok","system_fingerprint":null,` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am a fake upstream. I answer at once so that what you measure is the proxy in front of me, not me.","reasoning_content":null,"tool_calls":[]},"logprobs":null,"finish_reason":"stop","matched_stop":2}],` +
	`"usage":{"prompt_tokens":25,"total_tokens":59,"completion_tokens":34,"prompt_tokens_details":null}}`)

func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/v1")
	if p == "/models" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"bench/ok","object":"model"},{"id":"bench/backup","object":"model"},{"id":"bench/refused","object":"model"},{"id":"bench/dead","object":"model"}]}`))
		return
	}
	if r.Method != http.MethodPost || (p != "/chat/completions" && p != "/completions") {
		http.Error(w, `{"error":{"message":"not found","code":"not_found"}}`, http.StatusNotFound)
		return
	}
	buf := getBody()
	buf.Reset()
	defer putBody(buf)
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return
	}
	body, err := payload.Parse(buf.Bytes())
	if err != nil {
		http.Error(w, `{"error":{"message":"bad body","code":"invalid_json"}}`, http.StatusBadRequest)
		return
	}
	switch body.Model {
	case ModelRefused:
		u.refused.Add(1)
		reset(w)
		return
	case ModelDead:
		u.dead.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"detail":"No instances available (yet) for chute_id='bench-dead'"}`))
		return
	}
	if body.Stream {
		u.stream(w, r, body.Model)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(plainReply)))
	_, _ = w.Write(plainReply)
}

// reset closes the client's connection with an RST, the way a refused or
// crashed upstream looks to a proxy that already holds a connection.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "", http.StatusBadGateway)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// StreamQuery is the query that sets a stream's shape: events, and the gap
// between them.
func StreamQuery(events int, gap time.Duration) string {
	return "?events=" + strconv.Itoa(events) + "&gap=" + gap.String()
}

// stream writes ?events= events (default 20), ?gap= apart (default 2ms),
// each flushed on its own and stamped with the unix nanos of its write, then
// data: [DONE].
func (u *Upstream) stream(w http.ResponseWriter, r *http.Request, model string) {
	u.open.Add(1)
	defer u.open.Add(-1)
	q := r.URL.Query()
	events, err := strconv.Atoi(q.Get("events"))
	if err != nil || events <= 0 {
		events = 20
	}
	gap, err := time.ParseDuration(q.Get("gap"))
	if err != nil || gap < 0 {
		gap = 2 * time.Millisecond
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	b := make([]byte, 0, 256)
	for i := range events {
		if i > 0 && gap > 0 {
			timer.Reset(gap)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				return
			}
		}
		b = append(b[:0], `data: {"t":`...)
		b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
		b = append(b, `,"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"`...)
		b = append(b, model...)
		b = append(b, `","choices":[{"index":0,"delta":{"role":"assistant","content":"tok "},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
		if _, err := w.Write(b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
	_ = rc.Flush()
}
