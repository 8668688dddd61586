// Package assemble turns the SSE events of one streamed completion back into
// the single object the same request would have got without "stream": true.
//
// The proxy streams plain requests upstream (stream_plain) so that it can
// judge a model's liveness per token; the client still asked for one JSON
// object, so everything a client reads must survive the round trip: the
// top-level identity fields (and unknown ones such as system_fingerprint),
// every choice by index, the message's role, content, reasoning, refusal and
// tool calls, logprobs, finish_reason and usage.
//
// An Assembler is fed once per event, not per byte, and is not safe for
// concurrent use: one reply, one goroutine.
package assemble

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// Endpoint is the kind of reply being assembled.
type Endpoint int

const (
	// Chat assembles chat.completion.chunk events into a chat.completion.
	Chat Endpoint = iota
	// Completions assembles legacy text_completion chunks into a
	// text_completion.
	Completions
)

// ErrInvalidEvent is returned by Add for a payload that is not a JSON object
// of the chunk shape. The event is not applied.
var ErrInvalidEvent = errors.New("invalid stream event")

// EventError is an {"error": ...} event (or vLLM's {"object": "error"}): the
// upstream gave up mid-reply. Body is the event as received, for
// failover.ReasonFromBody.
type EventError struct{ Body []byte }

func (e *EventError) Error() string {
	return "the upstream sent an error event: " + human.Truncate(string(e.Body), 200)
}

// Assembler builds one reply. The zero value is not usable; call New.
type Assembler struct {
	ep      Endpoint
	id      json.RawMessage // first non-null
	created json.RawMessage // first non-null
	model   json.RawMessage // first non-null: the model that served
	usage   json.RawMessage // last non-null: some servers send it cumulatively
	extra   fields          // other top-level keys, first non-null value
	choices []*choice       // in order of first appearance
}

// New returns an Assembler for a reply of endpoint ep.
func New(ep Endpoint) *Assembler { return &Assembler{ep: ep} }

// choice is one choice being assembled. Text fields hold the decoded bytes.
type choice struct {
	index    int
	role     []byte // decoded; "" = not seen (output "assistant")
	content  []byte // chat content, or completions text
	hasText  bool   // a non-null content/text was seen
	rc, rs   text   // reasoning_content, reasoning
	refusal  text
	tools    []*toolCall
	logprobs fields // merged as deltas
	hasLP    bool   // a non-null logprobs object was seen
	finish   json.RawMessage
	extra    fields // other choice keys (vLLM's stop_reason), last non-null
	msgExtra fields // other delta keys, merged as deltas
}

// text is an optional text field of a message: absent, null, or a string.
type text struct {
	seen bool // the key appeared, null included
	b    []byte
}

type toolCall struct {
	index int
	id    []byte
	typ   []byte
	name  []byte
	args  []byte
	extra fields // first non-null
}

// Add applies one SSE data payload (the text after "data: ", never
// "[DONE]"). It reports whether the event carried a token — non-empty
// content, reasoning, refusal or text, a tool call fragment — or a
// finish_reason: the proxy commits to a model at the first such event.
// An error event returns an *EventError, anything that is not a chunk an
// error wrapping ErrInvalidEvent; neither changes what was assembled.
func (a *Assembler) Add(data []byte) (token bool, err error) {
	ev, err := parse(data)
	if err != nil {
		return false, err
	}
	return a.apply(ev), nil
}

// event is a parsed chunk; apply cannot fail on it.
type event struct {
	top     map[string]json.RawMessage
	choices []parsedChoice
}

type parsedChoice struct {
	index int
	raw   map[string]json.RawMessage // the choice
	delta map[string]json.RawMessage // chat: delta (or message)
	tools []map[string]json.RawMessage
	lp    map[string]json.RawMessage
}

func invalid(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidEvent, what, err)
	}
	return fmt.Errorf("%w: %s", ErrInvalidEvent, what)
}

