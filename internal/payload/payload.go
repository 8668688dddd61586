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

// maxDepth bounds nesting so that a hostile body cannot cost more than a
// linear scan; the scanner itself is iterative and needs no stack.
const maxDepth = 10000

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
	s := scanner{buf: raw}
	s.skipSpace()
	b.open = s.pos
	if s.pos >= len(raw) {
		return b, &SyntaxError{0, "empty body"}
	}
	if raw[s.pos] != '{' {
		return b, &SyntaxError{s.pos, "expected a JSON object"}
	}
	s.pos++
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			s.skipSpace()
			ks := s.pos
			if err := s.str(); err != nil {
				return b, err
			}
			key := raw[ks+1 : s.pos-1]
			s.skipSpace()
			if s.peek() != ':' {
				return b, &SyntaxError{s.pos, "expected ':' after object key"}
			}
			s.pos++
			s.skipSpace()
			vs := s.pos
			if err := s.value(); err != nil {
				return b, err
			}
			switch string(key) {
			case "model":
				b.start, b.end = vs, s.pos
			case "stream":
				b.Stream = string(raw[vs:s.pos]) == "true"
				b.spans[memStream] = span{vs, s.pos}
			case "stream_options":
				b.spans[memStreamOptions] = span{vs, s.pos}
			case "messages":
				b.spans[memMessages] = span{vs, s.pos}
			case "continue_final_message":
				b.spans[memContinue] = span{vs, s.pos}
			case "add_generation_prompt":
				b.spans[memGenPrompt] = span{vs, s.pos}
			}
			s.skipSpace()
			c := s.peek()
			s.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				return b, &SyntaxError{s.pos - 1, "expected ',' or '}' in object"}
			}
		}
	}
	s.skipSpace()
	if s.pos != len(raw) {
		return b, &SyntaxError{s.pos, "data after the JSON object"}
	}
	if b.start < 0 {
		return b, ErrNoModel
	}
	v := raw[b.start:b.end]
	if v[0] != '"' {
		return b, ErrModelType
	}
	if bytes.IndexByte(v, '\\') < 0 {
		b.Model = string(v[1 : len(v)-1])
	} else if err := json.Unmarshal(v, &b.Model); err != nil {
		return b, &SyntaxError{b.start, "bad string escape in model"}
	}
	if b.Model == "" {
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

type scanner struct {
	buf []byte
	pos int
}

func (s *scanner) peek() byte {
	if s.pos < len(s.buf) {
		return s.buf[s.pos]
	}
	return 0
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) errf(msg string) error { return &SyntaxError{s.pos, msg} }

// special marks the bytes that end a plain run inside a JSON string: the
// closing quote, an escape, or a control character (invalid in JSON).
var special = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// str consumes one JSON string starting at s.pos, in one pass.
func (s *scanner) str() error {
	if s.peek() != '"' {
		return s.errf("expected a string")
	}
	buf, i := s.buf, s.pos+1
	for {
		for i+8 <= len(buf) && !special[buf[i]] && !special[buf[i+1]] && !special[buf[i+2]] && !special[buf[i+3]] &&
			!special[buf[i+4]] && !special[buf[i+5]] && !special[buf[i+6]] && !special[buf[i+7]] {
			i += 8
		}
		for i < len(buf) && !special[buf[i]] {
			i++
		}
		if i >= len(buf) {
			s.pos = len(buf)
			return s.errf("unterminated string")
		}
		s.pos = i
		switch buf[i] {
		case '"':
			s.pos = i + 1
			return nil
		case '\\':
			s.pos++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				if s.pos+5 > len(buf) {
					return s.errf("short \\u escape")
				}
				for _, c := range buf[s.pos+1 : s.pos+5] {
					if !isHex(c) {
						return s.errf("bad \\u escape")
					}
				}
				s.pos += 5
			default:
				return s.errf("bad escape")
			}
			i = s.pos
		default:
			return s.errf("control character in string")
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// value consumes one JSON value. Containers are walked with a depth counter
// and a small stack of container kinds packed into bits, not recursion.
func (s *scanner) value() error {
	// stack of open containers: true = object, false = array
	var stack []bool
	for {
		s.skipSpace()
		switch c := s.peek(); {
		case c == '{' || c == '[':
			if len(stack) >= maxDepth {
				return s.errf("nesting too deep")
			}
			s.pos++
			s.skipSpace()
			closer := byte(']')
			if c == '{' {
				closer = '}'
			}
			if s.peek() == closer {
				s.pos++
				break // empty container is a complete value
			}
			stack = append(stack, c == '{')
			if c == '{' {
				if err := s.key(); err != nil {
					return err
				}
			}
			continue // parse the first element
		case c == '"':
			if err := s.str(); err != nil {
				return err
			}
		case c == '-' || '0' <= c && c <= '9':
			if err := s.number(); err != nil {
				return err
			}
		case c == 't':
			if err := s.lit("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := s.lit("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := s.lit("null"); err != nil {
				return err
			}
		default:
			if s.pos >= len(s.buf) {
				return s.errf("unexpected end of body")
			}
			return s.errf("unexpected character")
		}
		// a value is complete: close containers or move to the next element
		for {
			if len(stack) == 0 {
				return nil
			}
			s.skipSpace()
			obj := stack[len(stack)-1]
			c := s.peek()
			if c == ',' {
				s.pos++
				if obj {
					if err := s.key(); err != nil {
						return err
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				s.pos++
				stack = stack[:len(stack)-1]
				continue
			}
			if s.pos >= len(s.buf) {
				return s.errf("unexpected end of body")
			}
			return s.errf("expected ',' or a closing bracket")
		}
	}
}

// key consumes `"name" :` inside an object.
func (s *scanner) key() error {
	s.skipSpace()
	if err := s.str(); err != nil {
		return err
	}
	s.skipSpace()
	if s.peek() != ':' {
		return s.errf("expected ':' after object key")
	}
	s.pos++
	return nil
}

func (s *scanner) lit(word string) error {
	if !bytes.HasPrefix(s.buf[s.pos:], []byte(word)) {
		return s.errf("invalid literal")
	}
	s.pos += len(word)
	return nil
}

// number consumes a JSON number (RFC 8259 grammar).
func (s *scanner) number() error {
	if s.peek() == '-' {
		s.pos++
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return s.errf("invalid number")
	}
	if s.peek() == '.' {
		s.pos++
		if !s.digits() {
			return s.errf("invalid number")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !s.digits() {
			return s.errf("invalid number")
		}
	}
	return nil
}

func (s *scanner) digits() bool {
	start := s.pos
	for s.pos < len(s.buf) && '0' <= s.buf[s.pos] && s.buf[s.pos] <= '9' {
		s.pos++
	}
	return s.pos > start
}
