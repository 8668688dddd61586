// Package payload finds and replaces the "model" of an OpenAI-style JSON
// request body without decoding the rest of it. The body is read once and
// forwarded byte for byte; for a fallback model only the bytes of that one
// JSON string change, so key order, number formatting and every field the
// proxy does not know (SillyTavern's samplers, tools, response_format) reach
// the upstream untouched.
package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/chutes-proxy/chutes-proxy/internal/jsonscan"
)

// Errors Parse returns; the proxy maps them to invalid_json and missing_model.
var (
	ErrNotJSON   = errors.New("request body is not a JSON object")
	ErrNoModel   = errors.New(`request body has no "model"`)
	ErrModelType = errors.New(`"model" is not a string`)
)

// SyntaxError says where a body stops being JSON.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return "invalid JSON at byte " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// Unwrap lets callers test for ErrNotJSON.
func (e *SyntaxError) Unwrap() error { return ErrNotJSON }

// Body is a request body with the location of its top-level "model" value.
// Raw is never modified.
type Body struct {
	Raw   []byte
	Model string
	// Stream reports a top-level "stream": true.
	Stream bool
	// start and end delimit the model value's bytes, quotes included.
	start, end int
	// open is the offset of the object's '{'; spans locate the values of
	// the other members the proxy may rewrite (start -1 when absent).
	open  int
	spans [numEditable]span
}

// span delimits a member's value in Raw.
type span struct{ start, end int }

// Members that Streamed and Continued rewrite.
const (
	memStream = iota
	memStreamOptions
	memMessages
	memContinue
	memGenPrompt
	numEditable
)

var editable = [numEditable]string{"stream", "stream_options", "messages", "continue_final_message", "add_generation_prompt"}

// Parse checks that raw is one JSON object and finds its top-level "model"
// string (the last one, as Python's and Go's decoders take it) and "stream"
// flag. It allocates nothing but the model string itself.
func Parse(raw []byte) (Body, error) {
	b := Body{Raw: raw, start: -1}
	for i := range b.spans {
		b.spans[i].start = -1
	}
	// The object is one level of encoding/json's nesting limit.
	s := jsonscan.New(raw, jsonscan.MaxDepth-1)
	s.Space()
	b.open = s.Pos()
	if s.Peek() != '{' {
		msg := "expected a JSON object"
		if s.Pos() == len(raw) {
			msg = "empty body"
		}
		return b, &SyntaxError{s.Pos(), msg}
	}
	s.Open('{')
	for {
		key, more := s.Member()
		if !more {
			break
		}
		v, ok := s.Value()
		if !ok {
			break
		}
		sp := span{s.Pos() - len(v), s.Pos()}
		switch string(key) {
		case "model":
			b.start, b.end = sp.start, sp.end
		case "stream":
			b.Stream = string(v) == "true"
		}
		for i, name := range editable {
			if string(key) == name {
				b.spans[i] = sp
			}
		}
	}
	if s.Failed() || !s.End() {
		return b, &SyntaxError{s.Pos(), s.Msg()}
	}
	if b.start < 0 {
		return b, ErrNoModel
	}
	var buf [64]byte // most models decode here: the string is the one allocation
	m, ok := jsonscan.AppendString(buf[:0], raw[b.start:b.end])
	if !ok {
		return b, ErrModelType
	}
	if b.Model = string(m); b.Model == "" {
		return b, ErrNoModel // "" names no model: the app's model field is empty
	}
	return b, nil
}

// smallBody is the size up to which Reader copies a rewritten body into one
// buffer: net/http writes a *bytes.Reader body with the headers in one
// system call, but a MultiReader's pieces in several, which costs more than
// copying a few KiB.
const smallBody = 64 << 10

// Reader returns the body with its model value replaced by model, and its
// length. With the same model it reads Raw as is. A rewritten body up to
// 64 KiB is one small copy; a larger one is not copied at all: the reader
// walks the prefix, the new value and the suffix of Raw in turn.
func (b Body) Reader(model string) (io.Reader, int64) {
	if model == b.Model || b.start < 0 {
		return bytes.NewReader(b.Raw), int64(len(b.Raw))
	}
	if len(b.Raw) <= smallBody {
		w := b.With(model)
		return bytes.NewReader(w), int64(len(w))
	}
	q := Quote(model)
	n := int64(b.start + len(q) + len(b.Raw) - b.end)
	return io.MultiReader(bytes.NewReader(b.Raw[:b.start]), bytes.NewReader(q), bytes.NewReader(b.Raw[b.end:])), n
}

