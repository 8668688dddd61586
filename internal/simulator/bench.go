package simulator

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// Bench is the Simulator as a load test's upstream (cmd/chutes-bench). A
// Simulator decodes every body twice and encodes every answer, which costs
// several times what a proxy in front of it does; a benchmark would then
// measure the simulator. So the fast models answer chat completions from
// bytes encoded once, after finding the model with payload.Parse, and every
// other model is played by the embedded Simulator as its scenario says.
//
// A fast model's plain answer is a ~450-byte chat.completion with
// Content-Length. Its stream has ?events= chunks (default 20) ?gap= apart
// (default 0), each starting `data: {"t":N,` where N is the Unix nanoseconds
// of its write, so that a client can tell each event's delay; the last has
// finish_reason "stop". Then a usage chunk if the body asks for one
// ("include_usage":true), and data: [DONE]. With a gap each chunk is flushed
// on its own; without one, the whole stream goes out in one write: that is
// what a proxy that streams a plain request upstream gets (chutes-proxy's
// stream_plain), at the cost of one plain answer.
//
// A reset model's request is read and its connection reset (SO_LINGER 0):
// how a refused or crashed upstream looks to a proxy that holds a pooled
// connection to it.
type Bench struct {
	*Simulator
	models map[string]*benchModel // the fast and reset ones
}

type benchModel struct {
	reset    bool
	plain    []byte // the pre-encoded plain answer
	requests atomic.Int64
}

// NewBench plays sc, except for the fast and the reset models.
func NewBench(sc Scenario, fast, reset []string) *Bench {
	b := &Bench{Simulator: New(sc), models: make(map[string]*benchModel)}
	for _, id := range fast {
		b.models[id] = &benchModel{plain: benchPlain(id)}
	}
	for _, id := range reset {
		b.models[id] = &benchModel{reset: true}
	}
	return b
}

// Requests counts the inference requests that named model, as
// Simulator.Requests does.
func (b *Bench) Requests(model string) int {
	if m := b.models[model]; m != nil {
		return int(m.requests.Load())
	}
	return b.Simulator.Requests(model)
}

// benchBodies holds request buffers, so that the fast path allocates
// nothing per request once warm.
var benchBodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (b *Bench) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		b.Simulator.ServeHTTP(w, r)
		return
	}
	buf := benchBodies.Get().(*bytes.Buffer)
	buf.Reset()
	defer benchBodies.Put(buf)
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return // the client is gone
	}
	body, err := payload.Parse(buf.Bytes())
	m := b.models[body.Model]
	if err != nil || m == nil {
		r.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
		b.Simulator.ServeHTTP(w, r)
		return
	}
	m.requests.Add(1)
	switch {
	case m.reset:
		benchReset(w)
	case body.Stream:
		b.stream(w, r, body.Model, bytes.Contains(buf.Bytes(), []byte(`"include_usage":true`)))
	default:
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(m.plain)))
		_, _ = w.Write(m.plain)
	}
}

// benchPlain is a typical non-stream chat completion for model.
func benchPlain(model string) []byte {
	id, _ := json.Marshal(model)
	return []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":` + string(id) + `,"system_fingerprint":null,` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am the simulator's benchmark model. I answer at once so that what you measure is the proxy in front of me.","reasoning_content":null,"tool_calls":[]},"logprobs":null,"finish_reason":"stop","matched_stop":2}],` +
		`"usage":{"prompt_tokens":25,"total_tokens":59,"completion_tokens":34,"prompt_tokens_details":null}}`)
}

// benchReset resets the client's connection.
func benchReset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "", http.StatusBadGateway)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// stream writes a fast model's stream; see Bench.
func (b *Bench) stream(w http.ResponseWriter, r *http.Request, model string, usage bool) {
	q := r.URL.Query()
	events, err := strconv.Atoi(q.Get("events"))
	if err != nil || events <= 0 {
		events = 20
	}
	gap, err := time.ParseDuration(q.Get("gap"))
	if err != nil || gap < 0 {
		gap = 0
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	id, _ := json.Marshal(model)
	ev := make([]byte, 0, 256)
	for i := range events {
		if i > 0 && gap > 0 && b.wait(r.Context(), gap) != nil {
			return
		}
		finish := "null"
		if i == events-1 {
			finish = `"stop"`
		}
		ev = append(ev[:0], `data: {"t":`...)
		ev = strconv.AppendInt(ev, time.Now().UnixNano(), 10)
		ev = append(ev, `,"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":`...)
		ev = append(ev, id...)
		ev = append(ev, `,"choices":[{"index":0,"delta":{"role":"assistant","content":"tok "},"logprobs":null,"finish_reason":`...)
		ev = append(ev, finish+"}]}\n\n"...)
		if _, err := w.Write(ev); err != nil {
			return
		}
		if gap > 0 && rc.Flush() != nil {
			return
		}
	}
	if usage {
		ev = append(ev[:0], `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":`...)
		ev = append(ev, id...)
		ev = append(ev, `,"choices":[],"usage":{"prompt_tokens":25,"completion_tokens":`...)
		ev = strconv.AppendInt(ev, int64(events), 10)
		ev = append(ev, `,"total_tokens":`...)
		ev = strconv.AppendInt(ev, int64(25+events), 10)
		ev = append(ev, "}}\n\n"...)
		_, _ = w.Write(ev)
	}
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
	_ = rc.Flush()
}
