package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func decodeJSON(t *testing.T, r io.Reader) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.NewDecoder(r).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// chunksOf reads a whole stream and returns its JSON events; done reports
// whether it ended with data: [DONE].
func chunksOf(t *testing.T, r io.Reader) (chunks []map[string]any, done bool) {
	t.Helper()
	lines, err := sse(t, r)
	if err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	for _, l := range lines {
		data, ok := strings.CutPrefix(l, "data: ")
		if !ok {
			t.Fatalf("line %q is not a data: line", l)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	return chunks, done
}

// deltas returns the deltas of choice index in a chat stream's chunks.
func deltas(chunks []map[string]any, index int) []map[string]any {
	var out []map[string]any
	for _, c := range chunks {
		for _, ch := range c["choices"].([]any) {
			ch := ch.(map[string]any)
			if ch["index"] == float64(index) {
				d, _ := ch["delta"].(map[string]any)
				out = append(out, d)
			}
		}
	}
	return out
}

const weatherTools = `[{"type":"function","function":{"name":"get_weather","parameters":{}}},{"type":"function","function":{"name":"get_time","parameters":{}}}]`

func toolBody(stream bool, extra string) string {
	return fmt.Sprintf(`{"model":"a/b","stream":%v,"messages":[{"role":"user","content":"Weather in Paris?"}],"tools":%s%s}`,
		stream, weatherTools, extra)
}

func TestToolCalls(t *testing.T) {
	tests := []struct {
		name      string
		b         Behavior
		extra     string
		wantNames []string // nil: a text reply
	}{
		{"two calls to the offered tools in turn", Behavior{ToolCalls: 2}, "", []string{"get_weather", "get_time"}},
		{"tool_choice forces one", Behavior{ToolCalls: 2}, `,"tool_choice":{"type":"function","function":{"name":"get_time"}}`, []string{"get_time", "get_time"}},
		{"tool_choice none", Behavior{ToolCalls: 1}, `,"tool_choice":"none"`, nil},
		{"model without tool calls", Behavior{}, "", nil},
		{"custom arguments", Behavior{ToolCalls: 1, ToolArguments: `{"q": "Ünïcödé"}`}, "", []string{"get_weather"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, one("a/b", tt.b))
			v := decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", toolBody(false, tt.extra)).Body)
			c := choice0(t, v)
			msg := c["message"].(map[string]any)
			calls, _ := msg["tool_calls"].([]any)
			if tt.wantNames == nil {
				if calls != nil || msg["content"] != DefaultReply || c["finish_reason"] != "stop" {
					t.Fatalf("want a text reply, got %v", c)
				}
				return
			}
			if msg["content"] != nil || c["finish_reason"] != "tool_calls" || len(calls) != len(tt.wantNames) {
				t.Fatalf("choice %v", c)
			}
			ids := map[any]bool{}
			for i, call := range calls {
				call := call.(map[string]any)
				fn := call["function"].(map[string]any)
				if fn["name"] != tt.wantNames[i] || fn["arguments"] != tt.b.toolArguments() || call["type"] != "function" {
					t.Errorf("call %d: %v", i, call)
				}
				if id, _ := call["id"].(string); !strings.HasPrefix(id, "call_") || ids[id] {
					t.Errorf("call %d: id %q not call_... or repeated", i, id)
				}
				ids[call["id"]] = true
			}

			// The stream: a start fragment per call, then arguments in
			// pieces of at most 5 bytes, concatenating to the same.
			chunks, done := chunksOf(t, mustPost(t, srv, "/v1/chat/completions", toolBody(true, tt.extra)).Body)
			if !done {
				t.Error("no [DONE]")
			}
			args := make([]string, len(calls))
			pieces := 0
			for _, d := range deltas(chunks, 0) {
				tcs, _ := d["tool_calls"].([]any)
				for _, tc := range tcs {
					tc := tc.(map[string]any)
					i := int(tc["index"].(float64))
					fn := tc["function"].(map[string]any)
					if id, ok := tc["id"]; ok {
						if id != calls[i].(map[string]any)["id"] || fn["name"] != tt.wantNames[i] || fn["arguments"] != "" {
							t.Errorf("start fragment %v", tc)
						}
						continue
					}
					a := fn["arguments"].(string)
					if len(a) > 5+3 {
						t.Errorf("argument piece %q longer than 5 bytes", a)
					}
					args[i] += a
					pieces++
				}
			}
			for i := range args {
				if args[i] != tt.b.toolArguments() {
					t.Errorf("call %d streamed arguments %q", i, args[i])
				}
			}
			if pieces < 2*len(calls) {
				t.Errorf("%d argument pieces: not split", pieces)
			}
		})
	}
}

func TestChoicesN(t *testing.T) {
	_, srv := start(t, one("a/b", Behavior{Reply: "one two", Reasoning: "hm"}))
	v := decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", `{"model":"a/b","n":3,"messages":[]}`).Body)
	cs := v["choices"].([]any)
	if len(cs) != 3 {
		t.Fatalf("%d choices", len(cs))
	}
	for k, c := range cs {
		c := c.(map[string]any)
		msg := c["message"].(map[string]any)
		if c["index"] != float64(k) || msg["content"] != choiceReply("one two", k) || msg["reasoning_content"] != "hm" {
			t.Errorf("choice %d: %v", k, c)
		}
	}
	wantUsage(t, v, 0, 3+5+5) // "hm" and the words of each choice

	// Streamed, the choices interleave, each ends with its own finish.
	chunks, _ := chunksOf(t, mustPost(t, srv, "/v1/chat/completions", `{"model":"a/b","n":2,"stream":true,"messages":[]}`).Body)
	var order strings.Builder
	for _, c := range chunks {
		ch := c["choices"].([]any)[0].(map[string]any)
		fmt.Fprintf(&order, "%v", ch["index"])
	}
	// Roles, then rounds: hm, one, two, finish 0 with choice 1's fourth
	// token; then choice 1's last token and finish.
	if got := order.String(); got != "010101010111" {
		t.Errorf("choice order %s", got)
	}
	for k := range 2 {
		var text string
		var finish any
		for _, d := range deltas(chunks, k) {
			if s, ok := d["content"].(string); ok {
				text += s
			}
		}
		for _, c := range chunks {
			ch := c["choices"].([]any)[0].(map[string]any)
			if ch["index"] == float64(k) && ch["finish_reason"] != nil {
				finish = ch["finish_reason"]
			}
		}
		if text != choiceReply("one two", k) || finish != "stop" {
			t.Errorf("choice %d streamed %q, finish %v", k, text, finish)
		}
	}

	for _, n := range []string{"0", "129", "-1"} {
		resp := mustPost(t, srv, "/v1/chat/completions", `{"model":"a/b","n":`+n+`,"messages":[]}`)
		if resp.StatusCode != 400 || !strings.Contains(detail(t, resp), "n must be between 1 and 128") {
			t.Errorf("n=%s: status %d", n, resp.StatusCode)
		}
	}
}

func TestRefusalAndReasoningField(t *testing.T) {
	_, srv := start(t, Scenario{Models: []ModelScenario{
		{ID: "no/way", Behavior: Behavior{Refusal: "I can't help with that.", Reasoning: "Unsafe."}},
		{ID: "new/vllm", Behavior: Behavior{Reasoning: "Think.", ReasoningField: ReasoningFieldReasoning, Reply: "Ok."}},
	}})
	msg := choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", chatBody("no/way", false, false)).Body))["message"].(map[string]any)
	if msg["content"] != nil || msg["refusal"] != "I can't help with that." || msg["reasoning_content"] != "Unsafe." {
		t.Errorf("refusal message %v", msg)
	}
	if _, ok := msg["content"]; !ok {
		t.Error("content missing instead of null")
	}
	chunks, _ := chunksOf(t, mustPost(t, srv, "/v1/chat/completions", chatBody("no/way", true, false)).Body)
	var refusal string
	for _, d := range deltas(chunks, 0) {
		if s, ok := d["refusal"].(string); ok {
			refusal += s
		}
	}
	if refusal != "I can't help with that." {
		t.Errorf("streamed refusal %q", refusal)
	}
	c := choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/completions", `{"model":"no/way","prompt":"x"}`).Body))
	if c["text"] != "I can't help with that." {
		t.Errorf("completions refusal %v", c)
	}

	msg = choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", chatBody("new/vllm", false, false)).Body))["message"].(map[string]any)
	if _, has := msg["reasoning_content"]; has || msg["reasoning"] != "Think." {
		t.Errorf("reasoning_field reasoning: message %v", msg)
	}
	chunks, _ = chunksOf(t, mustPost(t, srv, "/v1/chat/completions", chatBody("new/vllm", true, false)).Body)
	if d := deltas(chunks, 0)[1]; d["reasoning"] != "Think." {
		t.Errorf("first token delta %v", d)
	}
}

func TestLogprobs(t *testing.T) {
	_, srv := start(t, one("a/b", Behavior{Reply: "a bc"}))
	c := choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", `{"model":"a/b","logprobs":true,"top_logprobs":2,"messages":[]}`).Body))
	lp := c["logprobs"].(map[string]any)
	content := lp["content"].([]any)
	if len(content) != 2 || lp["refusal"] != nil {
		t.Fatalf("logprobs %v", lp)
	}
	e := content[1].(map[string]any)
	if e["token"] != " bc" || e["logprob"] != logprob(" bc") || len(e["top_logprobs"].([]any)) != 2 || len(e["bytes"].([]any)) != 3 {
		t.Errorf("entry %v", e)
	}
	if c := choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", `{"model":"a/b","messages":[]}`).Body)); c["logprobs"] != nil {
		t.Errorf("logprobs without asking: %v", c["logprobs"])
	}
	c = choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/completions", `{"model":"a/b","prompt":"x","logprobs":1}`).Body))
	lp = c["logprobs"].(map[string]any)
	if fmt.Sprint(lp["tokens"]) != "[a  bc]" || fmt.Sprint(lp["text_offset"]) != "[0 1]" || len(lp["top_logprobs"].([]any)) != 2 {
		t.Errorf("completions logprobs %v", lp)
	}
}

