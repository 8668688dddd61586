package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// Model ids as Chutes spells them.
const (
	r1      = "deepseek-ai/DeepSeek-R1"
	v3      = "deepseek-ai/DeepSeek-V3"
	mistral = "chutesai/Mistral-Small-3.1-24B-Instruct-2503"
)

// goClient is the official Go SDK pointed at the proxy the way the README
// says (base URL .../v1). Retries are off so that each call is one request.
func goClient(base string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(base + "/v1"), option.WithAPIKey("sk-anything"), option.WithMaxRetries(0),
	}, opts...)...)
}

// sentBody records the bytes the SDK put on the wire.
type sentBody struct {
	mu sync.Mutex
	b  []byte
}

func (s *sentBody) option() option.RequestOption {
	return option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if r.Body != nil {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			s.mu.Lock()
			s.b = b
			s.mu.Unlock()
		}
		return next(r)
	})
}

func (s *sentBody) get() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// withModel is body with its "model" value replaced, the one change the
// proxy makes when a fallback serves.
func withModel(t testing.TB, body []byte, from, to string) []byte {
	t.Helper()
	old := []byte(`"model":"` + from + `"`)
	if bytes.Count(body, old) != 1 {
		t.Fatalf("body has not exactly one %s: %s", old, body)
	}
	return bytes.Replace(body, old, []byte(`"model":"`+to+`"`), 1)
}

// fastScenario is the simulator with the default scenario's models but no
// pacing, so that tests are quick: DeepSeek-R1 down, Mistral and V3 healthy
// (V3 reasons first, as R1 does when up).
func fastScenario() simulator.Scenario {
	return simulator.Scenario{Models: []simulator.ModelScenario{
		{ID: r1, Behavior: simulator.Behavior{Kind: simulator.KindDown, ContextLength: 163840}},
		{ID: mistral, Behavior: simulator.Behavior{Kind: simulator.KindHealthy, Reply: "Hello from the fallback."}},
		{ID: v3, Behavior: simulator.Behavior{Kind: simulator.KindHealthy, Reply: "Paris.", Reasoning: "The capital of France is Paris."}},
	}}
}

// startSimulated is the simulator behind a proxy whose chain is
// r1 (aliases "r1", "auto") → mistral.
func startSimulated(t testing.TB, edit func(*config.Config)) (proxyURL string, sim *simulator.Simulator) {
	t.Helper()
	sim = simulator.New(fastScenario())
	up := httptestServer(t, sim)
	t.Cleanup(sim.Close)
	cfg := newConfig(t, up, func(c *config.Config) {
		c.Models = []config.Model{{ID: r1, Aliases: []string{"r1", "auto"}, Fallbacks: []string{mistral}}}
		if edit != nil {
			edit(c)
		}
	})
	return startProxy(t, cfg), sim
}

func userMsg(s string) []openai.ChatCompletionMessageParamUnion {
	return []openai.ChatCompletionMessageParamUnion{openai.UserMessage(s)}
}

