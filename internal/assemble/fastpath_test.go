package assemble

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// addSlow is Add with parseSlow alone: the reference parseFast is held to.
func (a *Assembler) addSlow(data []byte) (bool, error) {
	if err := parseSlow(data, &a.ev); err != nil {
		return false, err
	}
	return a.apply(&a.ev), nil
}

// Unknown keys survive at every level where the proxy keeps them, read by
// the fast path, and the reply is the one parseSlow makes.
func TestUnknownKeysKept(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		want   string
	}{
		{
			name: "top level: first non-null value",
			events: []string{
				`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"x_top":{"a":[1,2]},"t":1,"choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}]}`,
				`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","x_top":"later","t":2,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			},
			want: `{"id":"c","object":"chat.completion","created":1,"model":"m",
				"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":"stop"}],
				"system_fingerprint":"fp","t":1,"x_top":{"a":[1,2]}}`,
		},
		{
			name: "choice level: last non-null value",
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"a"},"matched_stop":null,"stop_reason":null,"x_choice":[1]}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"stop","matched_stop":2,"stop_reason":"</s>","x_choice":[2]}]`),
			},
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":"stop","matched_stop":2,"stop_reason":"</s>","x_choice":[2]}]}`,
		},
		{
			name: "delta level: strings and arrays concatenated, others replaced",
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"a","audio_note":"x","annotations":[{"n":1}],"x_num":1}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"b","audio_note":"y","annotations":[{"n":2}],"x_num":2},"finish_reason":"stop"}]`),
			},
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"ab","annotations":[{"n":1},{"n":2}],"audio_note":"xy","x_num":2},"logprobs":null,"finish_reason":"stop"}]}`,
		},
		{
			name: "tool call level: first non-null value",
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{"},"extra_content":{"sig":"a"},"x_tool":null}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"},"extra_content":{"sig":"b"},"x_tool":3}]},"finish_reason":"tool_calls"}]`),
			},
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
					{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"},"extra_content":{"sig":"a"},"x_tool":3}]},
				"logprobs":null,"finish_reason":"tool_calls"}]}`,
		},
		{
			name: "logprobs: every key merged",
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[{"token":"a"}],"x_lp":"p"}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"b"},"logprobs":{"content":[{"token":"b"}],"x_lp":"q"},"finish_reason":"stop"}]`),
			},
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"ab"},"logprobs":{"content":[{"token":"a"},{"token":"b"}],"x_lp":"pq"},"finish_reason":"stop"}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, slow := New(Chat), New(Chat)
			for _, e := range tt.events {
				if !parseFast([]byte(e), &event{}) {
					t.Errorf("parseFast left to parseSlow: %s", e)
				}
				if _, err := fast.Add([]byte(e)); err != nil {
					t.Fatal(err)
				}
				if _, err := slow.addSlow([]byte(e)); err != nil {
					t.Fatal(err)
				}
			}
			sameJSON(t, fast.JSON(), []byte(tt.want))
			if !bytes.Equal(fast.JSON(), slow.JSON()) {
				t.Errorf("fast path\n%s\nslow path\n%s", fast.JSON(), slow.JSON())
			}
		})
	}
}

// The events the proxy sees all the time are read by the fast path; the
// odd ones are left to parseSlow.
func TestParseFastCoverage(t *testing.T) {
	var usual [][]byte
	usual = append(usual, replyEvents(40, true)...)
	usual = append(usual, replyEvents(40, false)...)
	for _, e := range []string{
		// simulator.Bench's stream, "t" first
		`{"t":1735689600123456789,"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench/ok","choices":[{"index":0,"delta":{"role":"assistant","content":"tok "},"logprobs":null,"finish_reason":null}]}`,
		// SGLang
		` {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":null,"content":"Hi","reasoning_content":null,"tool_calls":null},"logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null} `,
		chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Pa"}}]}}]`),
		chatChunk(`"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}]`),
		chatChunk(`"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}`),
		chatChunk(`"choices":null,"error":null`),
		chatChunk(`"choices":[{"index":0,"delta":{"content":"\u00e9\n"},"logprobs":{"content":[{"token":"\u00e9","logprob":-0.5e-3,"bytes":[195,169],"top_logprobs":[]}]}}]`),
	} {
		usual = append(usual, []byte(e))
	}
	for _, e := range usual {
		if !parseFast(e, &event{}) {
			t.Errorf("parseFast left a usual event to parseSlow: %s", e)
		}
	}
	for _, e := range []string{
		`{"error":{"message":"CUDA error","code":500}}`,
		`{"object":"error","message":"boom"}`,
		chatChunk(`"id":"again","choices":[]`),
		chatChunk(`"x":1,"x":2,"choices":[]`),
		chatChunk(`"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]`),
		chatChunk(`"choices":[{"index":0,"delta":{"content":"a"},"message":{"content":"b"}}]`),
		chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"Name":"f"}}]}}]`),
		chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[null]}}]`),
		chatChunk(`"choices":[null]`),
		chatChunk(`"ch\u006fices":[]`),
		chatChunk(`"clé":1,"choices":[]`),
		chatChunk(`"choices":[{"index":1.0}]`),
		chatChunk(`"choices":[{"index":0,"delta":"x"}]`),
		chatChunk(`"choices":[]`) + "x",
		strings.Repeat("[", 100) + strings.Repeat("]", 100),
		chatChunk(`"deep":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"choices":[]`),
	} {
		if parseFast([]byte(e), &event{}) {
			t.Errorf("parseFast read an event it must leave to parseSlow: %s", e)
		}
	}
}