// continueBody asks model a/b to continue prefill (a JSON value).
func continueBody(stream bool, prefill, flags string) string {
	return fmt.Sprintf(`{"model":"a/b","stream":%v,"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":%s}]%s}`,
		stream, prefill, flags)
}

func TestContinueFinalMessage(t *testing.T) {
	const reply = "Hello there, how are you today?"
	const cont = `,"continue_final_message":true,"add_generation_prompt":false`
	tests := []struct {
		name    string
		prefill string // JSON
		flags   string
		want    string // the content; "" with wantErr
		wantErr bool
	}{
		{"prefix ending mid-word", `"Hello the"`, cont, "re, how are you today?", false},
		{"prefix ending before a space", `"Hello there,"`, cont, " how are you today?", false},
		{"prefix as text parts", `[{"type":"text","text":"Hello "},{"type":"text","text":"there, how"}]`, cont, " are you today?", false},
		{"the whole reply", `"Hello there, how are you today?"`, cont, "", false},
		{"not a prefix: the canned reply", `"Bonjour"`, cont, reply, false},
		{"empty prefill", `""`, cont, reply, false},
		{"no continue_final_message", `"Hello the"`, "", reply, false},
		{"add_generation_prompt left to its default", `"Hello the"`, `,"continue_final_message":true`, "", true},
		{"both true", `"Hello the"`, `,"continue_final_message":true,"add_generation_prompt":true`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, one("a/b", Behavior{Reply: reply, Reasoning: "Not again."}))
			resp := mustPost(t, srv, "/v1/chat/completions", continueBody(false, tt.prefill, tt.flags))
			if tt.wantErr {
				if resp.StatusCode != 400 || detail(t, resp) != continueBothMessage {
					t.Errorf("status %d, want 400 %q", resp.StatusCode, continueBothMessage)
				}
				return
			}
			msg := choice0(t, decodeJSON(t, resp.Body))["message"].(map[string]any)
			if msg["content"] != tt.want {
				t.Errorf("content %q, want %q", msg["content"], tt.want)
			}
			if _, reasons := msg["reasoning_content"]; reasons == (tt.flags == cont) {
				t.Errorf("reasoning_content present %v in %v", reasons, msg)
			}
			// Streamed: the same text, one word per event.
			chunks, done := chunksOf(t, mustPost(t, srv, "/v1/chat/completions", continueBody(true, tt.prefill, tt.flags)).Body)
			var text string
			for _, d := range deltas(chunks, 0) {
				if s, ok := d["content"].(string); ok {
					text += s
				}
			}
			if text != tt.want || !done {
				t.Errorf("streamed %q (done %v), want %q", text, done, tt.want)
			}
		})
	}
	t.Run("final message not the assistant's", func(t *testing.T) {
		_, srv := start(t, one("a/b", Behavior{Reply: reply}))
		body := `{"model":"a/b","messages":[{"role":"user","content":"Hello the"}]` + cont + `}`
		if c := choice0(t, decodeJSON(t, mustPost(t, srv, "/v1/chat/completions", body).Body)); c["message"].(map[string]any)["content"] != reply {
			t.Errorf("choice %v", c)
		}
	})
}

