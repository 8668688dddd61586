package assemble

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzAdd feeds a sequence of events (one per line) to an Assembler: Add
// never panics, JSON is always valid JSON of the endpoint's object, and
// Text is choice 0's text as JSON shows it.
func FuzzAdd(f *testing.F) {
	seeds := []string{
		chatChunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi \u00e9\\n"}}]`) + "\n" +
			chatChunk(`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":1}`),
		chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\""}}]}}]`) + "\n" +
			chatChunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"x\"}"}}]}}]`),
		chatChunk(`"choices":[{"index":3,"delta":{"reasoning":"r","refusal":"no","x":[1]},"logprobs":{"content":[{"a":1}]},"stop_reason":2}]`) + "\n" +
			chatChunk(`"choices":[{"index":3,"delta":{"x":[2],"y":"s"},"logprobs":{"content":[]}}]`),
		cmplChunk(`"choices":[{"index":0,"text":"a","logprobs":{"tokens":["a"]}}]`) + "\n" + `{"error":"boom"}`,
		`{"id":1,"created":"x","model":null,"choices":null,"usage":null}`,
		"not json\n[1]\nnull\n{}",
		`{"choices":[{"index":-9223372036854775808},{"index":9223372036854775807}]}`,
	}
	for i, s := range seeds {
		f.Add([]byte(s), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, data []byte, chat bool) {
		ep := Completions
		if chat {
			ep = Chat
		}
		a := New(ep)
		for _, ev := range bytes.Split(data, []byte("\n")) {
			_, _ = a.Add(ev)
		}
		out := a.JSON()
		if !json.Valid(out) {
			t.Fatalf("JSON() is not valid JSON:\n%s", out)
		}
		// Exact keys: encoding/json's structs would match "ChoiCes" too.
		var top map[string]json.RawMessage
		if err := json.Unmarshal(out, &top); err != nil {
			t.Fatalf("JSON() is not an object: %v\n%s", err, out)
		}
		want := map[Endpoint]string{Chat: `"chat.completion"`, Completions: `"text_completion"`}[ep]
		if string(top["object"]) != want {
			t.Fatalf("object %s, want %s", top["object"], want)
		}
		var choices []map[string]json.RawMessage
		if err := json.Unmarshal(top["choices"], &choices); err != nil {
			t.Fatalf("choices: %v\n%s", err, out)
		}
		for _, c := range choices {
			if string(c["index"]) != "0" {
				continue
			}
			raw := c["text"]
			if ep == Chat {
				var m map[string]json.RawMessage
				if err := json.Unmarshal(c["message"], &m); err != nil {
					t.Fatalf("message %s: %v", c["message"], err)
				}
				raw = m["content"]
			}
			var got string
			if string(raw) != "null" {
				if err := json.Unmarshal(raw, &got); err != nil {
					t.Fatalf("content/text %s: %v", raw, err)
				}
			}
			// Text keeps the bytes as received; JSON replaces invalid
			// UTF-8, so compare through the same encoding.
			enc, _ := json.Marshal(a.Text())
			var text string
			_ = json.Unmarshal(enc, &text)
			if got != text {
				t.Fatalf("Text() %q, JSON shows %q", text, got)
			}
		}
	})
}