// FuzzFastPath holds Add, which reads most events with parseFast, to
// parseSlow alone: the same tokens, the same errors and the same reply, byte
// for byte. Events are lines, as in FuzzAdd.
func FuzzFastPath(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, chat bool) {
		ep := Completions
		if chat {
			ep = Chat
		}
		fast, slow := New(ep), New(ep)
		for _, ev := range bytes.Split(data, []byte("\n")) {
			// Add must not keep data: scribble over it after each call.
			in := bytes.Clone(ev)
			ft, ferr := fast.Add(in)
			clear(in)
			st, serr := slow.addSlow(ev)
			if ft != st || errString(ferr) != errString(serr) || errors.Is(ferr, ErrInvalidEvent) != errors.Is(serr, ErrInvalidEvent) {
				t.Fatalf("event %q: fast path %v, %v; parseSlow %v, %v", ev, ft, ferr, st, serr)
			}
		}
		if f, s := fast.JSON(), slow.JSON(); !bytes.Equal(f, s) {
			t.Fatalf("fast path\n%s\nparseSlow\n%s", f, s)
		}
		if fast.Text() != slow.Text() || fast.Done() != slow.Done() || fast.ID() != slow.ID() || fast.Resumable() != slow.Resumable() {
			t.Fatal("Text, Done, ID or Resumable differ")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// fuzzSeeds are every event of the tests, one reply per seed.
func fuzzSeeds() []string {
	seeds := []string{
		string(bytes.Join(replyEvents(13, true), []byte("\n"))),
		string(bytes.Join(replyEvents(13, false), []byte("\n"))),
		chatChunk(`"choices":[{"index":0,"delta":{"content":"a","ID":1,"Content":"b","extra":{"x":[1,{"y":null}]}},"Index":2,"logprobs":{"a":1,"a":2}}],"Choices":[]`),
		chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\""}},{"id":"b","function":null},{"function":{"arguments":"x"},"Type":"t"}]}}]`),
		` { "id" : "x" , "choices" : [ { "index" : -0 , "text" : "t" , "delta" : { } } ] } `,
		`{"id":"a","choices":[{"index":7,"message":null,"delta":{"content":"x"}},{"index":7,"delta":null,"message":{"content":"y"}}]}`,
	}
	for _, s := range []string{
		"\"\\ud800\"", `"\u00e9"`, "\"\xff\"", `1e5`, `-0.5E+3`, `[true,false,null]`, `{"":""}`,
	} {
		seeds = append(seeds, chatChunk(`"x":`+s+`,"choices":[{"index":0,"delta":{"content":`+s+`,"x":`+s+`},"x":`+s+`}]`))
	}
	return seeds
}