// TestGoSDKModelsAndChat: list models (aliases included), chat plain and
// streaming through a chain whose first model is down, and a reasoning
// model's reasoning_content reaching the SDK.
func TestGoSDKModelsAndChat(t *testing.T) {
	base, sim := startSimulated(t, nil)
	client := goClient(base)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var ids []string
	pager := client.Models.ListAutoPaging(ctx)
	for pager.Next() {
		ids = append(ids, pager.Current().ID)
	}
	if err := pager.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{r1, mistral, v3, "r1", "auto"} {
		if !slices.Contains(ids, want) {
			t.Errorf("models list lacks %q: %v", want, ids)
		}
	}

	var raw *http.Response
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "auto", Messages: userMsg("hi")},
		option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content; got != "Hello from the fallback." {
		t.Errorf("plain reply %q", got)
	}
	if raw.Header.Get("X-Chutes-Proxy-Model") != mistral || raw.Header.Get("X-Chutes-Proxy-Attempts") != "2" {
		t.Errorf("served by %q after %q attempts", raw.Header.Get("X-Chutes-Proxy-Model"), raw.Header.Get("X-Chutes-Proxy-Attempts"))
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "auto", Messages: userMsg("hi")})
	acc := openai.ChatCompletionAccumulator{}
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != "Hello from the fallback." || chunks < 4 {
		t.Errorf("stream: %q in %d chunks", got, chunks)
	}

	// A reasoning model: reasoning_content is not an OpenAI field, so the SDK
	// keeps it only in the delta's raw JSON; it must be there, untouched.
	stream = client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: v3, Messages: userMsg("capital of France?")})
	var reasoning, content strings.Builder
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) == 0 {
			continue
		}
		content.WriteString(c.Choices[0].Delta.Content)
		var d struct {
			ReasoningContent string `json:"reasoning_content"`
		}
		if err := json.Unmarshal([]byte(c.Choices[0].Delta.RawJSON()), &d); err != nil {
			t.Fatalf("delta %s: %v", c.Choices[0].Delta.RawJSON(), err)
		}
		reasoning.WriteString(d.ReasoningContent)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(reasoning.String()) != "The capital of France is Paris." || strings.TrimSpace(content.String()) != "Paris." {
		t.Errorf("reasoning %q, content %q", reasoning.String(), content.String())
	}
	if sim.Requests(r1) != 2 {
		t.Errorf("DeepSeek-R1 tried %d times, want 2 (once per chat)", sim.Requests(r1))
	}
}

// toolParams is a chat request with two tools and a forced tool_choice.
func toolParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: userMsg("What's the weather in Zürich, in celsius?"),
		Tools: []openai.ChatCompletionToolUnionParam{
			openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
				Name:        "get_weather",
				Description: openai.String("Current weather for a city"),
				Strict:      openai.Bool(true),
				Parameters: shared.FunctionParameters{
					"type": "object",
					"properties": map[string]any{
						"city": map[string]any{"type": "string"},
						"unit": map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
					},
					"required":             []string{"city", "unit"},
					"additionalProperties": false,
				},
			}),
			openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "noop"}),
		},
		ToolChoice: openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}),
	}
}

const toolCallJSON = `{"id":"chatcmpl-7","object":"chat.completion","created":1700000000,"model":"b/tools","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Zürich\",\"unit\":\"celsius\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":80,"completion_tokens":12,"total_tokens":92}}`

var toolCallEvents = []string{
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"b/tools","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"b/tools","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Zü"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"b/tools","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"rich\",\"unit\":\"celsius\"}"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"b/tools","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
}

