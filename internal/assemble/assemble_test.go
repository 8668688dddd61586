package assemble

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// chatChunk wraps choices (and more top-level JSON) in a chunk's usual
// identity fields.
func chatChunk(rest string) string {
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m/x",` + rest + `}`
}

func cmplChunk(rest string) string {
	return `{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m/x",` + rest + `}`
}

func TestAssemble(t *testing.T) {
	tests := []struct {
		name   string
		ep     Endpoint
		events []string
		tokens string // per event: "t" carried a token or finish_reason, "-" not
		want   string // the object, compared as JSON values
	}{
		{
			name: "text with usage",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":" \"world\" <b>\u00e9"},"logprobs":null,"finish_reason":null}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`),
				chatChunk(`"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}`),
			},
			tokens: "-ttt-",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"world\" <b>é"},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
		},
		{
			name: "reasoning_content, usage absent",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"reasoning_content":"Think"}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"reasoning_content":" hard."}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"Done","reasoning_content":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]`),
			},
			tokens: "-tttt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Done","reasoning_content":"Think hard."},"logprobs":null,"finish_reason":"stop"}]}`,
		},
		{
			name: "reasoning under its other name, and both",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","reasoning":"A","reasoning_content":"A"}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"reasoning":"B","reasoning_content":"B"}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"C"},"finish_reason":"stop"}]`),
			},
			tokens: "ttt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"C","reasoning_content":"AB","reasoning":"AB"},"logprobs":null,"finish_reason":"stop"}]}`,
		},
		{
			name: "tool calls merged by index, arguments split mid-string",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Pa"}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\""}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\"}"}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":": \"CET\"}"}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]`),
			},
			tokens: "-tttttt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
					{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},
					{"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\": \"CET\"}"}}]},
				"logprobs":null,"finish_reason":"tool_calls"}]}`,
		},
		{
			name: "tool calls without index, id and name repeated in every fragment",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"1}"}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c2","function":{"name":"g","arguments":"{}"},"extra_content":{"sig":"x"}}]}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]`),
			},
			tokens: "tttt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
					{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
					{"id":"c2","type":"function","function":{"name":"g","arguments":"{}"},"extra_content":{"sig":"x"}}]},
				"logprobs":null,"finish_reason":"tool_calls"}]}`,
		},
		{
			name: "n = 2 interleaved, finish_reason only in each choice's last chunk",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":1,"delta":{"role":"assistant","content":""}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"Zero"}}]`),
				chatChunk(`"choices":[{"index":1,"delta":{"content":"One"}}]`),
				chatChunk(`"choices":[{"index":1,"delta":{"content":" more"}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{"content":"!"},"finish_reason":"length"}]`),
				chatChunk(`"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":4,"total_tokens":5}`),
			},
			tokens: "--tttt-",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[
					{"index":0,"message":{"role":"assistant","content":"Zero"},"logprobs":null,"finish_reason":"stop"},
					{"index":1,"message":{"role":"assistant","content":"One more!"},"logprobs":null,"finish_reason":"length"}],
				"usage":{"prompt_tokens":1,"completion_tokens":4,"total_tokens":5}}`,
		},
		{
			name: "refusal",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"refusal":"I can't"}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"refusal":" help."}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]`),
			},
			tokens: "-ttt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help."},"logprobs":null,"finish_reason":"stop"}]}`,
		},
		{
			name: "refusal null throughout, as OpenAI sends it",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]`),
			},
			tokens: "-t",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null},"logprobs":null,"finish_reason":"stop"}]}`,
		},
		{
			name: "logprobs concatenated",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"A"},"logprobs":{"content":[{"token":"A","logprob":-0.5,"bytes":[65],"top_logprobs":[]}],"refusal":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"B"},"logprobs":{"content":[ ],"refusal":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"C"},"logprobs":{"content":[{"token":"C","logprob":-1.25,"bytes":[67],"top_logprobs":[]}],"refusal":null}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`),
			},
			tokens: "-tttt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"ABC"},
					"logprobs":{"content":[{"token":"A","logprob":-0.5,"bytes":[65],"top_logprobs":[]},{"token":"C","logprob":-1.25,"bytes":[67],"top_logprobs":[]}],"refusal":null},
					"finish_reason":"stop"}]}`,
		},
		{
			name: "unknown fields: top-level first value, choice-level last, delta-level concatenated",
			ep:   Chat,
			events: []string{
				`{"id":"gen-1","provider":"Fireworks","error":null,"object":"chat.completion.chunk","created":5,"model":"m/served","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"","annotations":[]},"stop_reason":null}]}`,
				`{"id":"gen-1","provider":"Other","object":"chat.completion.chunk","created":6,"model":"m/other","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"x","annotations":[{"n":1}],"audio_note":"a"},"stop_reason":null}]}`,
				`{"id":"gen-2","object":"chat.completion.chunk","created":7,"model":"m/x","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{"annotations":[{"n":2}],"audio_note":"b"},"finish_reason":"stop","stop_reason":2}]}`,
			},
			tokens: "-tt",
			want: `{"id":"gen-1","object":"chat.completion","created":5,"model":"m/served",
				"choices":[{"index":0,"message":{"role":"assistant","content":"x","annotations":[{"n":1},{"n":2}],"audio_note":"ab"},"logprobs":null,"finish_reason":"stop","stop_reason":2}],
				"provider":"Fireworks","system_fingerprint":"fp_1"}`,
		},
		{
			name: "usage in the finish chunk, and cumulative usage keeps the last",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}`),
				chatChunk(`"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`),
			},
			tokens: "tt",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"ab"},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
		},
		{
			name: "content empty, no tool calls: an empty string, not null",
			ep:   Chat,
			events: []string{
				chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]`),
				chatChunk(`"choices":[{"index":0,"delta":{"reasoning_content":"Hmm"},"finish_reason":"length"}]`),
			},
			tokens: "-t",
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m/x",
				"choices":[{"index":0,"message":{"role":"assistant","content":"","reasoning_content":"Hmm"},"logprobs":null,"finish_reason":"length"}]}`,
		},
		{
			name: "completions, n = 2, logprobs",
			ep:   Completions,
			events: []string{
				cmplChunk(`"choices":[{"index":0,"text":"One","logprobs":{"tokens":["One"],"token_logprobs":[-0.5],"top_logprobs":null,"text_offset":[0]},"finish_reason":null}]`),
				cmplChunk(`"choices":[{"index":1,"text":"Two","logprobs":{"tokens":["Two"],"token_logprobs":[-0.25],"top_logprobs":null,"text_offset":[0]},"finish_reason":null}]`),
				cmplChunk(`"choices":[{"index":0,"text":" more","logprobs":{"tokens":[" more"],"token_logprobs":[-1],"top_logprobs":null,"text_offset":[3]},"finish_reason":null}]`),
				cmplChunk(`"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"},{"index":1,"text":"","logprobs":null,"finish_reason":"length"}]`),
				cmplChunk(`"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}`),
			},
			tokens: "tttt-",
			want: `{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m/x",
				"choices":[
					{"text":"One more","index":0,"logprobs":{"tokens":["One"," more"],"token_logprobs":[-0.5,-1],"top_logprobs":null,"text_offset":[0,3]},"finish_reason":"stop"},
					{"text":"Two","index":1,"logprobs":{"tokens":["Two"],"token_logprobs":[-0.25],"top_logprobs":null,"text_offset":[0]},"finish_reason":"length"}],
				"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}`,
		},
		{
			name:   "no events",
			ep:     Completions,
			tokens: "",
			want:   `{"id":"","object":"text_completion","created":0,"model":"","choices":[]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(tt.ep)
			var tokens strings.Builder
			for i, e := range tt.events {
				tok, err := a.Add([]byte(e))
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if tok {
					tokens.WriteByte('t')
				} else {
					tokens.WriteByte('-')
				}
			}
			if want := tt.tokens; tokens.String() != want {
				t.Errorf("tokens per event %q, want %q", tokens.String(), want)
			}
			sameJSON(t, a.JSON(), []byte(tt.want))
		})
	}
}

// sameJSON fails unless got and want are equal JSON values.
func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("bad test: want is not JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		gi, _ := json.MarshalIndent(g, "", "  ")
		wi, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("got\n%s\nwant\n%s", gi, wi)
	}
}

// The output's keys come in OpenAI's order, and text is not HTML-escaped.
func TestJSONKeyOrder(t *testing.T) {
	a := New(Chat)
	for _, e := range []string{
		`{"system_fingerprint":"fp","id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"a<b","refusal":null}}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"total_tokens":1}}`,
	} {
		if _, err := a.Add([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	want := `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a<b","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"total_tokens":1},"system_fingerprint":"fp"}`
	if got := string(a.JSON()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestAddErrors(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		wantEvent bool // *EventError; else ErrInvalidEvent
	}{
		{"error object", `{"error":{"message":"CUDA error","type":"InternalServerError","code":500}}`, true},
		{"error string", `{"error":"Unhandled exception during response stream"}`, true},
		{"vLLM error", `{"object":"error","message":"boom","type":"BadRequestError","code":400}`, true},
		{"not JSON", `{"id":`, false},
		{"not an object", `[1,2]`, false},
		{"null", `null`, false},
		{"choices not an array", chatChunk(`"choices":{"index":0}`), false},
		{"index not a number", chatChunk(`"choices":[{"index":"0","delta":{"content":"x"}}]`), false},
		{"delta not an object", chatChunk(`"choices":[{"index":0,"delta":"x"}]`), false},
		{"tool_calls not an array", chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":{"index":0}}}]`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(Chat)
			if _, err := a.Add([]byte(chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"kept"}}]`))); err != nil {
				t.Fatal(err)
			}
			before := string(a.JSON())
			tok, err := a.Add([]byte(tt.data))
			if tok || err == nil {
				t.Fatalf("Add = %v, %v; want an error", tok, err)
			}
			var ee *EventError
			if isEvent := errors.As(err, &ee); isEvent != tt.wantEvent {
				t.Errorf("error %v: EventError %v, want %v", err, isEvent, tt.wantEvent)
			}
			if !tt.wantEvent && !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("error %v is not ErrInvalidEvent", err)
			}
			if tt.wantEvent && string(ee.Body) != tt.data {
				t.Errorf("EventError.Body %q", ee.Body)
			}
			if after := string(a.JSON()); after != before {
				t.Errorf("a refused event changed the reply:\n%s\n%s", before, after)
			}
		})
	}
}

func TestTextAndDone(t *testing.T) {
	a := New(Chat)
	if a.Text() != "" || a.Done() {
		t.Fatal("empty assembler has text or is done")
	}
	steps := []struct {
		event string
		text  string
		done  bool
	}{
		{chatChunk(`"choices":[{"index":1,"delta":{"role":"assistant","content":"other"}}]`), "", false},
		{chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]`), "Hel", false},
		{chatChunk(`"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]`), "Hello", false},
		{chatChunk(`"choices":[{"index":1,"delta":{},"finish_reason":"stop"}]`), "Hello", true},
		{chatChunk(`"choices":[],"usage":{"total_tokens":3}`), "Hello", true},
	}
	for i, s := range steps {
		if _, err := a.Add([]byte(s.event)); err != nil {
			t.Fatal(err)
		}
		if a.Text() != s.text || a.Done() != s.done {
			t.Errorf("after event %d: Text %q Done %v, want %q %v", i, a.Text(), a.Done(), s.text, s.done)
		}
	}
	c := New(Completions)
	for _, e := range []string{cmplChunk(`"choices":[{"index":0,"text":"a"}]`), cmplChunk(`"choices":[{"index":0,"text":" b"}]`)} {
		if _, err := c.Add([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	if c.Text() != "a b" {
		t.Errorf("completions Text %q", c.Text())
	}
}