func parse(data []byte) (event, error) {
	var ev event
	if err := json.Unmarshal(data, &ev.top); err != nil {
		return ev, invalid("not JSON", err)
	}
	if ev.top == nil {
		return ev, invalid("not an object", nil)
	}
	if isError(ev.top) {
		return ev, &EventError{Body: bytes.Clone(data)}
	}
	raw := ev.top["choices"]
	if isNull(raw) {
		return ev, nil
	}
	var cs []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cs); err != nil {
		return ev, invalid("choices", err)
	}
	ev.choices = make([]parsedChoice, 0, len(cs))
	for _, c := range cs {
		pc := parsedChoice{raw: c}
		if v := c["index"]; !isNull(v) {
			var ok bool
			if pc.index, ok = parseInt(v); !ok {
				return ev, invalid("choices.index: not an integer", nil)
			}
		}
		d := c["delta"]
		if isNull(d) {
			d = c["message"] // a few servers send whole messages
		}
		if !isNull(d) {
			if err := json.Unmarshal(d, &pc.delta); err != nil {
				return ev, invalid("choices.delta", err)
			}
			if tc := pc.delta["tool_calls"]; !isNull(tc) {
				if err := json.Unmarshal(tc, &pc.tools); err != nil {
					return ev, invalid("choices.delta.tool_calls", err)
				}
			}
		}
		if lp := c["logprobs"]; !isNull(lp) && lp[0] == '{' {
			if err := json.Unmarshal(lp, &pc.lp); err != nil {
				return ev, invalid("choices.logprobs", err)
			}
		}
		ev.choices = append(ev.choices, pc)
	}
	return ev, nil
}