// With returns a new body with the model replaced: one copy of Raw. Reader is
// cheaper when the bytes only need to be sent.
func (b Body) With(model string) []byte {
	if model == b.Model || b.start < 0 {
		return b.Raw
	}
	q := Quote(model)
	out := make([]byte, 0, len(b.Raw)-(b.end-b.start)+len(q))
	out = append(out, b.Raw[:b.start]...)
	out = append(out, q...)
	return append(out, b.Raw[b.end:]...)
}

// Streamed returns the body of a plain request as a stream request with a
// usage event ("stream": true, "stream_options": {"include_usage": true}),
// every other byte as the client sent it. stream_plain sends it so that a
// reply's liveness can be judged per token.
func (b Body) Streamed() (Body, error) {
	return Parse(b.edit(nil,
		set{memStream, []byte("true")},
		set{memStreamOptions, []byte(`{"include_usage":true}`)}))
}

// ErrNoMessages is Continued's error for a body without a messages array.
var ErrNoMessages = errors.New(`the request has no "messages" array to continue`)

// Continued returns the body of a chat that continues a reply cut after
// text: the original messages plus text as a final assistant message. With
// flags it also sets "continue_final_message": true and
// "add_generation_prompt": false, which vLLM and SGLang take as "go on from
// here" (the prefill is not repeated); without, the prefill alone, for
// servers that refuse those keys.
func (b Body) Continued(text string, flags bool) (Body, error) {
	m := b.spans[memMessages]
	if m.start < 0 || b.Raw[m.start] != '[' {
		return Body{}, ErrNoMessages
	}
	msg := append([]byte(`{"role":"assistant","content":`), Quote(text)...)
	msg = append(msg, '}')
	end := m.end - 1 // the closing ']'
	if len(bytes.TrimSpace(b.Raw[m.start+1:end])) > 0 {
		msg = append([]byte{','}, msg...)
	}
	if !flags {
		return Parse(b.edit(&insert{end, msg}))
	}
	return Parse(b.edit(&insert{end, msg},
		set{memContinue, []byte("true")},
		set{memGenPrompt, []byte("false")}))
}

// set gives member mem the value v: in place when the body has it, else as
// a new first member.
type set struct {
	mem int
	v   []byte
}

// insert puts bytes at an offset of Raw.
type insert struct {
	at int
	b  []byte
}

// edit returns a copy of Raw with the members set and ins inserted.
func (b Body) edit(ins *insert, sets ...set) []byte {
	type piece struct {
		start, end int
		b          []byte
	}
	var pieces []piece
	var head []byte
	for _, st := range sets {
		if sp := b.spans[st.mem]; sp.start >= 0 {
			pieces = append(pieces, piece{sp.start, sp.end, st.v})
			continue
		}
		head = append(head, Quote(editable[st.mem])...)
		head = append(head, ':')
		head = append(head, st.v...)
		head = append(head, ',')
	}
	if len(head) > 0 {
		pieces = append(pieces, piece{b.open + 1, b.open + 1, head})
	}
	if ins != nil {
		pieces = append(pieces, piece{ins.at, ins.at, ins.b})
	}
	slices.SortFunc(pieces, func(x, y piece) int { return x.start - y.start })
	out := make([]byte, 0, len(b.Raw)+len(head)+64)
	at := 0
	for _, p := range pieces {
		out = append(out, b.Raw[at:p.start]...)
		out = append(out, p.b...)
		at = p.end
	}
	return append(out, b.Raw[at:]...)
}

// Quote returns s as a JSON string.
func Quote(s string) []byte {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			simple = false
			break
		}
	}
	if simple {
		out := make([]byte, 0, len(s)+2)
		out = append(out, '"')
		out = append(out, s...)
		return append(out, '"')
	}
	out, _ := json.Marshal(s) // a string always marshals
	return out
}