func TestEndAfter(t *testing.T) {
	for _, n := range []int{0, 3, 40} {
		t.Run(fmt.Sprint("stream, N=", n), func(t *testing.T) {
			sim, srv := start(t, one("a/b", Behavior{Kind: KindEndAfter, EndAfter: n}))
			resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", true, true))
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d", resp.StatusCode)
			}
			lines, err := sse(t, resp.Body)
			if err != nil {
				t.Fatalf("stream ended with %v, want a clean end", err)
			}
			if len(lines) != n {
				t.Fatalf("%d lines, want %d: %q", len(lines), n, lines)
			}
			s := parseStream(t, lines)
			if s.done {
				t.Error("[DONE] sent")
			}
			for _, c := range s.chunks {
				if c["choices"].([]any)[0].(map[string]any)["finish_reason"] != nil {
					t.Errorf("finish_reason in %v", c)
				}
			}
			if sim.Outcomes("a/b")[KindEndAfter] != 1 {
				t.Errorf("outcomes %v", sim.Outcomes("a/b"))
			}
		})
	}
	t.Run("non-stream", func(t *testing.T) {
		_, srv := start(t, one("a/b", Behavior{Kind: KindEndAfter, EndAfter: 3}))
		resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", false, false))
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("status %d, read error %v", resp.StatusCode, err)
		}
		if len(body) == 0 || json.Valid(body) || resp.ContentLength != -1 {
			t.Errorf("body %q (length %d): want half a JSON object, chunked", body, resp.ContentLength)
		}
	})
}

