// Package jsonscan reads JSON in place: it validates every byte it passes
// as encoding/json does (RFC 8259, any bytes above ASCII inside strings)
// and hands back the raw bytes of the keys and values a caller asks for,
// without decoding them and without allocating. payload.Parse finds a
// request's "model" with it and the assembler's fast path reads stream
// events with it; FuzzScanner and FuzzAppendString hold it to
// encoding/json.
package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is encoding/json's nesting limit: json.Valid refuses a value
// nested deeper.
const MaxDepth = 10000

// Scanner reads one buffer from its start. Each method that reads reports
// whether it found JSON of the kind asked for; at the first failure Pos is
// where the JSON went wrong and Msg says how. The zero value reads an
// empty buffer and refuses any container: make one with New.
type Scanner struct {
	buf      []byte
	pos      int
	maxDepth int
	msg      string
	first    bool // Open has read a container's opening and nothing since
}

// New returns a Scanner at the start of buf whose Value refuses a value
// nested deeper than maxDepth levels: MaxDepth, or less for a caller that
// leaves deep values to encoding/json.
func New(buf []byte, maxDepth int) Scanner {
	return Scanner{buf: buf, maxDepth: maxDepth}
}

// Pos is the offset of the next byte to read.
func (s *Scanner) Pos() int { return s.pos }

// Msg says why a read failed, "" while none has.
func (s *Scanner) Msg() string { return s.msg }

// Failed reports whether a read met bytes that are not JSON.
func (s *Scanner) Failed() bool { return s.msg != "" }

func (s *Scanner) fail(msg string) bool {
	s.msg = msg
	return false
}

// failAt fails at offset i, for want of what msg says, or of anything when
// the buffer ends there.
func (s *Scanner) failAt(i int, msg string) bool {
	s.pos = i
	if i == len(s.buf) {
		msg = "unexpected end of JSON"
	}
	return s.fail(msg)
}

// Peek returns the next byte, 0 at the end.
func (s *Scanner) Peek() byte { return at(s.buf, s.pos) }

// Space passes white space.
func (s *Scanner) Space() { s.pos = space(s.buf, s.pos) }

// End passes white space and reports whether the buffer ends there.
func (s *Scanner) End() bool {
	s.Space()
	return s.pos == len(s.buf) || s.fail("data after the JSON value")
}

// Null reads the literal null.
func (s *Scanner) Null() bool { return s.lit("null") }

// Open reads c, '{' or '[', at the scanner: the start of an object whose
// members Member reads, or of an array whose elements Elem reads.
func (s *Scanner) Open(c byte) bool {
	if at(s.buf, s.pos) != c {
		return s.fail("expected an object or an array")
	}
	s.pos++
	s.first = true
	return true
}

// Member moves to the next member of the object being read, after Open or
// after the previous member's value, and returns its key as it stands
// between its quotes (escapes not decoded), with the scanner at the value.
// more is false past the object's end, and at bytes that are not JSON: then
// Failed reports true.
func (s *Scanner) Member() (key []byte, more bool) {
	buf := s.buf
	i := space(buf, s.pos)
	first := s.first
	s.first = false
	switch c := at(buf, i); {
	case c == '}':
		s.pos = i + 1
		return nil, false
	case !first && c != ',':
		return nil, s.failAt(i, "expected ',' or '}' after an object member")
	case !first:
		i = space(buf, i+1)
	}
	// Most keys are short and plain: a loop finds their end, and str
	// reads any other.
	j := i + 1
	for j < len(buf) && !special[buf[j]] {
		j++
	}
	if at(buf, i) == '"' && at(buf, j) == '"' {
		key, i = buf[i+1:j], space(buf, j+1)
	} else {
		s.pos = i
		if !s.str() {
			return nil, false
		}
		key, i = buf[i+1:s.pos-1], space(buf, s.pos)
	}
	if at(buf, i) != ':' {
		return nil, s.failAt(i, "expected ':' after an object key")
	}
	s.pos = space(buf, i+1)
	return key, true
}

// Elem moves to the next element of the array being read, after Open or
// after the previous element, with the scanner at it. It reports false
// past the array's end, and at bytes that are not JSON: then Failed
// reports true.
func (s *Scanner) Elem() bool {
	i := space(s.buf, s.pos)
	first := s.first
	s.first = false
	switch c := at(s.buf, i); {
	case c == ']':
		s.pos = i + 1
		return false
	case !first && c != ',':
		return s.failAt(i, "expected ',' or ']' after an array element")
	case !first:
		i++
	}
	s.pos = space(s.buf, i)
	return true
}

