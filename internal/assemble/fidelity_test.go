package assemble

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The simulator answers the same request plain and streamed; the assembled
// stream must equal the plain object field by field (id and created aside,
// which differ per request, and usage, which a stream carries only when
// asked).
func TestFidelity(t *testing.T) {
	const (
		chat  = "/v1/chat/completions"
		cmpl  = "/v1/completions"
		msgs  = `"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is the weather in Paris?"}]`
		tools = `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}}]`
	)
	reasoner := simulator.Behavior{Reasoning: "The user asks about the weather. I should answer briefly.", Reply: "It is sunny in Paris, 24 °C <b>& calm</b>."}
	tests := []struct {
		name   string
		b      simulator.Behavior
		path   string
		fields string // the request's fields besides model and stream
		usage  bool   // stream_options.include_usage
	}{
		{"chat text", simulator.Behavior{}, chat, msgs, true},
		{"chat text, usage absent", simulator.Behavior{}, chat, msgs, false},
		{"chat reasoning_content", reasoner, chat, msgs, true},
		{"chat reasoning", simulator.Behavior{Reasoning: reasoner.Reasoning, Reply: reasoner.Reply, ReasoningField: simulator.ReasoningFieldReasoning}, chat, msgs, true},
		{"chat tool calls", simulator.Behavior{ToolCalls: 2, Reasoning: "Two tools."}, chat, msgs + "," + tools, true},
		{"chat tool call forced, escapes in arguments", simulator.Behavior{ToolCalls: 1, ToolArguments: `{"q": "a \"quoted\" \\ word", "é": [1, 2]}`}, chat,
			msgs + "," + tools + `,"tool_choice":{"type":"function","function":{"name":"get_time"}}`, true},
		{"chat tool calls cut by max_tokens", simulator.Behavior{ToolCalls: 2}, chat, msgs + "," + tools + `,"max_tokens":7`, true},
		{"chat n = 2", reasoner, chat, msgs + `,"n":2`, true},
		{"chat n = 3, tool calls, usage absent", simulator.Behavior{ToolCalls: 2}, chat, msgs + "," + tools + `,"n":3`, false},
		{"chat refusal", simulator.Behavior{Refusal: "I can't help with that."}, chat, msgs, true},
		{"chat refusal with logprobs", simulator.Behavior{Refusal: "I can't help with that."}, chat, msgs + `,"logprobs":true,"top_logprobs":2`, true},
		{"chat logprobs, n = 2", simulator.Behavior{}, chat, msgs + `,"logprobs":true,"top_logprobs":3,"n":2`, true},
		{"chat cut during reasoning", reasoner, chat, msgs + `,"max_tokens":3`, true},
		{"chat continuation", simulator.Behavior{}, chat,
			`"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello from the Chutes sim"}],"continue_final_message":true,"add_generation_prompt":false`, true},
		{"completions text", simulator.Behavior{}, cmpl, `"prompt":"Say hello"`, true},
		{"completions, usage absent", simulator.Behavior{}, cmpl, `"prompt":"Say hello"`, false},
		{"completions n = 2, logprobs", reasoner, cmpl, `"prompt":"Say hello","n":2,"logprobs":2`, true},
		{"completions logprobs 0, max_tokens", simulator.Behavior{}, cmpl, `"prompt":"Say hello","logprobs":0,"max_tokens":4`, true},
		{"completions refusal", simulator.Behavior{Refusal: "No."}, cmpl, `"prompt":"Say hello"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const model = "sim/model"
			sim := simulator.New(simulator.Scenario{AcceptAnyKey: true,
				Models: []simulator.ModelScenario{{ID: model, Behavior: tt.b}}})
			srv := httptest.NewServer(sim)
			t.Cleanup(srv.Close)
			t.Cleanup(sim.Close)

			head := fmt.Sprintf(`{"model":%q,`, model)
			plain := fetch(t, srv.URL+tt.path, head+`"stream":false,`+tt.fields+`}`)
			stream := head + `"stream":true,` + tt.fields + `}`
			if tt.usage {
				stream = head + `"stream":true,"stream_options":{"include_usage":true},` + tt.fields + `}`
			}
			ep := Chat
			if tt.path == cmpl {
				ep = Completions
			}
			a := New(ep)
			tokens := assembleStream(t, a, srv.URL+tt.path, stream)
			if !a.Done() {
				t.Error("Done() false after a whole stream")
			}

			var got, want map[string]any
			if err := json.Unmarshal(a.JSON(), &got); err != nil {
				t.Fatalf("JSON(): %v\n%s", err, a.JSON())
			}
			if err := json.Unmarshal(plain, &want); err != nil {
				t.Fatalf("plain answer: %v\n%s", err, plain)
			}
			for _, k := range []string{"id", "created"} {
				if got[k] == nil || got[k] == "" || got[k] == float64(0) {
					t.Errorf("assembled %s is %v", k, got[k])
				}
				delete(got, k)
				delete(want, k)
			}
			u, _ := want["usage"].(map[string]any)
			if !tt.usage {
				if _, has := got["usage"]; has {
					t.Errorf("usage %v without include_usage", got["usage"])
				}
				delete(want, "usage")
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(want, "", "  ")
				t.Errorf("assembled stream differs from the plain answer:\nassembled %s\nplain     %s", g, w)
			}
			// Every token is one event, and so is every choice's finish.
			if n := len(want["choices"].([]any)); tokens != int(u["completion_tokens"].(float64))+n {
				t.Errorf("%d events carried a token, want completion_tokens %v + %d finishes", tokens, u["completion_tokens"], n)
			}
		})
	}
}

// fetch posts body and returns the 200 answer's body.
func fetch(t *testing.T, url, body string) []byte {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v: %s", resp.StatusCode, err, data)
	}
	return data
}

// assembleStream posts a streamed request and feeds every data: event to a,
// as the proxy will; it returns how many events carried a token.
func assembleStream(t *testing.T, a *Assembler, url, body string) (tokens int) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		tok, err := a.Add([]byte(data))
		if err != nil {
			t.Fatalf("Add(%s): %v", data, err)
		}
		if tok {
			tokens++
		}
	}
	if err := sc.Err(); err != nil || !done {
		t.Fatalf("stream ended with %v, [DONE] %v", err, done)
	}
	return tokens
}
