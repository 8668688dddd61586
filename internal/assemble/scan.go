package assemble

import (
	"encoding/json"

	"github.com/chutes-proxy/chutes-proxy/internal/jsonscan"
)

// maxDepth bounds the nesting of the values parseFast reads; deeper ones
// (encoding/json takes 10,000 levels) are left to parseSlow.
const maxDepth = 64

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
	s := scanner{jsonscan.New(data, maxDepth)}
	s.Space()
	var obj, errv json.RawMessage // "object" and "error": an error event is parseSlow's to report
	raw := [...]*json.RawMessage{&ev.id, &ev.created, &ev.model, &ev.usage, &obj, &errv}
	// A null choice means something to parseSlow: left to it.
	choices := func([]byte) bool { return s.array(func() bool { return s.choice(ev.addChoice()) }) }
	return s.object(levelTop, raw[:], &ev.extra, choices) &&
		s.End() && string(obj) != `"error"` && isNull(errv)
}

// scanner reads the objects of an event.
type scanner struct{ jsonscan.Scanner }

// object reads an object of level l: the value of the key known puts at
// place k goes to raw[k], or for k past raw to special, each at most once
// (encoding/json keeps the last of a key sent twice: left to it). Other
// keys go to extra, sorted, or with extra nil make it refuse the object.
func (s *scanner) object(l level, raw []*json.RawMessage, extra *[]member, special func(key []byte) bool) bool {
	if !s.Open('{') {
		return false
	}
	var seen uint
	for {
		key, more := s.Member()
		if !more {
			break
		}
		k, in := known(key)
		ok := false
		switch bit := uint(1) << k; {
		case in&l == 0:
			ok = extra != nil && s.extra(extra, key, l)
		case seen&bit != 0:
			return false
		case k < len(raw):
			seen |= bit
			*raw[k], ok = s.Value()
		default:
			seen |= bit
			ok = special(key)
		}
		if !ok {
			return false
		}
	}
	if extra != nil {
		sortMembers(*extra)
	}
	return !s.Failed()
}

// extra reads the value of key, not a known key of its object, into ms.
// A key that is a known one in another case is dropped, as appendMembers
// drops it.
func (s *scanner) extra(ms *[]member, key []byte, l level) bool {
	for _, c := range key {
		if c == '\\' || c >= 0x80 {
			return false // encoding/json decodes the key
		}
	}
	v, ok := s.Value()
	if !ok {
		return false
	}
	if shadows(key, l) {
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
func shadows(key []byte, l level) bool {
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
	return upper && l.has(low[:len(key)])
}

// array reads an array, each element with elem, or null.
func (s *scanner) array(elem func() bool) bool {
	if s.Peek() != '[' {
		return s.Null()
	}
	s.Open('[')
	for s.Elem() {
		if !elem() {
			return false
		}
	}
	return !s.Failed()
}

// choice reads one choice object.
func (s *scanner) choice(pc *parsedChoice) bool {
	var index json.RawMessage
	raw := [...]*json.RawMessage{&pc.text, &pc.finish, &index}
	both := false
	ok := s.object(levelChoice, raw[:], &pc.extra, func(key []byte) bool {
		if string(key) == "logprobs" {
			return s.logprobs(pc)
		}
		// parseSlow reads message only when delta is null: leave a
		// choice with both to it.
		if both {
			return false
		}
		both = true
		return s.delta(pc)
	})
	if ok && !isNull(index) {
		pc.index, ok = parseInt(index)
	}
	return ok
}

// logprobs reads a choice's logprobs: an object's members are merged into
// the reply's, anything else is ignored.
func (s *scanner) logprobs(pc *parsedChoice) bool {
	if s.Peek() != '{' {
		_, ok := s.Value()
		return ok
	}
	pc.hasLP = true
	return s.object(levelLogprobs, nil, &pc.lp, nil)
}

// delta reads a choice's delta (or message): an object, or null.
func (s *scanner) delta(pc *parsedChoice) bool {
	if s.Peek() != '{' {
		return s.Null()
	}
	pc.delta = true
	raw := [...]*json.RawMessage{&pc.role, &pc.content, &pc.rc, &pc.rs, &pc.refusal}
	toolCalls := func([]byte) bool { return s.array(func() bool { return s.tool(pc.addTool()) }) }
	return s.object(levelDelta, raw[:], &pc.msgExtra, toolCalls)
}

// tool reads one tool call fragment, and its function: an object with
// name and arguments only, or null. parseSlow decodes the function into a
// struct, whose keys encoding/json matches in any case and which drops
// other keys: left to it.
func (s *scanner) tool(t *parsedTool) bool {
	raw := [...]*json.RawMessage{&t.id, &t.typ, &t.index}
	return s.object(levelTool, raw[:], &t.extra, func([]byte) bool {
		if s.Peek() != '{' {
			return s.Null()
		}
		fn := [...]*json.RawMessage{&t.name, &t.args}
		return s.object(levelFunction, fn[:], nil, nil)
	})
}
