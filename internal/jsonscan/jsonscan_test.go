package jsonscan

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		depth int
		pos   int    // where it stops
		msg   string // "" when it reads the value
	}{
		{"object", `{"a" : [1, -0.5e+3, "x\u00e9\n", true, false, null, {}], "b":{"c":[]}}`, 3, 70, ""},
		{"empty", ``, 3, 0, "unexpected end of JSON"},
		{"stray byte", `[1,x]`, 3, 3, "unexpected character"},
		{"unterminated string", `"abc`, 3, 4, "unterminated string"},
		{"control character", "\"a\tb\"", 3, 2, "control character in string"},
		{"bad escape", `"a\x"`, 3, 3, "bad escape"},
		{"short \\u", `"\u12"`, 3, 2, "bad \\u escape"},
		{"leading zero", `01`, 3, 1, ""}, // the value is 0: End refuses the rest
		{"bare minus", `-`, 3, 1, "invalid number"},
		{"no fraction", `1.e1`, 3, 2, "invalid number"},
		{"bad literal", `tru`, 3, 0, "invalid literal"},
		{"key not a string", `{1:2}`, 3, 1, "expected a string"},
		{"missing colon", `{"a" 1}`, 3, 5, "expected ':' after an object key"},
		{"missing comma", `{"a":1 "b":2}`, 3, 7, "expected ',' or '}' after an object member"},
		{"trailing comma", `{"a":1,}`, 3, 7, "expected a string"},
		{"wrong closer", `[1}`, 3, 2, "expected ',' or ']' after an array element"},
		{"cut", `{"a":[1`, 3, 7, "unexpected end of JSON"},
		{"at the limit", `[[[]]]`, 3, 6, ""},
		{"past the limit", `[[[[]]]]`, 3, 3, "nesting too deep"},
		{"deep", strings.Repeat("[", 200) + strings.Repeat("]", 200), 200, 400, ""},
		{"deep objects", strings.Repeat(`{"a":`, 130) + "1" + strings.Repeat("}", 130), 130, 5*130 + 1 + 130, ""},
		{"deep and wrong", strings.Repeat("[", 130) + strings.Repeat("]", 129) + "}", 200, 259, "expected ',' or ']' after an array element"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New([]byte(tt.in), tt.depth)
			v, ok := s.Value()
			if ok != (tt.msg == "") || s.Msg() != tt.msg || s.Pos() != tt.pos {
				t.Fatalf("Value() = %v at %d (%q), want %q at %d", ok, s.Pos(), s.Msg(), tt.msg, tt.pos)
			}
			if ok && string(v) != tt.in[:tt.pos] {
				t.Fatalf("Value() = %q, want %q", v, tt.in[:tt.pos])
			}
		})
	}
}

func TestMembers(t *testing.T) {
	in := []byte(` { "a" : 1 , "b\"" : [ "x" , {} ] , "é" : { } , "" : null } `)
	s := New(in, MaxDepth)
	var got []string
	s.Space()
	s.Open('{')
	for key, more := s.Member(); more; key, more = s.Member() {
		v, _ := s.Value()
		got = append(got, string(key)+"="+string(v))
	}
	want := []string{`a=1`, `b\"=[ "x" , {} ]`, `é={ }`, `=null`}
	if s.Failed() || !s.End() || !reflect.DeepEqual(got, want) {
		t.Fatalf("members %q (%s), want %q", got, s.Msg(), want)
	}
}

// walk reads the value at s with Open, Member, Elem and Value, decoding
// keys and strings with AppendString, into what a json.Decoder with
// UseNumber makes of it.
func walk(s *Scanner) (any, bool) {
	switch s.Peek() {
	case '{':
		m := map[string]any{}
		s.Open('{')
		for {
			key, more := s.Member()
			if !more {
				return m, !s.Failed()
			}
			v, ok := walk(s)
			if !ok {
				return nil, false
			}
			m[decoded(append(append([]byte{'"'}, key...), '"'))] = v
		}
	case '[':
		a := []any{}
		s.Open('[')
		for s.Elem() {
			v, ok := walk(s)
			if !ok {
				return nil, false
			}
			a = append(a, v)
		}
		return a, !s.Failed()
	}
	raw, ok := s.Value()
	if !ok {
		return nil, false
	}
	switch raw[0] {
	case '"':
		return decoded(raw), true
	case 't', 'f', 'n':
		var v any
		return v, json.Unmarshal(raw, &v) == nil
	}
	return json.Number(raw), true
}

