package assemble

import "encoding/json"

// parseFast reads an event of the usual shape into ev in one pass over
// data, validating it as it goes, and allocates nothing once ev's slices
// have grown: decoding every event with encoding/json into maps, as
// parseSlow does, cost ~50 allocations and ~5 µs a token. It reports false
// for any event it cannot read exactly as parseSlow would, which then
// decides (and words the error): invalid JSON, error events, keys with
// escapes or bytes outside ASCII (encoding/json decodes those), a key sent
// twice in one object (encoding/json keeps the last), a delta or tool call
// of another type than an object, and the rest listed below.
func parseFast(data []byte, ev *event) bool {
	ev.reset()
	s := scanner{buf: data}
	s.space()
	if !s.open('{') {
		return false
	}
	var seen uint
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			break
		}
		var v json.RawMessage
		switch string(key) {
		case "id":
			ok = once(&seen, 1) && s.value(&ev.id)
		case "created":
			ok = once(&seen, 2) && s.value(&ev.created)
		case "model":
			ok = once(&seen, 4) && s.value(&ev.model)
		case "usage":
			ok = once(&seen, 8) && s.value(&ev.usage)
		case "object":
			ok = once(&seen, 16) && s.value(&v) && string(v) != `"error"`
		case "error":
			ok = once(&seen, 32) && s.value(&v) && isNull(v)
		case "choices":
			ok = once(&seen, 64) && s.choices(ev)
		default:
			ok = s.extra(&ev.extra, key, topKnown)
		}
		if !ok {
			return false
		}
	}
	s.space()
	if s.pos != len(data) {
		return false
	}
	sortMembers(ev.extra)
	return true
}

// once records bit in *seen and reports whether it was new: a known key
// that comes twice is left to encoding/json.
func once(seen *uint, bit uint) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// extra reads the value of key, not a known key of its object, into ms.
// A key that is a known one in another case is dropped, as appendMembers
// drops it.
func (s *scanner) extra(ms *[]member, key []byte, known map[string]bool) bool {
	var v json.RawMessage
	if !s.value(&v) {
		return false
	}
	if shadows(key, known) {
		return true
	}
	for _, m := range *ms {
		if string(m.key) == string(key) {
			return false
		}
	}
	*ms = append(*ms, member{key: key, v: v})
	return true
}

// shadows reports whether the ASCII key differs from a known key only in
// case.
func shadows(key []byte, known map[string]bool) bool {
	var low [24]byte // longer than any known key
	if len(key) > len(low) {
		return false
	}
	upper := false
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
			upper = true
		}
		low[i] = c
	}
	return upper && known[string(low[:len(key)])]
}

// choices reads the choices array (or null).
func (s *scanner) choices(ev *event) bool {
	if s.peek() != '[' {
		var v json.RawMessage
		return s.value(&v) && isNull(v)
	}
	s.pos++
	for first := true; ; first = false {
		done, ok := s.nextElem(first)
		if !ok || done {
			return ok
		}
		if !s.open('{') || !s.choice(ev.addChoice()) {
			return false // a null choice means something to parseSlow
		}
	}
}

// choice reads one choice object, its '{' consumed.
func (s *scanner) choice(pc *parsedChoice) bool {
	var seen uint
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			sortMembers(pc.extra)
			return true
		}
		var v json.RawMessage
		switch string(key) {
		case "index":
			ok = once(&seen, 1) && s.value(&v)
			if ok && !isNull(v) {
				pc.index, ok = parseInt(v)
			}
		case "delta", "message":
			// parseSlow reads message only when delta is null: leave
			// a choice with both to it.
			ok = once(&seen, 2) && s.delta(pc)
		case "text":
			ok = once(&seen, 4) && s.value(&pc.text)
		case "finish_reason":
			ok = once(&seen, 8) && s.value(&pc.finish)
		case "logprobs":
			ok = once(&seen, 16) && s.logprobs(pc)
		default:
			ok = s.extra(&pc.extra, key, choiceKnown)
		}
		if !ok {
			return false
		}
	}
}

