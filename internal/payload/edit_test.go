package payload

import (
	"encoding/json"
	"reflect"
	"testing"
)

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

func TestStreamed(t *testing.T) {
	tests := []struct{ name, in string }{
		{"no stream key", `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.7}`},
		{"stream false", `{"model":"m","stream":false,"messages":[]}`},
		{"stream options already there", `{"stream_options":{"include_usage":false},"model":"m","stream":false}`},
		{"spaces", " {  \"model\" : \"m\" , \"stream\" : false } "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Streamed()
			if err != nil {
				t.Fatalf("Streamed: %v", err)
			}
			if !got.Stream || got.Model != "m" {
				t.Fatalf("Stream %v, model %q", got.Stream, got.Model)
			}
			want := decode(t, []byte(tt.in))
			want["stream"] = true
			want["stream_options"] = map[string]any{"include_usage": true}
			if m := decode(t, got.Raw); !reflect.DeepEqual(m, want) {
				t.Fatalf("got %v\nwant %v", m, want)
			}
			// The model can still be rewritten for a fallback.
			if m := decode(t, got.With("other")); m["model"] != "other" || m["stream"] != true {
				t.Fatalf("fallback body %v", m)
			}
		})
	}
}

func TestContinued(t *testing.T) {
	tests := []struct{ name, in string }{
		{"chat", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"empty messages", `{"model":"m","messages":[ ]}`},
		{"flags already set", `{"model":"m","add_generation_prompt":true,"continue_final_message":false,"messages":[{"role":"user","content":"x"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			text := "Once upon a \"time\"\n"
			got, err := b.Continued(text, true)
			if err != nil {
				t.Fatalf("Continued: %v", err)
			}
			want := decode(t, []byte(tt.in))
			want["messages"] = append(want["messages"].([]any), map[string]any{"role": "assistant", "content": text})
			want["continue_final_message"] = true
			want["add_generation_prompt"] = false
			if m := decode(t, got.Raw); !reflect.DeepEqual(m, want) {
				t.Fatalf("got %v\nwant %v", m, want)
			}
		})
	}
	b, _ := Parse([]byte(`{"model":"m","prompt":"hi"}`))
	if _, err := b.Continued("x", true); err != ErrNoMessages {
		t.Fatalf("a body without messages: %v, want ErrNoMessages", err)
	}
}

func TestContinuedPrefillOnly(t *testing.T) {
	b, _ := Parse([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	got, err := b.Continued("So", false)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, got.Raw)
	if _, ok := m["continue_final_message"]; ok {
		t.Fatalf("prefill only sets continue_final_message: %s", got.Raw)
	}
	msgs := m["messages"].([]any)
	if last := msgs[len(msgs)-1].(map[string]any); last["role"] != "assistant" || last["content"] != "So" {
		t.Fatalf("last message %v", last)
	}
}
