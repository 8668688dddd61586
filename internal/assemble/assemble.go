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
	"strconv"
	"strings"

	"github.com/chutes-proxy/chutes-proxy/internal/human"
	"github.com/chutes-proxy/chutes-proxy/internal/jsonscan"
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
	ev      event           // the event being added, reused
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
//
// Add copies what it keeps of data: the proxy reads events into a reused
// buffer.
func (a *Assembler) Add(data []byte) (token bool, err error) {
	// Nearly every event is read by parseFast alone; whatever it does not
	// read exactly as encoding/json would goes through parseSlow, which
	// decides. Both fill the same event, so apply is written once.
	if !parseFast(data, &a.ev) {
		if err := parseSlow(data, &a.ev); err != nil {
			return false, err
		}
	}
	return a.apply(&a.ev), nil
}

// event is a parsed chunk; apply cannot fail on it. Every value is a
// member's raw JSON, nil when the key is absent; it may point into Add's
// data, so apply copies what it keeps. An Assembler reuses one event, and
// with it the slices below, from one Add to the next.
type event struct {
	id, created, model, usage json.RawMessage
	extra                     []member // other top-level keys, sorted
	choices                   []parsedChoice
}

// member is a key outside the known ones, with its value. Lists of members
// are sorted by key, so that extras come out in a stable order whatever the
// order they were sent in (or Go's map order, in parseSlow).
type member struct {
	key []byte
	v   json.RawMessage
}

type parsedChoice struct {
	index  int
	text   json.RawMessage // completions' text (ignored for chat)
	finish json.RawMessage
	lp     []member // the logprobs object's members, when it is one
	hasLP  bool
	extra  []member // other choice keys
	// delta is set when the choice has a delta (or message) object; the
	// fields below are its members.
	delta                          bool
	role, content, rc, rs, refusal json.RawMessage // rc reasoning_content, rs reasoning
	tools                          []parsedTool
	msgExtra                       []member
}

type parsedTool struct {
	index, id, typ json.RawMessage
	name, args     json.RawMessage // the function object's
	extra          []member
}

func (ev *event) reset() {
	ev.id, ev.created, ev.model, ev.usage = nil, nil, nil, nil
	ev.extra, ev.choices = ev.extra[:0], ev.choices[:0]
}

// addChoice appends a zero choice, reusing the storage of an earlier event's.
func (ev *event) addChoice() *parsedChoice {
	n := len(ev.choices)
	if n == cap(ev.choices) {
		ev.choices = append(ev.choices, parsedChoice{})
		return &ev.choices[n]
	}
	ev.choices = ev.choices[:n+1]
	pc := &ev.choices[n]
	*pc = parsedChoice{lp: pc.lp[:0], extra: pc.extra[:0], tools: pc.tools[:0], msgExtra: pc.msgExtra[:0]}
	return pc
}

func (pc *parsedChoice) addTool() *parsedTool {
	n := len(pc.tools)
	if n == cap(pc.tools) {
		pc.tools = append(pc.tools, parsedTool{})
		return &pc.tools[n]
	}
	pc.tools = pc.tools[:n+1]
	t := &pc.tools[n]
	*t = parsedTool{extra: t.extra[:0]}
	return t
}

func invalid(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidEvent, what, err)
	}
	return fmt.Errorf("%w: %s", ErrInvalidEvent, what)
}

// level is one of the objects of an event, as a bit.
type level uint8

const (
	levelTop level = 1 << iota
	levelChoice
	levelDelta
	levelTool
	levelFunction
	levelLogprobs = 0 // all its keys are extras
)

// known tells the levels that handle key by name, and where it stands
// among each one's keys: parseFast reads the values of a level's first
// keys as they are, into the event's fields in the same order (see
// object). Other keys are kept as extras (see appendMembers). A null
// top-level "error" is dropped: a client may test for the key.
func known(key []byte) (place int, in level) {
	switch string(key) {
	case "id":
		return 0, levelTop | levelTool
	case "created":
		return 1, levelTop
	case "model":
		return 2, levelTop
	case "usage":
		return 3, levelTop
	case "object":
		return 4, levelTop
	case "error":
		return 5, levelTop
	case "choices":
		return 6, levelTop
	case "text":
		return 0, levelChoice
	case "finish_reason":
		return 1, levelChoice
	case "index":
		return 2, levelChoice | levelTool
	case "logprobs":
		return 3, levelChoice
	case "delta":
		return 4, levelChoice
	case "message":
		return 5, levelChoice
	case "role":
		return 0, levelDelta
	case "content":
		return 1, levelDelta
	case "reasoning_content":
		return 2, levelDelta
	case "reasoning":
		return 3, levelDelta
	case "refusal":
		return 4, levelDelta
	case "tool_calls":
		return 5, levelDelta
	case "type":
		return 1, levelTool
	case "function":
		return 3, levelTool
	case "name":
		return 0, levelFunction
	case "arguments":
		return 1, levelFunction
	}
	return 0, 0
}