func TestStallAfter(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			_, srv := start(t, one("a/b", Behavior{Kind: KindStallAfter, StallAfter: 4}))
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			t0 := time.Now()
			resp, err := post(t, ctx, srv, "/v1/chat/completions", chatBody("a/b", stream, false), nil)
			if !stream {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Do: %v, want no answer until the deadline", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			lines, err := sse(t, resp.Body)
			if err == nil {
				t.Error("stream ended without the client giving up")
			}
			if len(lines) != 4 {
				t.Errorf("%d events before the stall, want 4: %q", len(lines), lines)
			}
			if d := time.Since(t0); d < timeout {
				t.Errorf("stream ended after %v, before the client gave up", d)
			}
		})
	}
}

// A cut continuation is not padded: it stops after its last token, before
// the finish chunk.
func TestCutContinuation(t *testing.T) {
	for _, kind := range []string{KindDropAfter, KindEndAfter} {
		t.Run(kind, func(t *testing.T) {
			_, srv := start(t, one("a/b", Behavior{Kind: kind, DropAfter: 10, EndAfter: 10, Reply: "one two three four"}))
			resp := mustPost(t, srv, "/v1/chat/completions",
				continueBody(true, `"one two"`, `,"continue_final_message":true,"add_generation_prompt":false`))
			lines, _ := sse(t, resp.Body)
			var events []string
			for _, l := range lines {
				if strings.HasPrefix(l, "data: ") {
					events = append(events, l)
				}
			}
			s := parseStream(t, events)
			if s.content != " three four" || len(events) != 3 {
				t.Errorf("%d events, content %q; want the role chunk and \" three four\"", len(events), s.content)
			}
		})
	}
}