// isError reports whether a chunk is an error report: {"error": non-null}
// (OpenAI, Chutes) or {"object": "error"} (older vLLM).
func isError(top map[string]json.RawMessage) bool {
	if !isNull(top["error"]) {
		return true
	}
	return string(top["object"]) == `"error"`
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// Top-level keys handled by name; others are kept as extras. A null
// "error" is dropped: a client may test for the key.
var topKnown = map[string]bool{"id": true, "object": true, "created": true, "model": true, "choices": true, "usage": true, "error": true}

func (a *Assembler) apply(ev event) (token bool) {
	firstNonNull(&a.id, ev.top["id"])
	firstNonNull(&a.created, ev.top["created"])
	firstNonNull(&a.model, ev.top["model"])
	if u := ev.top["usage"]; !isNull(u) {
		a.usage = u
	}
	for _, k := range sortedKeys(ev.top, topKnown) {
		a.extra.merge(k, ev.top[k], mergeFirst)
	}
	for i := range ev.choices {
		if a.applyChoice(&ev.choices[i]) {
			token = true
		}
	}
	return token
}

func firstNonNull(dst *json.RawMessage, v json.RawMessage) {
	if *dst == nil && !isNull(v) {
		*dst = v
	}
}

var (
	choiceKnown = map[string]bool{"index": true, "delta": true, "message": true, "text": true, "logprobs": true, "finish_reason": true}
	deltaKnown  = map[string]bool{"role": true, "content": true, "reasoning_content": true, "reasoning": true, "refusal": true, "tool_calls": true}
)

func (a *Assembler) applyChoice(pc *parsedChoice) (token bool) {
	c := a.choice(pc.index)
	if v, ok := pc.raw["text"]; ok && a.ep == Completions {
		token = c.appendContent(v) || token
	}
	if pc.lp != nil {
		c.hasLP = true
		for _, k := range sortedKeys(pc.lp, nil) {
			c.logprobs.merge(k, pc.lp[k], mergeDelta)
		}
	}
	if f := pc.raw["finish_reason"]; !isNull(f) {
		c.finish = f
		token = true
	}
	for _, k := range sortedKeys(pc.raw, choiceKnown) {
		c.extra.merge(k, pc.raw[k], mergeLast)
	}
	d := pc.delta
	if d == nil {
		return token
	}
	if v := d["role"]; !isNull(v) {
		c.role, _ = appendString(c.role[:0], v)
	}
	if v, ok := d["content"]; ok {
		token = c.appendContent(v) || token
	}
	token = c.rc.add(d, "reasoning_content") || token
	token = c.rs.add(d, "reasoning") || token
	token = c.refusal.add(d, "refusal") || token
	for _, tc := range pc.tools {
		c.addTool(tc)
		token = true
	}
	for _, k := range sortedKeys(d, deltaKnown) {
		c.msgExtra.merge(k, d[k], mergeDelta)
	}
	return token
}

// choice returns the choice with index i, adding it if new. Replies have a
// handful of choices, so a scan beats a map.
func (a *Assembler) choice(i int) *choice {
	for _, c := range a.choices {
		if c.index == i {
			return c
		}
	}
	c := &choice{index: i}
	a.choices = append(a.choices, c)
	return c
}

// appendContent adds a content (or text) delta and reports whether it
// carried any text.
func (c *choice) appendContent(v json.RawMessage) bool {
	if isNull(v) {
		return false
	}
	n := len(c.content)
	var ok bool
	c.content, ok = appendString(c.content, v)
	c.hasText = c.hasText || ok
	return len(c.content) > n
}

// add appends d[key] to t and reports whether it carried text.
func (t *text) add(d map[string]json.RawMessage, key string) bool {
	v, ok := d[key]
	if !ok {
		return false
	}
	t.seen = true
	n := len(t.b)
	t.b, _ = appendString(t.b, v)
	return len(t.b) > n
}

var toolKnown = map[string]bool{"index": true, "id": true, "type": true, "function": true}

// addTool merges one tool_calls fragment. OpenAI names the call by index and
// sends id, type and name once, then the arguments in pieces; some servers
// omit index (a new id starts a new call) or repeat id and name in every
// fragment (kept once, not concatenated).
func (c *choice) addTool(m map[string]json.RawMessage) {
	var id []byte
	if v := m["id"]; !isNull(v) {
		id, _ = appendString(nil, v)
	}
	var t *toolCall
	idx, hasIdx := 0, false
	if v := m["index"]; !isNull(v) {
		idx, hasIdx = parseInt(v)
	}
	switch {
	case hasIdx:
		for _, x := range c.tools {
			if x.index == idx {
				t = x
			}
		}
	case len(id) > 0:
		for _, x := range c.tools {
			if bytes.Equal(x.id, id) {
				t = x
			}
		}
		idx = len(c.tools)
	case len(c.tools) > 0:
		t = c.tools[len(c.tools)-1]
	}
	if t == nil {
		t = &toolCall{index: idx}
		c.tools = append(c.tools, t)
	}
	if len(t.id) == 0 {
		t.id = id
	}
	if len(t.typ) == 0 {
		if v := m["type"]; !isNull(v) {
			t.typ, _ = appendString(nil, v)
		}
	}
	if v := m["function"]; !isNull(v) {
		var f struct {
			Name      json.RawMessage `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if json.Unmarshal(v, &f) == nil {
			if len(t.name) == 0 && !isNull(f.Name) {
				t.name, _ = appendString(nil, f.Name)
			}
			if !isNull(f.Arguments) {
				t.args, _ = appendString(t.args, f.Arguments)
			}
		}
	}
	for _, k := range sortedKeys(m, toolKnown) {
		t.extra.merge(k, m[k], mergeFirst)
	}
}

// appendString appends the JSON string v, decoded, to dst. ok is false when
// v is not a string (it is then ignored). Most deltas have no escapes and
// are copied as they are.
func appendString(dst []byte, v json.RawMessage) (_ []byte, ok bool) {
	if len(v) < 2 || v[0] != '"' {
		return dst, false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return append(dst, v[1:len(v)-1]...), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return dst, false
	}
	return append(dst, s...), true
}

// parseInt reads a JSON integer such as an index; ok is false for anything
// else (1.0, 1e2, a string), which json.Unmarshal into an int refuses too.
func parseInt(v json.RawMessage) (int, bool) {
	n, err := strconv.Atoi(string(v))
	return n, err == nil
}

// sortedKeys returns m's keys that are not in skip, sorted, so that extras
// come out in a stable order whatever Go's map order. A key that differs
// from a skipped one only in case is dropped too: Go clients match keys
// case-insensitively and would read it in place of the real one.
func sortedKeys(m map[string]json.RawMessage, skip map[string]bool) []string {
	n := 0
	for k := range m {
		if !skip[k] {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	ks := make([]string, 0, n)
	for k := range m {
		if !skip[k] && !skip[strings.ToLower(k)] {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

// Text returns the content (or, for completions, the text) of choice 0 so
// far: what a resumed request sends as the assistant's prefill.
func (a *Assembler) Text() string {
	for _, c := range a.choices {
		if c.index == 0 {
			return string(c.content)
		}
	}
	return ""
}

// Done reports whether at least one choice was seen and every choice seen
// has its finish_reason: the reply is whole (usage may still follow).
func (a *Assembler) Done() bool {
	for _, c := range a.choices {
		if c.finish == nil {
			return false
		}
	}
	return len(a.choices) > 0
}

// JSON returns the assembled object, always valid JSON: "object" is
// "chat.completion" or "text_completion", choices are sorted by index,
// usage is left out when no event carried one, and keys follow OpenAI's
// order with unknown ones after the known.
func (a *Assembler) JSON() []byte {
	w := newWriter()
	w.raw(`{"id":`)
	w.rawOr(a.id, `""`)
	if a.ep == Completions {
		w.raw(`,"object":"text_completion","created":`)
	} else {
		w.raw(`,"object":"chat.completion","created":`)
	}
	w.rawOr(a.created, `0`)
	w.raw(`,"model":`)
	w.rawOr(a.model, `""`)
	w.raw(`,"choices":[`)
	cs := slices.Clone(a.choices)
	slices.SortStableFunc(cs, func(x, y *choice) int { return cmp.Compare(x.index, y.index) })
	for i, c := range cs {
		if i > 0 {
			w.raw(",")
		}
		a.writeChoice(w, c)
	}
	w.raw("]")
	if a.usage != nil {
		w.raw(`,"usage":`)
		w.buf.Write(a.usage)
	}
	a.extra.write(w)
	w.raw("}")
	return w.buf.Bytes()
}

func (a *Assembler) writeChoice(w *writer, c *choice) {
	if a.ep == Completions {
		w.raw(`{"text":`)
		w.str(c.content)
		fmt.Fprintf(&w.buf, `,"index":%d`, c.index)
	} else {
		fmt.Fprintf(&w.buf, `{"index":%d,"message":`, c.index)
		c.writeMessage(w)
	}
	w.raw(`,"logprobs":`)
	if c.hasLP {
		w.raw("{")
		c.logprobs.writeFields(w, false)
		w.raw("}")
	} else {
		w.raw("null")
	}
	w.raw(`,"finish_reason":`)
	w.rawOr(c.finish, "null")
	c.extra.write(w)
	w.raw("}")
}

func (c *choice) writeMessage(w *writer) {
	w.raw(`{"role":`)
	if len(c.role) == 0 {
		w.raw(`"assistant"`)
	} else {
		w.str(c.role)
	}
	// OpenAI sends content null when the reply is only tool calls or a
	// refusal; "" stays "" (a reply cut during reasoning).
	w.raw(`,"content":`)
	if len(c.content) > 0 || c.hasText && len(c.tools) == 0 && len(c.refusal.b) == 0 {
		w.str(c.content)
	} else {
		w.raw("null")
	}
	c.rc.write(w, "reasoning_content")
	c.rs.write(w, "reasoning")
	c.refusal.write(w, "refusal")
	if len(c.tools) > 0 {
		ts := slices.Clone(c.tools)
		slices.SortStableFunc(ts, func(x, y *toolCall) int { return cmp.Compare(x.index, y.index) })
		w.raw(`,"tool_calls":[`)
		for i, t := range ts {
			if i > 0 {
				w.raw(",")
			}
			w.raw(`{"id":`)
			w.str(t.id)
			w.raw(`,"type":`)
			if len(t.typ) == 0 {
				w.raw(`"function"`)
			} else {
				w.str(t.typ)
			}
			w.raw(`,"function":{"name":`)
			w.str(t.name)
			w.raw(`,"arguments":`)
			w.str(t.args)
			w.raw("}")
			t.extra.write(w)
			w.raw("}")
		}
		w.raw("]")
	}
	c.msgExtra.write(w)
	w.raw("}")
}

// write emits `,"key":value` when the key was seen: null when it only ever
// came as null (as a plain reply would show it), else the text.
func (t *text) write(w *writer, key string) {
	if !t.seen {
		return
	}
	w.raw(`,"` + key + `":`)
	if len(t.b) == 0 {
		w.raw("null")
		return
	}
	w.str(t.b)
}

// writer builds the output; strings go through encoding/json (without HTML
// escaping, so text reads as the model wrote it).
type writer struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func newWriter() *writer {
	w := &writer{}
	w.enc = json.NewEncoder(&w.buf)
	w.enc.SetEscapeHTML(false)
	return w
}

func (w *writer) raw(s string) { w.buf.WriteString(s) }

func (w *writer) rawOr(v json.RawMessage, def string) {
	if v == nil {
		w.raw(def)
		return
	}
	w.buf.Write(v)
}

func (w *writer) str(b []byte) {
	_ = w.enc.Encode(string(b)) // a string always encodes
	w.buf.Truncate(w.buf.Len() - 1)
}

// fields are extra keys in first-seen order, each merged by a mode.
type fields []field

type field struct {
	key  string
	kind byte   // 'n' null, 's' string (decoded bytes), 'a' array (elements, no brackets), 'r' raw JSON
	b    []byte // by kind
}

type mergeMode int

const (
	mergeFirst mergeMode = iota // keep the first non-null value (identity fields)
	mergeLast                   // a later non-null value replaces (status fields)
	mergeDelta                  // strings concatenate, arrays append, others replace
)

func (fs *fields) merge(key string, v json.RawMessage, mode mergeMode) {
	var f *field
	for i := range *fs {
		if (*fs)[i].key == key {
			f = &(*fs)[i]
		}
	}
	if f == nil {
		*fs = append(*fs, field{key: key, kind: 'n'})
		f = &(*fs)[len(*fs)-1]
	}
	if isNull(v) || mode == mergeFirst && f.kind != 'n' {
		return
	}
	kind := kindOf(v)
	if mode == mergeDelta && f.kind == kind && kind != 'r' {
		switch kind {
		case 's':
			f.b, _ = appendString(f.b, v)
		case 'a':
			f.b = appendElements(f.b, v)
		}
		return
	}
	f.kind, f.b = kind, nil
	switch kind {
	case 's':
		f.b, _ = appendString(nil, v)
	case 'a':
		f.b = appendElements(nil, v)
	default:
		f.b = v
	}
}

func kindOf(v json.RawMessage) byte {
	switch v[0] {
	case '"':
		return 's'
	case '[':
		return 'a'
	}
	return 'r'
}

// appendElements appends the elements of the JSON array v to the
// comma-separated elements in dst.
func appendElements(dst []byte, v json.RawMessage) []byte {
	inner := bytes.TrimSpace(v[1 : len(v)-1])
	if len(inner) == 0 {
		return dst
	}
	if len(dst) > 0 {
		dst = append(dst, ',')
	}
	return append(dst, inner...)
}

// write emits each field as `,"key":value`.
func (fs fields) write(w *writer) { fs.writeFields(w, true) }

func (fs fields) writeFields(w *writer, leadingComma bool) {
	for i, f := range fs {
		if leadingComma || i > 0 {
			w.raw(",")
		}
		w.str([]byte(f.key))
		w.raw(":")
		switch f.kind {
		case 'n':
			w.raw("null")
		case 's':
			w.str(f.b)
		case 'a':
			w.raw("[")
			w.buf.Write(f.b)
			w.raw("]")
		default:
			w.buf.Write(f.b)
		}
	}
}