// Value reads the value at the scanner and returns its bytes.
func (s *Scanner) Value() ([]byte, bool) {
	start := s.pos
	var ok bool
	switch s.Peek() {
	case '"':
		ok = s.str()
	case '{', '[':
		ok = s.container()
	case 't':
		ok = s.lit("true")
	case 'f':
		ok = s.lit("false")
	case 'n':
		ok = s.lit("null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		ok = s.number()
	default:
		ok = s.failAt(s.pos, "unexpected character")
	}
	if !ok {
		return nil, false
	}
	return s.buf[start:s.pos], true
}

// container reads the object or array at the scanner, and every one in it,
// with a counter and a bit a level rather than recursion, so that a
// hostile value costs one pass and no stack.
func (s *Scanner) container() bool {
	// Bit 0 of objs is set when the innermost open container is an
	// object, bit 1 for the one around it, and so on; every 64 levels
	// the word moves to outer.
	var objs uint64
	var inline [2]uint64
	outer := inline[:0]
	depth := 0
	for {
		if c := s.Peek(); c == '{' || c == '[' {
			if depth == s.maxDepth {
				return s.fail("nesting too deep")
			}
			if depth > 0 && depth%64 == 0 {
				outer = append(outer, objs)
			}
			objs <<= 1
			if c == '{' {
				objs |= 1
			}
			depth++
			s.Open(c)
		} else if _, ok := s.Value(); !ok {
			return false
		}
		// Go on to the next value, past the containers that end here.
		for {
			if depth == 0 {
				return true
			}
			var more bool
			if objs&1 != 0 {
				_, more = s.Member()
			} else {
				more = s.Elem()
			}
			if more {
				break
			}
			if s.Failed() {
				return false
			}
			objs >>= 1
			if depth--; depth > 0 && depth%64 == 0 {
				objs, outer = outer[len(outer)-1], outer[:len(outer)-1]
			}
		}
	}
}

// str reads one string, in one pass: eight bytes at a time while they are
// plain (not '"', '\\' nor a control character, invalid in JSON), for
// strings are most of what a body is.
func (s *Scanner) str() bool {
	if at(s.buf, s.pos) != '"' {
		return s.fail("expected a string")
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
		s.pos = i
		switch {
		case i == len(buf):
			return s.fail("unterminated string")
		case buf[i] == '"':
			s.pos++
			return true
		case buf[i] != '\\':
			return s.fail("control character in string")
		}
		s.pos++
		switch at(buf, i+1) {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i += 2
		case 'u':
			if hex4(buf[i:]) < 0 {
				return s.fail("bad \\u escape")
			}
			i += 6
		default:
			return s.fail("bad escape")
		}
	}
}

// special marks the bytes that end a plain run inside a string: the
// closing quote, an escape, or a control character (invalid in JSON).
var special = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func (s *Scanner) lit(word string) bool {
	if len(s.buf)-s.pos < len(word) || string(s.buf[s.pos:s.pos+len(word)]) != word {
		return s.fail("invalid literal")
	}
	s.pos += len(word)
	return true
}

// number reads a number (RFC 8259's grammar).
func (s *Scanner) number() bool {
	if s.Peek() == '-' {
		s.pos++
	}
	switch c := s.Peek(); {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return s.fail("invalid number")
	}
	if s.Peek() == '.' {
		s.pos++
		if !s.digits() {
			return s.fail("invalid number")
		}
	}
	if c := s.Peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.Peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !s.digits() {
			return s.fail("invalid number")
		}
	}
	return true
}

// digits reads one or more digits.
func (s *Scanner) digits() bool {
	start := s.pos
	for s.pos < len(s.buf) && '0' <= s.buf[s.pos] && s.buf[s.pos] <= '9' {
		s.pos++
	}
	return s.pos > start
}

// space returns the offset of the first byte from i on that is not white
// space.
func space(buf []byte, i int) int {
	for i < len(buf) && buf[i] <= ' ' && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r') {
		i++
	}
	return i
}

// at returns buf[i], 0 past the end.
func at(buf []byte, i int) byte {
	if i < len(buf) {
		return buf[i]
	}
	return 0
}

// AppendString appends the JSON string v (a value as Value returns it,
// quotes included), decoded, to dst. ok is false when v is not a string;
// dst is then returned as it was. Most strings have no escapes and are
// copied as they are, bytes that are not UTF-8 included; the others are
// decoded as encoding/json decodes them, invalid UTF-8 and lone surrogates
// becoming U+FFFD.
func AppendString(dst, v []byte) (_ []byte, ok bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return dst, false
	}
	s := v[1 : len(v)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return append(dst, s...), true
	}
	return appendUnquoted(dst, s)
}

// appendUnquoted decodes the inside of a JSON string with escapes as
// encoding/json's unquote does; on a malformed one it returns dst as it was
// and false.
func appendUnquoted(dst, s []byte) ([]byte, bool) {
	n := len(dst)
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\':
			if i+1 == len(s) {
				return dst[:n], false
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/', '\'':
				dst = append(dst, e)
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(s[i:])
				if r < 0 {
					return dst[:n], false
				}
				i += 6
				if utf16.IsSurrogate(r) {
					if d := utf16.DecodeRune(r, hex4(s[i:])); d != utf8.RuneError {
						r = d
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default:
				return dst[:n], false
			}
			i += 2
		case c == '"' || c < ' ':
			return dst[:n], false
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
		}
	}
	return dst, true
}

// hex4 reads the \uXXXX escape at the start of s, -1 when there is none.
func hex4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}