// decoded is the JSON string s decoded by AppendString, with invalid UTF-8
// replaced as json.Unmarshal replaces it in any string (AppendString copies
// a string without escapes as it is).
func decoded(s []byte) string {
	b, _ := AppendString(nil, s)
	enc, _ := json.Marshal(string(b))
	var v string
	_ = json.Unmarshal(enc, &v)
	return v
}

// FuzzScanner holds the scanner to encoding/json: Value accepts exactly
// the valid JSON values no deeper than its limit, and Open, Member, Elem
// and Value read them as json.Unmarshal does.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{
		`0`, `-`, `01`, `1.`, `1.e1`, `-0.5E+3`, `"\u12"`, `"a` + "\t" + `"`, "\"\xff\"", "\"\\ud800\"", `"\u00e9"`,
		`[1,]`, `{"a":1,}`, `{"a" 1}`, `nul`, `truex`, `[[]]`, ` {} `, `{"":""}`, `[true,false,null]`,
		`{"id":"x","choices":[{"index":0,"delta":{"content":"a\nb"},"logprobs":null}],"usage":{"total_tokens":1}}`,
		`{"a":{"b":[{"c":{}}]},"a":2,"\u0061":3}`, `[[[[[[[[[[1]]]]]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	const limit = 8 // small, so that the fuzzer meets it
	f.Fuzz(func(t *testing.T, data []byte) {
		s := New(data, limit)
		s.Space()
		_, ok := s.Value()
		ok = ok && s.End()
		valid := json.Valid(data)
		if ok && !valid {
			t.Fatalf("Value accepted invalid JSON %q", data)
		}
		if !ok && valid && depth(data) <= limit {
			t.Fatalf("Value refused valid JSON %q (at byte %d: %s)", data, s.Pos(), s.Msg())
		}
		if !ok {
			return
		}
		s = New(data, limit)
		s.Space()
		got, ok := walk(&s)
		if !ok || !s.End() {
			t.Fatalf("Member, Elem and Value refused %q (at byte %d: %s)", data, s.Pos(), s.Msg())
		}
		var want any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("read %q as\n%#v\nencoding/json:\n%#v", data, got, want)
		}
	})
}

// depth is the nesting depth of valid JSON data.
func depth(data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	d, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest
		}
		if err != nil {
			return 1 << 30
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			d++
			deepest = max(deepest, d)
		case json.Delim('}'), json.Delim(']'):
			d--
		}
	}
}

// FuzzAppendString holds AppendString's decoding of escapes to
// encoding/json's.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{
		`"plain"`, `"a\nb\"c\\d\/e\bf\fg\rh\ti"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ude00\ud83d x"`,
		`"\ud83d\u0041"`, "\"\xff\\n\xe2\x82\"", "\"\xed\xa0\x80\\t\"", `"\u0000\u001f"`, `"\x"`, `"\u12G4"`, `"a\`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want string
		if json.Unmarshal(data, &want) != nil || data[0] != '"' || data[len(data)-1] != '"' {
			return // not a string value as Value returns it: no space around
		}
		s := New(data, 0)
		if v, ok := s.Value(); !ok || !s.End() || !bytes.Equal(v, data) {
			t.Fatalf("Value refused the string %q (at byte %d: %s)", data, s.Pos(), s.Msg())
		}
		got, ok := AppendString([]byte("prefix"), data)
		if !ok {
			t.Fatalf("AppendString(%q) refused a string", data)
		}
		got = got[len("prefix"):]
		if bytes.IndexByte(data, '\\') < 0 {
			want = string(data[1 : len(data)-1]) // copied as it is
		}
		if string(got) != want {
			t.Fatalf("AppendString(%q) = %q, encoding/json %q", data, got, want)
		}
	})
}