// has reports whether l handles key by name.
func (l level) has(key []byte) bool {
	_, in := known(key)
	return in&l != 0
}

// parseSlow decodes any event with encoding/json, level by level into
// maps, and is the reference for what an event means: parseFast must agree
// with it on every event it accepts (FuzzFastPath).
func parseSlow(data []byte, ev *event) error {
	ev.reset()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return invalid("not JSON", err)
	}
	if top == nil {
		return invalid("not an object", nil)
	}
	if isError(top) {
		return &EventError{Body: bytes.Clone(data)}
	}
	ev.id, ev.created, ev.model, ev.usage = top["id"], top["created"], top["model"], top["usage"]
	ev.extra = appendMembers(ev.extra, top, levelTop)
	raw := top["choices"]
	if isNull(raw) {
		return nil
	}
	var cs []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cs); err != nil {
		return invalid("choices", err)
	}
	for _, c := range cs {
		pc := ev.addChoice()
		if v := c["index"]; !isNull(v) {
			var ok bool
			if pc.index, ok = parseInt(v); !ok {
				return invalid("choices.index: not an integer", nil)
			}
		}
		pc.text, pc.finish = c["text"], c["finish_reason"]
		pc.extra = appendMembers(pc.extra, c, levelChoice)
		d := c["delta"]
		if isNull(d) {
			d = c["message"] // a few servers send whole messages
		}
		if !isNull(d) {
			if err := parseSlowDelta(d, pc); err != nil {
				return err
			}
		}
		if lp := c["logprobs"]; !isNull(lp) && lp[0] == '{' {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(lp, &m); err != nil {
				return invalid("choices.logprobs", err)
			}
			pc.lp, pc.hasLP = appendMembers(pc.lp, m, levelLogprobs), true
		}
	}
	return nil
}

