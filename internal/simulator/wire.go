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
	case KindEndAfter:
		x.endAfter()
	case KindStallAfter:
		x.stallAfter()
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

// start plans the reply and waits TTFT; false when the request is over
// (refused with 400, or the client left).
func (x *exchange) start() (completion, bool) {
	c, err := x.plan()
	if err != nil {
		// The model's server refuses such a request at once.
		writeDetailMessage(x.w, http.StatusBadRequest, err.Error())
		return c, false
	}
	return c, x.waitOrAbort(x.b.TTFT)
}

func (x *exchange) healthy() {
	c, ok := x.start()
	if !ok {
		return
	}
	if x.streaming() {
		x.streamEvents(x.events(c, -1))
		return
	}
	if x.ep != epEmbeddings && c.longest() > 1 {
		if !x.waitOrAbort(x.b.tokenGap() * time.Duration(c.longest()-1)) {
			return
		}
	}
	writeJSON(x.w, http.StatusOK, x.body(c))
}

// drop sends DropAfter events and then the bare error line Chutes emits when
// a miner fails mid-stream, and cuts the connection; a non-stream answer is
// cut halfway through its body.
func (x *exchange) drop() {
	c, ok := x.start()
	if !ok {
		return
	}
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
	if !x.streamEvents(x.events(c, x.b.DropAfter)) {
		return
	}
	line, _ := json.Marshal(map[string]string{"error": streamDropError})
	_, _ = x.w.Write(append(line, '\n'))
	x.flush()
	panic(http.ErrAbortHandler)
}

// endAfter sends EndAfter events and ends the response cleanly: no error,
// no finish_reason, no [DONE]. A non-stream answer is half its body, sent
// chunked and ended cleanly.
func (x *exchange) endAfter() {
	c, ok := x.start()
	if !ok {
		return
	}
	if !x.streaming() {
		body, _ := json.Marshal(x.body(c))
		x.w.Header().Set("Content-Type", "application/json")
		x.w.WriteHeader(http.StatusOK)
		_, _ = x.w.Write(body[:len(body)/2])
		x.flush() // chunked, so the short body is not announced as whole
		return
	}
	x.streamEvents(x.events(c, x.b.EndAfter))
}