func TestFlakyFailureKind(t *testing.T) {
	sim, srv := start(t, one("a/b", Behavior{Kind: KindFlaky, FailureRate: 1, FailureKind: KindEndAfter, EndAfter: 2}))
	lines, err := sse(t, mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", true, false)).Body)
	if err != nil || len(lines) != 2 {
		t.Errorf("lines %q, error %v; want 2 events and a clean end", lines, err)
	}
	if o := sim.Outcomes("a/b"); o[KindEndAfter] != 1 || len(o) != 1 {
		t.Errorf("outcomes %v", o)
	}
}

// The resume demo's scenario is valid, and its cuts can be resumed: asking
// again with the text so far, on the flaky model and then the fallback,
// gives the whole reply.
func TestResumeScenario(t *testing.T) {
	sc := ResumeScenario()
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	file, err := LoadScenario("scenarios/resume.toml")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(file) != fmt.Sprint(sc) {
		t.Error("ResumeScenario differs from scenarios/resume.toml")
	}
	flaky, fallback := sc.Models[0], sc.Models[1]
	if flaky.Kind != KindFlaky || flaky.FailureKind != KindDropAfter || fallback.Kind != KindHealthy || flaky.Reply != fallback.Reply {
		t.Fatalf("models %+v", sc.Models)
	}
	// No pacing: the test needs the script, not the timing.
	for i := range sc.Models {
		sc.Models[i].TTFT, sc.Models[i].TokensPerSecond = 0, 0
	}
	_, srv := start(t, sc)
	// As the proxy does: the same model once more, then the chain.
	text, cuts, model := "", 0, ""
	for attempt := 0; attempt < 40; attempt++ {
		model = flaky.ID
		if attempt >= 2 {
			model = fallback.ID
		}
		body := fmt.Sprintf(`{"model":%q,"stream":true,"messages":[{"role":"user","content":"How does resuming work?"}]}`, model)
		if text != "" {
			prefill, _ := json.Marshal(text)
			body = fmt.Sprintf(`{"model":%q,"stream":true,"messages":[{"role":"user","content":"How does resuming work?"},{"role":"assistant","content":%s}],"continue_final_message":true,"add_generation_prompt":false}`,
				model, prefill)
		}
		resp := mustPost(t, srv, "/v1/chat/completions", body)
		lines, err := sse(t, resp.Body)
		var events []string
		for _, l := range lines {
			if strings.HasPrefix(l, "data: ") {
				events = append(events, l)
			}
		}
		s := parseStream(t, events)
		text += s.content
		if s.done {
			break
		}
		if err == nil {
			t.Fatalf("attempt %d: neither [DONE] nor a cut", attempt)
		}
		cuts++
	}
	if text != flaky.Reply {
		t.Errorf("resumed text %q\nwant %q", text, flaky.Reply)
	}
	// Seed 2: the first request and its resume are cut; the fallback ends it.
	if cuts != 2 || model != fallback.ID {
		t.Errorf("%d cuts, last model %s; want 2 and the fallback", cuts, model)
	}
}