// TestGoSDKToolCalls: tools and tool_choice reach the upstream byte for
// byte (only "model" changes, because a fallback serves), and a tool_calls
// answer reaches the SDK intact, plain and streamed.
func TestGoSDKToolCalls(t *testing.T) {
	f := newFake(t, "a/down", "b/tools")
	f.set("a/down", down)
	f.set("b/tools", byRequest(jsonReply(toolCallJSON), sseReply(20*time.Millisecond, toolCallEvents...)))
	base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "a/down", Aliases: []string{"tools"}, Fallbacks: []string{"b/tools"}}}
	}))
	var sent sentBody
	client := goClient(base, sent.option())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	checkUpstream := func(t *testing.T) {
		t.Helper()
		if got, want := f.last(t, "a/down").Body, withModel(t, sent.get(), "tools", "a/down"); !bytes.Equal(got, want) {
			t.Errorf("first attempt's body changed:\n got %s\nwant %s", got, want)
		}
		got := f.last(t, "b/tools").Body
		if want := withModel(t, sent.get(), "tools", "b/tools"); !bytes.Equal(got, want) {
			t.Errorf("fallback's body changed beyond model:\n got %s\nwant %s", got, want)
		}
		var req struct {
			Tools      []json.RawMessage `json:"tools"`
			ToolChoice json.RawMessage   `json:"tool_choice"`
		}
		if err := json.Unmarshal(got, &req); err != nil || len(req.Tools) != 2 ||
			string(req.ToolChoice) != `{"function":{"name":"get_weather"},"type":"function"}` {
			t.Errorf("upstream tools %s, tool_choice %s (%v)", req.Tools, req.ToolChoice, err)
		}
	}

	t.Run("plain", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctx, toolParams("tools"))
		if err != nil {
			t.Fatal(err)
		}
		checkUpstream(t)
		if resp.RawJSON() != toolCallJSON {
			t.Errorf("response changed:\n got %s\nwant %s", resp.RawJSON(), toolCallJSON)
		}
		tc := resp.Choices[0].Message.ToolCalls
		if len(tc) != 1 || tc[0].ID != "call_abc" || tc[0].Function.Name != "get_weather" ||
			tc[0].Function.Arguments != `{"city":"Zürich","unit":"celsius"}` || resp.Choices[0].FinishReason != "tool_calls" {
			t.Errorf("tool calls %+v", tc)
		}
	})

	t.Run("stream", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, toolParams("tools"))
		acc := openai.ChatCompletionAccumulator{}
		var raws []string
		var finished []openai.FinishedChatCompletionToolCall
		for stream.Next() {
			c := stream.Current()
			raws = append(raws, c.RawJSON())
			acc.AddChunk(c)
			if tc, ok := acc.JustFinishedToolCall(); ok {
				finished = append(finished, tc)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		checkUpstream(t)
		if !slices.Equal(raws, toolCallEvents) {
			t.Errorf("events changed:\n got %q\nwant %q", raws, toolCallEvents)
		}
		if len(finished) != 1 || finished[0].Name != "get_weather" || finished[0].Arguments != `{"city":"Zürich","unit":"celsius"}` {
			t.Errorf("finished tool calls %+v", finished)
		}
	})
}

// TestGoSDKResponseFormat: a json_schema response_format reaches the
// upstream as the SDK wrote it, and the JSON answer comes back as is.
func TestGoSDKResponseFormat(t *testing.T) {
	const answer = `{"city":"Zürich","temperature_c":21.5,"tags":["sunny"]}`
	f := newFake(t, "a/json")
	f.set("a/json", jsonReply(chatJSON("a/json", answer)))
	base := startProxy(t, newConfig(t, f.URL, nil))
	var sent sentBody
	client := goClient(base, sent.option())
	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"city":          map[string]any{"type": "string"},
			"temperature_c": map[string]any{"type": "number"},
			"tags":          map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
		},
		"required":             []string{"city", "temperature_c", "tags"},
		"additionalProperties": false,
	}
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "a/json",
		Messages: userMsg("weather as JSON"),
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{
				Name: "weather", Strict: openai.Bool(true), Description: openai.String("a report"), Schema: schema,
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := f.last(t, "a/json").Body
	if !bytes.Equal(got, sent.get()) {
		t.Errorf("upstream body changed:\n got %s\nwant %s", got, sent.get())
	}
	var req struct {
		ResponseFormat struct {
			Type       string `json:"type"`
			JSONSchema struct {
				Name   string         `json:"name"`
				Strict bool           `json:"strict"`
				Schema map[string]any `json:"schema"`
			} `json:"json_schema"`
		} `json:"response_format"`
	}
	if err := json.Unmarshal(got, &req); err != nil {
		t.Fatal(err)
	}
	rf := req.ResponseFormat
	if rf.Type != "json_schema" || rf.JSONSchema.Name != "weather" || !rf.JSONSchema.Strict || rf.JSONSchema.Schema["additionalProperties"] != false {
		t.Errorf("upstream response_format %+v", rf)
	}
	if resp.Choices[0].Message.Content != answer {
		t.Errorf("content %q", resp.Choices[0].Message.Content)
	}
}

