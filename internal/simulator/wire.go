package simulator

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// endpoint is an inference path without the /v1 prefix.
type endpoint string

const (
	epChat        endpoint = "/chat/completions"
	epCompletions endpoint = "/completions"
	epEmbeddings  endpoint = "/embeddings"
)

// Messages the real service sends, word for word where known.
const (
	overloadedDetail = "Infrastructure is at maximum capacity, try again later"
	paymentDetail    = "Quota exceeded and account balance is $0.0, please pay with fiat or send tao to 5SimulatedAddressDoNotSendTaoHere"
	streamDropError  = "Unhandled exception during response stream: peer closed connection without sending complete message body (incomplete chunked read)"
	firstEventError  = "Unhandled exception during response stream: CUDA error: an illegal memory access was encountered"
	garbageBody      = "<html>\r\n<head><title>Chutes</title></head>\r\n<body>\r\n<h1>Something went wrong</h1>\r\n<p>The service is temporarily unavailable. Please try again later.</p>\r\n</body>\r\n</html>\r\n"
)

// listCreated is the "created" time /v1/models reports: fixed, so listings
// compare equal across runs.
const listCreated = 1735689600 // 2025-01-01

// exchange is one inference request being answered.
type exchange struct {
	s   *Simulator
	w   http.ResponseWriter
	ctx context.Context
	req *request
	ep  endpoint
	b   Behavior
}

func (x *exchange) serve(kind string) {
	model := x.req.Model
	switch kind {
	case KindHealthy:
		x.healthy()
	case KindDown:
		writeDetail(x.w, http.StatusServiceUnavailable,
			fmt.Sprintf("No instances available (yet) for chute_id='%s'", chuteID(model)))
	case KindOverloaded:
		if x.b.RetryAfter > 0 {
			x.w.Header().Set("Retry-After", strconv.Itoa(x.b.RetryAfter))
		}
		writeDetail(x.w, http.StatusTooManyRequests, overloadedDetail)
	case KindPaymentRequired:
		writeDetail(x.w, http.StatusPaymentRequired, paymentDetail)
	case KindNotFound:
		writeDetail(x.w, http.StatusNotFound, "model not found: "+model)
	case KindHeadersThenHang:
		x.w.Header().Set("Content-Type", x.contentType())
		x.w.WriteHeader(http.StatusOK)
		x.flush()
		x.waitOrAbort(-1)
	case KindHang:
		x.waitOrAbort(-1)
	case KindDropAfter:
		x.drop()
	case KindGarbage:
		x.w.Header().Set("Content-Type", "text/html; charset=utf-8")
		x.w.Header().Set("Content-Length", strconv.Itoa(len(garbageBody)))
		x.w.WriteHeader(http.StatusOK)
		_, _ = x.w.Write([]byte(garbageBody))
	case KindErrorFirstEvent:
		x.errorFirst()
	default:
		writeDetail(x.w, http.StatusInternalServerError, fmt.Sprintf("simulator: unknown behavior kind %q", kind))
	}
}

// waitOrAbort waits d (forever if < 0) and reports whether to go on. A
// closed Simulator cuts the connection, the only way to end a request
// whose headers may be out without pretending it succeeded.
func (x *exchange) waitOrAbort(d time.Duration) bool {
	err := x.s.wait(x.ctx, d)
	if errors.Is(err, errClosed) {
		panic(http.ErrAbortHandler)
	}
	return err == nil
}

func (x *exchange) streaming() bool { return x.req.Stream && x.ep != epEmbeddings }

func (x *exchange) contentType() string {
	if x.streaming() {
		return "text/event-stream"
	}
	return "application/json"
}

func (x *exchange) flush() { _ = http.NewResponseController(x.w).Flush() }

// completion is what a model will say to one request.
type completion struct {
	reasoning, content []string
	finish             string
	promptTokens       int
}

func (c completion) completionTokens() int { return len(c.reasoning) + len(c.content) }