// stallAfter sends StallAfter events and then nothing until the client goes
// away. A non-stream answer never comes: Chutes holds a plain reply until
// it is whole.
func (x *exchange) stallAfter() {
	c, ok := x.start()
	if !ok {
		return
	}
	if x.streaming() && !x.streamEvents(x.events(c, x.b.StallAfter)) {
		return
	}
	x.waitOrAbort(-1)
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

// event is one SSE event; paced events wait one token gap first.
type event struct {
	v     any
	paced bool
}

// events lays out a stream. cut < 0 gives the whole stream: per choice a
// role chunk (chat), its tokens and a finish chunk, the choices' tokens
// interleaved one round at a time, then the usage chunk when asked for and
// [DONE]. cut >= 0 gives exactly cut events of it, without finish chunks:
// the reply is repeated as needed, except in a continuation, whose stream
// stops after its last token instead.
func (x *exchange) events(c completion, cut int) []event {
	id := x.s.newID(x.ep)
	created := time.Now().Unix()
	object := "chat.completion.chunk"
	if x.ep == epCompletions {
		object = "text_completion"
	}
	mk := func(ch chunkChoice) event {
		return event{v: chunk{ID: id, Object: object, Created: created, Model: x.req.Model, Choices: []chunkChoice{ch}}}
	}
	offsets := make([]int, len(c.choices)) // completions text_offset per choice
	token := func(k int, p piece) event {
		ch := chunkChoice{Index: k}
		if x.ep == epCompletions {
			ch.Text = &p.text
			if c.logprobs {
				ch.Logprobs = completionLogprobs([]string{p.text}, offsets[k], c.topLogprobs)
				offsets[k] += len(p.text)
			}
			return mk(ch)
		}
		d := &delta{}
		switch p.kind {
		case pReasoning:
			if x.b.ReasoningField == ReasoningFieldReasoning {
				d.Reasoning = &p.text
			} else {
				d.ReasoningContent = &p.text
			}
		case pContent:
			d.Content = &p.text
			if c.logprobs {
				ch.Logprobs = chatLogprobs{Content: []logprobEntry{chatLogprob(p.text, c.topLogprobs)}}
			}
		case pRefusal:
			d.Refusal = &p.text
			if c.logprobs {
				ch.Logprobs = chatLogprobs{Refusal: []logprobEntry{chatLogprob(p.text, c.topLogprobs)}}
			}
		case pToolStart:
			call := c.choices[k].calls[p.call]
			d.ToolCalls = []toolCallDelta{{Index: p.call, ID: call.id, Type: "function",
				Function: functionDelta{Name: call.name}}}
		case pToolArgs:
			d.ToolCalls = []toolCallDelta{{Index: p.call, Function: functionDelta{Arguments: p.text}}}
		}
		ch.Delta = d
		return mk(ch)
	}
	finish := func(k int) event {
		f := c.choices[k].finish
		if x.ep == epCompletions {
			empty := ""
			return mk(chunkChoice{Index: k, Text: &empty, FinishReason: &f})
		}
		return mk(chunkChoice{Index: k, Delta: &delta{}, FinishReason: &f})
	}

	var evs []event
	if x.ep == epChat {
		for k := range c.choices {
			empty := ""
			evs = append(evs, mk(chunkChoice{Index: k, Delta: &delta{Role: "assistant", Content: &empty}}))
		}
	}
	for j := 0; j <= c.longest(); j++ {
		paced := true // the round's first token waits; the others go with it
		for k, ch := range c.choices {
			switch {
			case j < len(ch.pieces):
				e := token(k, ch.pieces[j])
				e.paced, paced = paced, false
				evs = append(evs, e)
			case j == len(ch.pieces) && cut < 0:
				evs = append(evs, finish(k))
			}
		}
	}
	if cut >= 0 {
		if c.continuation {
			return evs[:min(cut, len(evs))]
		}
		more := tokens(choiceReply(x.b.reply(), 0))
		for i := 0; len(evs) < cut; i++ {
			t := more[i%len(more)]
			if i%len(more) == 0 {
				t = " " + t // a new sentence after the last
			}
			e := token(0, piece{kind: pContent, text: t})
			e.paced = true
			evs = append(evs, e)
		}
		return evs[:cut]
	}
	if x.req.StreamOptions != nil && x.req.StreamOptions.IncludeUsage {
		u := newUsage(c)
		evs = append(evs, event{v: chunk{ID: id, Object: object, Created: created, Model: x.req.Model,
			Choices: []chunkChoice{}, Usage: &u}})
	}
	return append(evs, event{v: "[DONE]"})
}

// streamEvents writes the SSE headers and evs, pacing tokens, and reports
// whether every event went out. The headers wait until now because Chutes
// holds them until the first chunk.
func (x *exchange) streamEvents(evs []event) bool {
	x.sseHeaders()
	gap, first := x.b.tokenGap(), true
	for _, e := range evs {
		if e.paced {
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

// body is the non-stream answer for c: what assembling its stream gives.
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
		choices := make([]choice, len(c.choices))
		for k, ch := range c.choices {
			var toks []string
			for _, p := range ch.pieces {
				toks = append(toks, p.text)
			}
			text := strings.Join(toks, "")
			choices[k] = choice{Index: k, Text: &text, FinishReason: ch.finish}
			if c.logprobs && len(toks) > 0 {
				choices[k].Logprobs = completionLogprobs(toks, 0, c.topLogprobs)
			}
		}
		return completionBody{ID: id, Object: "text_completion", Created: created, Model: x.req.Model,
			Choices: choices, Usage: u}
	default:
		choices := make([]choice, len(c.choices))
		for k, ch := range c.choices {
			choices[k] = x.chatChoice(k, ch, c)
		}
		return completionBody{ID: id, Object: "chat.completion", Created: created, Model: x.req.Model,
			Choices: choices, Usage: u}
	}
}

// chatChoice is one choice of a non-stream chat answer. content is null
// when the reply is only tool calls or a refusal, as OpenAI sends it.
func (x *exchange) chatChoice(k int, ch choicePlan, c completion) choice {
	var reasoning, content, refusal strings.Builder
	var nContent, nRefusal int
	var calls []toolCall
	var lps chatLogprobs
	for _, p := range ch.pieces {
		switch p.kind {
		case pReasoning:
			reasoning.WriteString(p.text)
		case pContent:
			content.WriteString(p.text)
			nContent++
			if c.logprobs {
				lps.Content = append(lps.Content, chatLogprob(p.text, c.topLogprobs))
			}
		case pRefusal:
			refusal.WriteString(p.text)
			nRefusal++
			if c.logprobs {
				lps.Refusal = append(lps.Refusal, chatLogprob(p.text, c.topLogprobs))
			}
		case pToolStart:
			pc := ch.calls[p.call]
			calls = append(calls, toolCall{ID: pc.id, Type: "function", Function: functionCall{Name: pc.name}})
		case pToolArgs:
			calls[len(calls)-1].Function.Arguments += p.text
		}
	}
	msg := &message{Role: "assistant", ToolCalls: calls}
	if nContent > 0 || len(calls) == 0 && nRefusal == 0 {
		s := content.String()
		msg.Content = &s
	}
	if reasoning.Len() > 0 {
		r := reasoning.String()
		if x.b.ReasoningField == ReasoningFieldReasoning {
			msg.Reasoning = &r
		} else {
			msg.ReasoningContent = &r
		}
	}
	if nRefusal > 0 {
		r := refusal.String()
		msg.Refusal = &r
	}
	out := choice{Index: k, Message: msg, FinishReason: ch.finish}
	if lps.Content != nil || lps.Refusal != nil {
		out.Logprobs = lps
	}
	return out
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
		Role             string          `json:"role,omitempty"`
		Content          *string         `json:"content,omitempty"`
		ReasoningContent *string         `json:"reasoning_content,omitempty"`
		Reasoning        *string         `json:"reasoning,omitempty"`
		Refusal          *string         `json:"refusal,omitempty"`
		ToolCalls        []toolCallDelta `json:"tool_calls,omitempty"`
	}
	toolCallDelta struct {
		Index    int           `json:"index"`
		ID       string        `json:"id,omitempty"`
		Type     string        `json:"type,omitempty"`
		Function functionDelta `json:"function"`
	}
	functionDelta struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
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
		Role             string     `json:"role"`
		Content          *string    `json:"content"`
		ReasoningContent *string    `json:"reasoning_content,omitempty"`
		Reasoning        *string    `json:"reasoning,omitempty"`
		Refusal          *string    `json:"refusal,omitempty"`
		ToolCalls        []toolCall `json:"tool_calls,omitempty"`
	}
	toolCall struct {
		ID       string       `json:"id"`
		Type     string       `json:"type"`
		Function functionCall `json:"function"`
	}
	functionCall struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	// chatLogprobs is a chat choice's logprobs; a nil list is null.
	chatLogprobs struct {
		Content []logprobEntry `json:"content"`
		Refusal []logprobEntry `json:"refusal"`
	}
	logprobEntry struct {
		Token       string       `json:"token"`
		Logprob     float64      `json:"logprob"`
		Bytes       []int        `json:"bytes"`
		TopLogprobs []topLogprob `json:"top_logprobs"`
	}
	topLogprob struct {
		Token   string  `json:"token"`
		Logprob float64 `json:"logprob"`
		Bytes   []int   `json:"bytes"`
	}
	// legacyLogprobs are a completions choice's logprobs.
	legacyLogprobs struct {
		Tokens        []string             `json:"tokens"`
		TokenLogprobs []float64            `json:"token_logprobs"`
		TopLogprobs   []map[string]float64 `json:"top_logprobs"`
		TextOffset    []int                `json:"text_offset"`
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
