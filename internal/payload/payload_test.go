package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/jsonscan"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		model  string
		stream bool
		err    error
	}{
		{"simple", `{"model":"a/b","messages":[]}`, "a/b", false, nil},
		{"spaces", " \n{ \"messages\" : [ {\"role\":\"user\",\"content\":\"hi\"} ] , \"model\" : \"x\" }\n", "x", false, nil},
		{"stream", `{"stream":true,"model":"m"}`, "m", true, nil},
		{"stream false", `{"stream":false,"model":"m"}`, "m", false, nil},
		{"nested model ignored", `{"x":{"model":"inner"},"model":"outer"}`, "outer", false, nil},
		{"last model wins", `{"model":"first","model":"second"}`, "second", false, nil},
		{"escaped model", `{"model":"a\/b\u0041"}`, "a/bA", false, nil},
		{"numbers", `{"model":"m","t":-0.5e+10,"n":[1,2.25,0,-3E2]}`, "m", false, nil},
		{"literals", `{"a":true,"b":false,"c":null,"model":"m","d":{}}`, "m", false, nil},
		{"unicode", `{"model":"m","c":"héllo ✓"}`, "m", false, nil},
		{"empty", ``, "", false, ErrNotJSON},
		{"array", `[{"model":"m"}]`, "", false, ErrNotJSON},
		{"string", `"model"`, "", false, ErrNotJSON},
		{"truncated", `{"model":"m","messages":[`, "", false, ErrNotJSON},
		{"trailing comma", `{"model":"m",}`, "", false, ErrNotJSON},
		{"trailing data", `{"model":"m"} {}`, "", false, ErrNotJSON},
		{"bad number", `{"model":"m","t":01}`, "", false, ErrNotJSON},
		{"bad literal", `{"model":"m","t":tru}`, "", false, ErrNotJSON},
		{"control char", "{\"model\":\"m\",\"c\":\"a\x01\"}", "", false, ErrNotJSON},
		{"no model", `{"messages":[]}`, "", false, ErrNoModel},
		{"model number", `{"model":42}`, "", false, ErrModelType},
		{"model null", `{"model":null}`, "", false, ErrModelType},
		{"model object", `{"model":{"id":"x"}}`, "", false, ErrModelType},
		{"empty object", `{}`, "", false, ErrNoModel},
		{"deep", `{"model":"m","d":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`, "m", false, nil},
		// encoding/json's limit counts the object itself
		{"deepest", `{"model":"m","d":` + strings.Repeat("[", jsonscan.MaxDepth-1) + strings.Repeat("]", jsonscan.MaxDepth-1) + `}`, "m", false, nil},
		{"too deep", `{"model":"m","d":` + strings.Repeat("[", jsonscan.MaxDepth) + strings.Repeat("]", jsonscan.MaxDepth) + `}`, "", false, ErrNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse([]byte(tt.body))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if b.Model != tt.model || b.Stream != tt.stream {
				t.Fatalf("model %q stream %v, want %q %v", b.Model, b.Stream, tt.model, tt.stream)
			}
		})
	}
}

func TestReaderChangesOnlyModel(t *testing.T) {
	body := []byte(`{"temperature": 0.70, "model" : "deepseek-ai/DeepSeek-R1", "top_k":40, "logit_bias":{}}`)
	b, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	r, n := b.Reader("Qwen/Qwen2.5-72B-Instruct")
	got, _ := io.ReadAll(r)
	want := `{"temperature": 0.70, "model" : "Qwen/Qwen2.5-72B-Instruct", "top_k":40, "logit_bias":{}}`
	if string(got) != want || n != int64(len(want)) {
		t.Fatalf("got %s (n=%d), want %s", got, n, want)
	}
	if w := b.With("Qwen/Qwen2.5-72B-Instruct"); string(w) != want {
		t.Fatalf("With = %s", w)
	}
	same, n := b.Reader(b.Model)
	got, _ = io.ReadAll(same)
	if !bytes.Equal(got, body) || n != int64(len(body)) {
		t.Fatalf("same model changed the body: %s", got)
	}
	if string(body) != `{"temperature": 0.70, "model" : "deepseek-ai/DeepSeek-R1", "top_k":40, "logit_bias":{}}` {
		t.Fatal("Raw was modified")
	}
}

// FuzzParse checks Parse against encoding/json: whatever Parse accepts is
// valid JSON with the same model, and rewriting the model changes nothing
// else.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"model":"a/b","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`{"model":"x","model":"y"}`,
		`{"a":[1,2,{"b":null}],"model":"m\u00e9"}`,
		`{"model":1}`, `[]`, `{"model":"m",}`, `{"model":"m"}x`, "{\"model\":\"\xff\"}",
		`{"n":-1.5e3,"model":""}`,
	} {
		f.Add([]byte(s), "Qwen/Qwen2.5-72B-Instruct")
	}
	f.Fuzz(func(t *testing.T, raw []byte, repl string) {
		b, err := Parse(raw)
		valid := json.Valid(raw)
		if err == nil && !valid {
			t.Fatalf("Parse accepted invalid JSON %q", raw)
		}
		if err != nil {
			if errors.Is(err, ErrNotJSON) && valid {
				var v any
				_ = json.Unmarshal(raw, &v)
				if _, isObj := v.(map[string]any); isObj && !strings.Contains(err.Error(), "nesting") {
					t.Fatalf("Parse rejected valid JSON object %q: %v", raw, err)
				}
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("json: %v", err)
		}
		var jm string
		q, _ := json.Marshal(b.Model)
		_ = json.Unmarshal(q, &jm)
		if m["model"] != jm {
			t.Fatalf("model %q, json says %q", b.Model, m["model"])
		}
		out, _ := io.ReadAll(func() io.Reader { r, _ := b.Reader(repl); return r }())
		var m2 map[string]any
		if err := json.Unmarshal(out, &m2); err != nil {
			t.Fatalf("rewritten body does not parse: %v\n%s", err, out)
		}
		var want string
		q, _ = json.Marshal(repl)
		_ = json.Unmarshal(q, &want)
		if m2["model"] != want {
			t.Fatalf("rewritten model %q, want %q", m2["model"], want)
		}
		delete(m, "model")
		delete(m2, "model")
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("rewrite changed more than model:\n%s\n%s", raw, out)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	body := []byte(`{"model":"deepseek-ai/DeepSeek-R1","messages":[{"role":"system","content":"` + strings.Repeat("You are a helpful roleplay partner. ", 400) + `"},{"role":"user","content":"Hello there"}],"temperature":0.7,"top_k":40,"min_p":0.05,"stream":true}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReader(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<20)
	body = append([]byte(`{"model":"deepseek-ai/DeepSeek-R1","pad":"`), body...)
	body = append(body, `"}`...)
	p, err := Parse(body)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r, _ := p.Reader("Qwen/Qwen2.5-72B-Instruct")
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