func (x *exchange) plan() completion {
	c := completion{content: tokens(x.b.reply()), finish: "stop"}
	if x.ep == epChat {
		c.reasoning = tokens(x.b.Reasoning)
	}
	for _, raw := range []json.RawMessage{x.req.Messages, x.req.Prompt, x.req.Input} {
		c.promptTokens += countWords(raw)
	}
	limit := x.req.MaxCompletionTokens
	if limit == 0 {
		limit = x.req.MaxTokens
	}
	if limit > 0 && c.completionTokens() > limit {
		// Reasoning is generated first, so it eats the budget first.
		c.finish = "length"
		if len(c.reasoning) >= limit {
			c.reasoning, c.content = c.reasoning[:limit], nil
		} else {
			c.content = c.content[:limit-len(c.reasoning)]
		}
	}
	return c
}

func (x *exchange) healthy() {
	if !x.waitOrAbort(x.b.TTFT) {
		return
	}
	c := x.plan()
	if x.streaming() {
		x.streamEvents(x.events(c, -1), false)
		return
	}
	if x.ep != epEmbeddings && c.completionTokens() > 1 {
		if !x.waitOrAbort(x.b.tokenGap() * time.Duration(c.completionTokens()-1)) {
			return
		}
	}
	writeJSON(x.w, http.StatusOK, x.body(c))
}

// drop sends DropAfter events and then the bare error line Chutes emits when
// a miner fails mid-stream, and cuts the connection; a non-stream answer is
// cut halfway through its body.
func (x *exchange) drop() {
	if !x.waitOrAbort(x.b.TTFT) {
		return
	}
	c := x.plan()
	if !x.streaming() {
		body, _ := json.Marshal(x.body(c))
		h := x.w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		x.w.WriteHeader(http.StatusOK)
		_, _ = x.w.Write(body[:len(body)/2])
		x.flush()
		panic(http.ErrAbortHandler)
	}
	if !x.streamEvents(x.events(c, x.b.DropAfter), true) {
		return
	}
	line, _ := json.Marshal(map[string]string{"error": streamDropError})
	_, _ = x.w.Write(append(line, '\n'))
	x.flush()
	panic(http.ErrAbortHandler)
}

// errorFirst answers 200 and then an error instead of any content: as a
// bare line (or a data: event) when streaming, as the whole JSON body when
// not.
func (x *exchange) errorFirst() {
	var v any = map[string]string{"error": firstEventError}
	if x.b.ErrorAsData {
		v = map[string]any{"error": map[string]any{
			"message": firstEventError, "type": "InternalServerError", "param": nil, "code": 500,
		}}
	}
	if !x.streaming() {
		writeJSON(x.w, http.StatusOK, v)
		return
	}
	x.sseHeaders()
	data, _ := json.Marshal(v)
	if x.b.ErrorAsData {
		_, _ = fmt.Fprintf(x.w, "data: %s\n\n", data)
	} else {
		_, _ = x.w.Write(append(data, '\n'))
	}
	x.flush()
}

func (x *exchange) sseHeaders() {
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	x.w.WriteHeader(http.StatusOK)
	x.flush()
}

// event is one SSE event; token events are paced by TokensPerSecond.
type event struct {
	v     any
	token bool
}

// events lays out a stream. drop < 0 gives the whole stream (ending with
// [DONE]); otherwise exactly drop events: the role chunk and then tokens,
// the reply repeated as often as needed.
func (x *exchange) events(c completion, drop int) []event {
	id := x.s.newID(x.ep)
	created := time.Now().Unix()
	mk := func(d *delta, text *string, finish *string, u *usage) chunk {
		ch := chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: x.req.Model, Choices: []chunkChoice{}, Usage: u}
		if x.ep == epCompletions {
			ch.Object = "text_completion"
		}
		if u == nil {
			ch.Choices = append(ch.Choices, chunkChoice{Delta: d, Text: text, FinishReason: finish})
		}
		return ch
	}
	token := func(reasoning bool, tok string) event {
		if x.ep == epCompletions {
			return event{mk(nil, &tok, nil, nil), true}
		}
		if reasoning {
			return event{mk(&delta{ReasoningContent: &tok}, nil, nil, nil), true}
		}
		return event{mk(&delta{Content: &tok}, nil, nil, nil), true}
	}

	var evs []event
	if x.ep == epChat {
		empty := ""
		evs = append(evs, event{v: mk(&delta{Role: "assistant", Content: &empty}, nil, nil, nil)})
	}
	for _, t := range c.reasoning {
		evs = append(evs, token(true, t))
	}
	for _, t := range c.content {
		evs = append(evs, token(false, t))
	}
	if drop >= 0 {
		more := tokens(x.b.reply())
		for i := 0; len(evs) < drop; i++ {
			t := more[i%len(more)]
			if i%len(more) == 0 {
				t = " " + t // a new sentence after the last
			}
			evs = append(evs, token(false, t))
		}
		return evs[:drop]
	}
	finish := c.finish
	if x.ep == epChat {
		evs = append(evs, event{v: mk(&delta{}, nil, &finish, nil)})
	} else {
		empty := ""
		evs = append(evs, event{v: mk(nil, &empty, &finish, nil)})
	}
	if x.req.StreamOptions != nil && x.req.StreamOptions.IncludeUsage {
		u := newUsage(c)
		evs = append(evs, event{v: mk(nil, nil, nil, &u)})
	}
	return append(evs, event{v: "[DONE]"})
}