// logprobs reads a choice's logprobs: an object's members are merged into
// the reply's, anything else is ignored.
func (s *scanner) logprobs(pc *parsedChoice) bool {
	if s.peek() != '{' {
		var v json.RawMessage
		return s.value(&v)
	}
	s.pos++
	pc.hasLP = true
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			sortMembers(pc.lp)
			return true
		}
		if !s.extra(&pc.lp, key, nil) {
			return false
		}
	}
}

// delta reads a choice's delta (or message): an object, or null.
func (s *scanner) delta(pc *parsedChoice) bool {
	if s.peek() != '{' {
		var v json.RawMessage
		return s.value(&v) && isNull(v)
	}
	s.pos++
	pc.delta = true
	var seen uint
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			sortMembers(pc.msgExtra)
			return true
		}
		switch string(key) {
		case "role":
			ok = once(&seen, 1) && s.value(&pc.role)
		case "content":
			ok = once(&seen, 2) && s.value(&pc.content)
		case "reasoning_content":
			ok = once(&seen, 4) && s.value(&pc.rc)
		case "reasoning":
			ok = once(&seen, 8) && s.value(&pc.rs)
		case "refusal":
			ok = once(&seen, 16) && s.value(&pc.refusal)
		case "tool_calls":
			ok = once(&seen, 32) && s.toolCalls(pc)
		default:
			ok = s.extra(&pc.msgExtra, key, deltaKnown)
		}
		if !ok {
			return false
		}
	}
}

// toolCalls reads a delta's tool_calls: an array of objects, or null.
func (s *scanner) toolCalls(pc *parsedChoice) bool {
	if s.peek() != '[' {
		var v json.RawMessage
		return s.value(&v) && isNull(v)
	}
	s.pos++
	for first := true; ; first = false {
		done, ok := s.nextElem(first)
		if !ok || done {
			return ok
		}
		if !s.open('{') || !s.tool(pc.addTool()) {
			return false
		}
	}
}

// tool reads one tool call fragment, its '{' consumed.
func (s *scanner) tool(t *parsedTool) bool {
	var seen uint
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			sortMembers(t.extra)
			return true
		}
		switch string(key) {
		case "index":
			ok = once(&seen, 1) && s.value(&t.index)
		case "id":
			ok = once(&seen, 2) && s.value(&t.id)
		case "type":
			ok = once(&seen, 4) && s.value(&t.typ)
		case "function":
			ok = once(&seen, 8) && s.function(t)
		default:
			ok = s.extra(&t.extra, key, toolKnown)
		}
		if !ok {
			return false
		}
	}
}