// TestGoSDKErrors: every proxy error surfaces as *openai.Error carrying our
// status, code and message, plain and streaming.
func TestGoSDKErrors(t *testing.T) {
	tests := []struct {
		name      string
		model     string
		act       map[string]http.HandlerFunc
		edit      func(*config.Config)
		status    int
		code      string
		msg       []string
		retryHdr  bool
		noRequest bool // the upstream must not be asked
	}{
		{name: "payment required", model: "pay/one",
			act:    map[string]http.HandlerFunc{"pay/one": status(402, `{"detail":"Quota exceeded and account balance is $0.0, please pay with fiat or send tao to 5Exyz"}`)},
			status: 402, code: "payment_required", msg: []string{"300 requests a day"}},
		{name: "every model down", model: "auto",
			act: map[string]http.HandlerFunc{"a/one": down, "b/two": down},
			edit: func(c *config.Config) {
				c.Models = []config.Model{{ID: "a/one", Aliases: []string{"auto"}, Fallbacks: []string{"b/two"}}}
			},
			status: 503, code: "all_models_unavailable", msg: []string{"No model could answer", "a/one", "b/two"}},
		{name: "every model 429", model: "a/one",
			act:    map[string]http.HandlerFunc{"a/one": status(429, `{"detail":"Infrastructure is at maximum capacity, try again later"}`)},
			status: 429, code: "rate_limit_exceeded", msg: []string{"rate-limiting"}, retryHdr: true},
		{name: "key rejected", model: "a/one",
			act:    map[string]http.HandlerFunc{"a/one": status(401, `{"detail":"Invalid token or user not found"}`)},
			status: 401, code: "invalid_api_key", msg: []string{"cpk_"}},
		{name: "misspelled model", model: "deepseek-ai/DeepSeek-R2",
			status: 404, code: "model_not_found", msg: []string{"DeepSeek-R2", r1}},
		{name: "no key anywhere", model: "a/one",
			edit:   func(c *config.Config) { c.Upstream.APIKey = "" },
			status: 401, code: "missing_api_key", msg: []string{"cpk_", "CHUTES_API_KEY"}, noRequest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, r1, "a/one", "b/two")
			for m, h := range tt.act {
				f.set(m, h)
			}
			base := startProxy(t, newConfig(t, f.URL, tt.edit))
			// No key from the client either: the SDK insists on one, so send
			// what SillyTavern sends for an empty key field.
			client := goClient(base, option.WithHeader("Authorization", "Bearer undefined"))
			check := func(t *testing.T, err error) {
				t.Helper()
				var apiErr *openai.Error
				if !errors.As(err, &apiErr) {
					t.Fatalf("error %T %v is not *openai.Error", err, err)
				}
				if apiErr.StatusCode != tt.status || apiErr.Code != tt.code {
					t.Errorf("got %d %q, want %d %q: %s", apiErr.StatusCode, apiErr.Code, tt.status, tt.code, apiErr.Message)
				}
				for _, s := range tt.msg {
					if !strings.Contains(apiErr.Message, s) {
						t.Errorf("message lacks %q: %s", s, apiErr.Message)
					}
				}
				if tt.retryHdr && apiErr.Response.Header.Get("Retry-After") == "" {
					t.Error("no Retry-After header")
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t.Run("plain", func(t *testing.T) {
				_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: tt.model, Messages: userMsg("hi")})
				check(t, err)
			})
			t.Run("stream", func(t *testing.T) {
				stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: tt.model, Messages: userMsg("hi")})
				n := 0
				for stream.Next() {
					n++
				}
				if n > 0 {
					t.Errorf("%d chunks before the error", n)
				}
				check(t, stream.Err())
			})
			if tt.noRequest && len(f.requests()) > 0 {
				t.Errorf("the upstream was asked %d times", len(f.requests()))
			}
		})
	}
}