// streamEvents writes the SSE headers and evs, pacing tokens, and reports
// whether every event went out. The headers wait until now because Chutes
// holds them until the first chunk.
func (x *exchange) streamEvents(evs []event, dropping bool) bool {
	x.sseHeaders()
	gap, first := x.b.tokenGap(), true
	for _, e := range evs {
		if e.token {
			if !first && !x.waitOrAbort(gap) {
				return false
			}
			first = false
		}
		var data []byte
		if s, ok := e.v.(string); ok {
			data = []byte(s)
		} else {
			data, _ = json.Marshal(e.v)
		}
		if _, err := fmt.Fprintf(x.w, "data: %s\n\n", data); err != nil {
			return false
		}
		if err := http.NewResponseController(x.w).Flush(); err != nil {
			return false
		}
	}
	return true
}

// body is the non-stream answer for c.
func (x *exchange) body(c completion) any {
	id := x.s.newID(x.ep)
	created := time.Now().Unix()
	u := newUsage(c)
	switch x.ep {
	case epEmbeddings:
		inputs := embeddingInputs(x.req.Input)
		data := make([]embedding, len(inputs))
		for i, in := range inputs {
			data[i] = embedding{Object: "embedding", Index: i, Embedding: vector(in)}
		}
		return embeddingList{Object: "list", Data: data, Model: x.req.Model,
			Usage: usage{PromptTokens: c.promptTokens, TotalTokens: c.promptTokens}}
	case epCompletions:
		text := strings.Join(c.content, "")
		return completionBody{ID: id, Object: "text_completion", Created: created, Model: x.req.Model,
			Choices: []choice{{Text: &text, FinishReason: c.finish}}, Usage: u}
	default:
		msg := &message{Role: "assistant", Content: strings.Join(c.content, "")}
		if len(c.reasoning) > 0 {
			r := strings.Join(c.reasoning, "")
			msg.ReasoningContent = &r
		}
		return completionBody{ID: id, Object: "chat.completion", Created: created, Model: x.req.Model,
			Choices: []choice{{Message: msg, FinishReason: c.finish}}, Usage: u}
	}
}

func (s *Simulator) newID(ep endpoint) string {
	prefix := "chatcmpl-"
	if ep == epCompletions {
		prefix = "cmpl-"
	}
	return fmt.Sprintf("%ssim%013x", prefix, s.seq.Add(1))
}