// function reads a tool call's function: an object with name and
// arguments only, or null. parseSlow decodes it into a struct, whose keys
// encoding/json matches in any case and which drops other keys: left to
// it.
func (s *scanner) function(t *parsedTool) bool {
	if s.peek() != '{' {
		var v json.RawMessage
		return s.value(&v) && isNull(v)
	}
	s.pos++
	var seen uint
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok || done {
			return ok
		}
		switch string(key) {
		case "name":
			ok = once(&seen, 1) && s.value(&t.name)
		case "arguments":
			ok = once(&seen, 2) && s.value(&t.args)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

// scanner reads JSON (RFC 8259, as encoding/json accepts it: any bytes
// above ASCII inside strings) from buf, validating every byte it passes.
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

func (s *scanner) space() {
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// open consumes c, a container's opening bracket.
func (s *scanner) open(c byte) bool {
	if s.peek() != c {
		return false
	}
	s.pos++
	return true
}

// next moves to the next member of the object being read and returns its
// key, leaving s.pos at the value; done is set at the closing brace instead.
// first is set for the object's first member. ok is false for invalid JSON
// and for keys parseFast leaves to parseSlow: with an escape or a byte
// outside ASCII.
func (s *scanner) next(first bool) (key []byte, done, ok bool) {
	s.space()
	switch c := s.peek(); {
	case c == '}':
		s.pos++
		return nil, true, true
	case !first && c == ',':
		s.pos++
		s.space()
	case !first:
		return nil, false, false
	}
	if s.peek() != '"' {
		return nil, false, false
	}
	start := s.pos + 1
	i := start
	for ; i < len(s.buf) && s.buf[i] != '"'; i++ {
		if c := s.buf[i]; c < 0x20 || c >= 0x80 || c == '\\' {
			return nil, false, false
		}
	}
	if i == len(s.buf) {
		return nil, false, false
	}
	key = s.buf[start:i]
	s.pos = i + 1
	s.space()
	if !s.open(':') {
		return nil, false, false
	}
	s.space()
	return key, false, true
}

// nextElem moves to the next element of the array being read, or past its
// closing bracket (done). first is set for the first element.
func (s *scanner) nextElem(first bool) (done, ok bool) {
	s.space()
	switch c := s.peek(); {
	case c == ']':
		s.pos++
		return true, true
	case !first && c == ',':
		s.pos++
		s.space()
	case !first:
		return false, false
	}
	return false, true
}

// value reads the value at s.pos into *v.
func (s *scanner) value(v *json.RawMessage) bool {
	start := s.pos
	if !s.skip() {
		return false
	}
	*v = s.buf[start:s.pos]
	return true
}

// maxDepth bounds the nesting skip follows; deeper values (encoding/json
// takes 10,000 levels) are left to parseSlow.
const maxDepth = 64

// skip passes one value, validating it, without recursion.
func (s *scanner) skip() bool {
	var objs uint64 // bit d is set when the container at depth d is an object
	depth := 0
	for {
		s.space()
		switch c := s.peek(); c {
		case '{', '[':
			s.pos++
			s.space()
			if c == '{' && s.peek() == '}' || c == '[' && s.peek() == ']' {
				s.pos++
				break
			}
			if depth == maxDepth {
				return false
			}
			objs &^= 1 << depth
			if c == '{' {
				objs |= 1 << depth
				if !s.key() {
					return false
				}
			}
			depth++
			continue
		case '"':
			if !s.str() {
				return false
			}
		case 't':
			if !s.lit("true") {
				return false
			}
		case 'f':
			if !s.lit("false") {
				return false
			}
		case 'n':
			if !s.lit("null") {
				return false
			}
		default:
			if !s.number() {
				return false
			}
		}
		// A value ended: close the containers it ends, or go on to the
		// next value.
		for {
			if depth == 0 {
				return true
			}
			s.space()
			obj := objs&(1<<(depth-1)) != 0
			c := s.peek()
			if c == ',' {
				s.pos++
				if obj && !s.key() {
					return false
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				s.pos++
				depth--
				continue
			}
			return false
		}
	}
}

// key reads a member's key, any string, and its colon.
func (s *scanner) key() bool {
	s.space()
	if !s.str() {
		return false
	}
	s.space()
	return s.open(':')
}

// special marks the bytes that end a plain run inside a JSON string: the
// closing quote, an escape, or a control character (invalid in JSON).
var special = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// str reads one string.
func (s *scanner) str() bool {
	if !s.open('"') {
		return false
	}
	buf, i := s.buf, s.pos
	for {
		for i < len(buf) && !special[buf[i]] {
			i++
		}
		if i == len(buf) || buf[i] < 0x20 {
			return false
		}
		if buf[i] == '"' {
			s.pos = i + 1
			return true
		}
		i++ // the backslash
		if i == len(buf) {
			return false
		}
		switch buf[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if i+5 > len(buf) {
				return false
			}
			for _, c := range buf[i+1 : i+5] {
				if !isHex(c) {
					return false
				}
			}
			i += 5
		default:
			return false
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func (s *scanner) lit(word string) bool {
	if len(s.buf)-s.pos < len(word) || string(s.buf[s.pos:s.pos+len(word)]) != word {
		return false
	}
	s.pos += len(word)
	return true
}

// number reads a number (RFC 8259's grammar).
func (s *scanner) number() bool {
	s.open('-')
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return false
	}
	if s.open('.') && !s.digits() {
		return false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits reads one or more digits.
func (s *scanner) digits() bool {
	start := s.pos
	for s.pos < len(s.buf) && '0' <= s.buf[s.pos] && s.buf[s.pos] <= '9' {
		s.pos++
	}
	return s.pos > start
}