func parseSlowDelta(raw json.RawMessage, pc *parsedChoice) error {
	var d map[string]json.RawMessage
	if err := json.Unmarshal(raw, &d); err != nil {
		return invalid("choices.delta", err)
	}
	pc.delta = true
	pc.role, pc.content, pc.rc, pc.rs, pc.refusal = d["role"], d["content"], d["reasoning_content"], d["reasoning"], d["refusal"]
	pc.msgExtra = appendMembers(pc.msgExtra, d, levelDelta)
	tc := d["tool_calls"]
	if isNull(tc) {
		return nil
	}
	var tools []map[string]json.RawMessage
	if err := json.Unmarshal(tc, &tools); err != nil {
		return invalid("choices.delta.tool_calls", err)
	}
	for _, m := range tools {
		t := pc.addTool()
		t.index, t.id, t.typ = m["index"], m["id"], m["type"]
		t.extra = appendMembers(t.extra, m, levelTool)
		if v := m["function"]; !isNull(v) {
			var f struct {
				Name      json.RawMessage `json:"name"`
				Arguments json.RawMessage `json:"arguments"`
			}
			if json.Unmarshal(v, &f) == nil {
				t.name, t.args = f.Name, f.Arguments
			}
		}
	}
	return nil
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

// appendMembers appends m's keys that are not in skip, with their values,
// sorted. A key that differs from a skipped one only in case is dropped
// too: Go clients match keys case-insensitively and would read it in place
// of the real one.
func appendMembers(dst []member, m map[string]json.RawMessage, skip level) []member {
	n := len(dst)
	for k, v := range m {
		if !skip.has([]byte(k)) && !skip.has([]byte(strings.ToLower(k))) {
			dst = append(dst, member{key: []byte(k), v: v})
		}
	}
	sortMembers(dst[n:])
	return dst
}

func sortMembers(ms []member) {
	if len(ms) > 1 {
		slices.SortFunc(ms, func(x, y member) int { return bytes.Compare(x.key, y.key) })
	}
}

func (a *Assembler) apply(ev *event) (token bool) {
	keepFirst(&a.id, ev.id)
	keepFirst(&a.created, ev.created)
	keepFirst(&a.model, ev.model)
	if !isNull(ev.usage) {
		a.usage = bytes.Clone(ev.usage) // the last: some servers send it cumulatively
	}
	for _, m := range ev.extra {
		a.extra.merge(m.key, m.v, mergeFirst)
	}
	for i := range ev.choices {
		if a.applyChoice(&ev.choices[i]) {
			token = true
		}
	}
	return token
}

// keepFirst sets *dst to a copy of v unless it is set or v is null.
func keepFirst(dst *json.RawMessage, v json.RawMessage) {
	if *dst == nil && !isNull(v) {
		*dst = bytes.Clone(v)
	}
}

func (a *Assembler) applyChoice(pc *parsedChoice) (token bool) {
	c := a.choice(pc.index)
	if a.ep == Completions {
		token = c.appendContent(pc.text) || token
	}
	if pc.hasLP {
		c.hasLP = true
		for _, m := range pc.lp {
			c.logprobs.merge(m.key, m.v, mergeDelta)
		}
	}
	if !isNull(pc.finish) {
		c.finish = bytes.Clone(pc.finish)
		token = true
	}
	for _, m := range pc.extra {
		c.extra.merge(m.key, m.v, mergeLast)
	}
	if !pc.delta {
		return token
	}
	if !isNull(pc.role) {
		c.role, _ = jsonscan.AppendString(c.role[:0], pc.role)
	}
	token = c.appendContent(pc.content) || token
	token = c.rc.add(pc.rc) || token
	token = c.rs.add(pc.rs) || token
	token = c.refusal.add(pc.refusal) || token
	for i := range pc.tools {
		c.addTool(&pc.tools[i])
		token = true
	}
	for _, m := range pc.msgExtra {
		c.msgExtra.merge(m.key, m.v, mergeDelta)
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

// appendContent adds a content (or text) delta, absent when nil, and
// reports whether it carried any text.
func (c *choice) appendContent(v json.RawMessage) bool {
	if isNull(v) {
		return false
	}
	n := len(c.content)
	var ok bool
	c.content, ok = jsonscan.AppendString(c.content, v)
	c.hasText = c.hasText || ok
	return len(c.content) > n
}

// add appends v, absent when nil, to t and reports whether it carried
// text.
func (t *text) add(v json.RawMessage) bool {
	if v == nil {
		return false
	}
	t.seen = true
	n := len(t.b)
	t.b, _ = jsonscan.AppendString(t.b, v)
	return len(t.b) > n
}

// addTool merges one tool_calls fragment. OpenAI names the call by index and
// sends id, type and name once, then the arguments in pieces; some servers
// omit index (a new id starts a new call) or repeat id and name in every
// fragment (kept once, not concatenated).
func (c *choice) addTool(m *parsedTool) {
	var id []byte
	if !isNull(m.id) {
		id, _ = jsonscan.AppendString(nil, m.id)
	}
	var t *toolCall
	idx, hasIdx := 0, false
	if !isNull(m.index) {
		idx, hasIdx = parseInt(m.index)
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
	if len(t.typ) == 0 && !isNull(m.typ) {
		t.typ, _ = jsonscan.AppendString(nil, m.typ)
	}
	if len(t.name) == 0 && !isNull(m.name) {
		t.name, _ = jsonscan.AppendString(nil, m.name)
	}
	if !isNull(m.args) {
		t.args, _ = jsonscan.AppendString(t.args, m.args)
	}
	for _, e := range m.extra {
		t.extra.merge(e.key, e.v, mergeFirst)
	}
}

// parseInt reads a JSON integer such as an index; ok is false for anything
// else (1.0, 1e2, a string), which json.Unmarshal into an int refuses too.
func parseInt(v json.RawMessage) (int, bool) {
	n, err := strconv.Atoi(string(v))
	return n, err == nil
}

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

func (fs *fields) merge(key []byte, v json.RawMessage, mode mergeMode) {
	var f *field
	for i := range *fs {
		if (*fs)[i].key == string(key) {
			f = &(*fs)[i]
		}
	}
	if f == nil {
		*fs = append(*fs, field{key: string(key), kind: 'n'})
		f = &(*fs)[len(*fs)-1]
	}
	if isNull(v) || mode == mergeFirst && f.kind != 'n' {
		return
	}
	kind := kindOf(v)
	if mode == mergeDelta && f.kind == kind && kind != 'r' {
		switch kind {
		case 's':
			f.b, _ = jsonscan.AppendString(f.b, v)
		case 'a':
			f.b = appendElements(f.b, v)
		}
		return
	}
	f.kind, f.b = kind, nil
	switch kind {
	case 's':
		f.b, _ = jsonscan.AppendString(nil, v)
	case 'a':
		f.b = appendElements(nil, v)
	default:
		f.b = bytes.Clone(v)
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