// Wire types, in OpenAI's shapes.
type (
	chunk struct {
		ID      string        `json:"id"`
		Object  string        `json:"object"`
		Created int64         `json:"created"`
		Model   string        `json:"model"`
		Choices []chunkChoice `json:"choices"`
		Usage   *usage        `json:"usage,omitempty"`
	}
	chunkChoice struct {
		Index        int     `json:"index"`
		Delta        *delta  `json:"delta,omitempty"`
		Text         *string `json:"text,omitempty"`
		Logprobs     any     `json:"logprobs"`
		FinishReason *string `json:"finish_reason"`
	}
	delta struct {
		Role             string  `json:"role,omitempty"`
		Content          *string `json:"content,omitempty"`
		ReasoningContent *string `json:"reasoning_content,omitempty"`
	}
	completionBody struct {
		ID      string   `json:"id"`
		Object  string   `json:"object"`
		Created int64    `json:"created"`
		Model   string   `json:"model"`
		Choices []choice `json:"choices"`
		Usage   usage    `json:"usage"`
	}
	choice struct {
		Index        int      `json:"index"`
		Message      *message `json:"message,omitempty"`
		Text         *string  `json:"text,omitempty"`
		Logprobs     any      `json:"logprobs"`
		FinishReason string   `json:"finish_reason"`
	}
	message struct {
		Role             string  `json:"role"`
		Content          string  `json:"content"`
		ReasoningContent *string `json:"reasoning_content,omitempty"`
	}
	usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens,omitempty"`
		TotalTokens      int `json:"total_tokens"`
	}
	embeddingList struct {
		Object string      `json:"object"`
		Data   []embedding `json:"data"`
		Model  string      `json:"model"`
		Usage  usage       `json:"usage"`
	}
	embedding struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	modelList struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}
	modelEntry struct {
		ID            string  `json:"id"`
		Object        string  `json:"object"`
		Created       int64   `json:"created"`
		OwnedBy       string  `json:"owned_by"`
		Root          string  `json:"root"`
		Parent        *string `json:"parent"`
		ChuteID       string  `json:"chute_id"`
		ContextLength int     `json:"context_length"`
		MaxModelLen   int     `json:"max_model_len"`
		Pricing       pricing `json:"pricing"`
	}
	// pricing is USD per million tokens.
	pricing struct {
		Prompt     float64 `json:"prompt"`
		Completion float64 `json:"completion"`
	}
)

func newUsage(c completion) usage {
	n := c.completionTokens()
	return usage{PromptTokens: c.promptTokens, CompletionTokens: n, TotalTokens: c.promptTokens + n}
}

// serveModels lists the configured models, in scenario order; not_found
// models are left out, as a model Chutes does not know is not listed.
func (s *Simulator) serveModels(w http.ResponseWriter) {
	s.listCalls.Add(1)
	list := modelList{Object: "list", Data: []modelEntry{}}
	s.mu.Lock()
	for _, id := range s.order {
		b := s.models[id].b
		if b.kind() == KindNotFound {
			continue
		}
		n := b.contextLength()
		list.Data = append(list.Data, modelEntry{
			ID: id, Object: "model", Created: listCreated, OwnedBy: "sglang", Root: id,
			ChuteID: chuteID(id), ContextLength: n, MaxModelLen: n,
			Pricing: pricing{Prompt: 0.27, Completion: 0.27},
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, list)
}

// chuteID is a stable UUIDv5-shaped id for a model, like the ids Chutes
// derives from a chute's name.
func chuteID(model string) string {
	sum := sha1.Sum([]byte("chutes-simulator:" + model))
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

// writeDetail writes a FastAPI-shaped error, {"detail": "..."}.
func writeDetail(w http.ResponseWriter, status int, detail string) {
	writeJSON(w, status, map[string]string{"detail": detail})
}

// writeDetailMessage writes the other shape Chutes uses,
// {"detail": {"message": "..."}}.
func writeDetailMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]map[string]string{"detail": {"message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"detail":"simulator: cannot encode response"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// countWords counts the words in every string inside a JSON value: a rough
// token count for usage.
func countWords(raw json.RawMessage) int {
	if len(raw) == 0 {
		return 0
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return 0
	}
	var walk func(any) int
	walk = func(v any) int {
		switch v := v.(type) {
		case string:
			return len(strings.Fields(v))
		case []any:
			n := 0
			for _, e := range v {
				n += walk(e)
			}
			return n
		case map[string]any:
			n := 0
			for _, e := range v {
				n += walk(e)
			}
			return n
		}
		return 0
	}
	return walk(v)
}

// embeddingInputs splits an embeddings "input" into its items: a string, or
// an array of anything (each item's JSON text stands for it).
func embeddingInputs(raw json.RawMessage) []string {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
		out := make([]string, len(many))
		for i, m := range many {
			out[i] = string(m)
		}
		return out
	}
	return []string{string(raw)}
}

// vector is a deterministic unit-length 16-dimensional embedding of text.
func vector(text string) []float64 {
	h := fnv.New64a()
	h.Write([]byte(text))
	r := rand.New(rand.NewPCG(h.Sum64(), 0))
	v := make([]float64, 16)
	var norm float64
	for i := range v {
		v[i] = r.Float64()*2 - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	for i := range v {
		v[i] /= norm
	}
	return v
}
