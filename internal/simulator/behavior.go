package simulator

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Behavior kinds. Each names one way the real Chutes has been seen to answer.
const (
	KindHealthy         = "healthy"           // 200 with a reply, paced by TTFT and TokensPerSecond
	KindDown            = "down"              // 503 "No instances available (yet) for chute_id=..."
	KindOverloaded      = "overloaded"        // 429 "Infrastructure is at maximum capacity, ..."
	KindPaymentRequired = "payment_required"  // 402 "Quota exceeded and account balance is $0.0, ..."
	KindNotFound        = "not_found"         // 404 "model not found: X"
	KindHeadersThenHang = "headers_then_hang" // 200 headers flushed, then silence until the client leaves
	KindHang            = "hang"              // nothing at all until the client leaves
	KindDropAfter       = "drop_after"        // DropAfter SSE events, the bare error line, connection cut
	KindEndAfter        = "end_after"         // EndAfter SSE events, then a clean end without [DONE]
	KindStallAfter      = "stall_after"       // StallAfter SSE events, then silence until the client leaves
	KindGarbage         = "garbage"           // 200 with an HTML page instead of JSON
	KindErrorFirstEvent = "error_first_event" // 200 SSE whose first line is an error
	KindFlaky           = "flaky"             // 503 with probability FailureRate, healthy otherwise
)

// kinds lists every behavior kind, in documentation order.
var kinds = []string{
	KindHealthy, KindDown, KindOverloaded, KindPaymentRequired, KindNotFound,
	KindHeadersThenHang, KindHang, KindDropAfter, KindEndAfter, KindStallAfter, KindGarbage,
	KindErrorFirstEvent, KindFlaky,
}

// Names of the reasoning field, for Behavior.ReasoningField.
const (
	ReasoningFieldContent   = "reasoning_content" // vLLM's and DeepSeek's name, the default
	ReasoningFieldReasoning = "reasoning"         // newer vLLM's and OpenRouter's name
)

// Kinds returns every valid Behavior.Kind.
func Kinds() []string { return append([]string(nil), kinds...) }

// DefaultReply is what a healthy model says when Behavior.Reply is empty.
// Tokens are words, so this is a 13-token reply.
const DefaultReply = "Hello from the Chutes simulator. This reply is canned, one word per token."

// DefaultToolArguments are the arguments of a tool call when
// Behavior.ToolArguments is empty.
const DefaultToolArguments = `{"location": "Paris, France", "unit": "celsius"}`

// DefaultContextLength is the context length /v1/models lists for a model
// whose Behavior.ContextLength is 0.
const DefaultContextLength = 32768

// Behavior scripts how one model answers. The zero value is a healthy model
// that answers DefaultReply at once.
type Behavior struct {
	// Kind is one of the Kind constants; "" means KindHealthy.
	Kind string
	// TokensPerSecond paces a reply (reasoning and content words alike);
	// 0 means no pacing: every token at once.
	TokensPerSecond float64
	// TTFT is the time to first token: how long a healthy (or drop_after)
	// model waits before sending response headers, as Chutes holds the
	// headers until the miner's first chunk is in hand. 0 means no wait.
	TTFT time.Duration
	// RetryAfter, when > 0, sets a Retry-After header (seconds) on the 429 of
	// an overloaded model. 0 means none, which is what Chutes usually sends.
	RetryAfter int
	// DropAfter is how many SSE events a drop_after model sends before the
	// bare error line and the cut; 0 means the error line comes first. The
	// reply is repeated as needed so exactly DropAfter events go out.
	DropAfter int
	// FailureRate is the share (0..1) of a flaky model's requests that get a
	// 503; the draw is deterministic given Scenario.Seed.
	FailureRate float64
	// Reply is the answer's text; "" means DefaultReply. Tokens are words.
	Reply string
	// Reasoning, when not empty, makes this a reasoning model: chat
	// completions carry it as reasoning_content, streamed before the content.
	Reasoning string
	// ContextLength is listed by /v1/models; 0 means DefaultContextLength.
	ContextLength int
	// ErrorAsData makes error_first_event send `data: {"error": {...}}`
	// instead of the bare `{"error": "..."}` line (both happen on Chutes).
	ErrorAsData bool
	// EndAfter is how many SSE events an end_after model sends before it
	// ends the stream cleanly, without finish_reason or [DONE]; counted as
	// DropAfter is.
	EndAfter int
	// StallAfter is how many SSE events a stall_after model sends before it
	// goes silent until the client leaves; counted as DropAfter is.
	StallAfter int
	// FailureKind is how a flaky model's failed requests are served: any
	// kind but flaky; "" means down (503).
	FailureKind string
	// ReasoningField names the delta and message field reasoning goes in:
	// ReasoningFieldContent ("" means it) or ReasoningFieldReasoning.
	ReasoningField string
	// Refusal, when not empty, makes the model refuse with this text: chat
	// replies carry it as refusal (content null), completions as the text.
	Refusal string
	// ToolCalls, when > 0, makes the model answer a chat request that
	// offers tools with this many tool calls instead of text (finish_reason
	// "tool_calls"); 0 means it always answers with text.
	ToolCalls int
	// ToolArguments are each tool call's arguments, streamed in pieces of
	// up to 5 bytes; "" means DefaultToolArguments. Not checked: a model
	// may well write broken JSON.
	ToolArguments string
}

// Validate reports the first problem with b, naming the field by its TOML key.
func (b Behavior) Validate() error {
	known := b.Kind == ""
	for _, k := range kinds {
		known = known || b.Kind == k
	}
	switch {
	case !known:
		return fmt.Errorf("kind: unknown kind %q (want one of %s)", b.Kind, strings.Join(kinds, ", "))
	case b.TokensPerSecond < 0:
		return fmt.Errorf("tokens_per_second: must not be negative, got %v", b.TokensPerSecond)
	case b.TTFT < 0:
		return fmt.Errorf("ttft: must not be negative, got %s", b.TTFT)
	case b.RetryAfter < 0:
		return fmt.Errorf("retry_after: must not be negative, got %d", b.RetryAfter)
	case b.DropAfter < 0:
		return fmt.Errorf("drop_after: must not be negative, got %d", b.DropAfter)
	case b.FailureRate < 0 || b.FailureRate > 1:
		return fmt.Errorf("failure_rate: must be between 0 and 1, got %v", b.FailureRate)
	case b.ContextLength < 0:
		return fmt.Errorf("context_length: must not be negative, got %d", b.ContextLength)
	case b.EndAfter < 0:
		return fmt.Errorf("end_after: must not be negative, got %d", b.EndAfter)
	case b.StallAfter < 0:
		return fmt.Errorf("stall_after: must not be negative, got %d", b.StallAfter)
	case b.ToolCalls < 0 || b.ToolCalls > maxToolCalls:
		return fmt.Errorf("tool_calls: must be between 0 and %d, got %d", maxToolCalls, b.ToolCalls)
	case b.ReasoningField != "" && b.ReasoningField != ReasoningFieldContent && b.ReasoningField != ReasoningFieldReasoning:
		return fmt.Errorf("reasoning_field: want %q or %q, got %q", ReasoningFieldContent, ReasoningFieldReasoning, b.ReasoningField)
	}
	if b.FailureKind != "" && (b.FailureKind == KindFlaky || !slices.Contains(kinds, b.FailureKind)) {
		return fmt.Errorf("failure_kind: want a kind other than flaky (%s), got %q",
			strings.Join(slices.DeleteFunc(Kinds(), func(k string) bool { return k == KindFlaky }), ", "), b.FailureKind)
	}
	return nil
}

// maxToolCalls bounds Behavior.ToolCalls: a reply with more calls is surely
// a typo.
const maxToolCalls = 64

func (b Behavior) failureKind() string {
	if b.FailureKind == "" {
		return KindDown
	}
	return b.FailureKind
}

func (b Behavior) toolArguments() string {
	if b.ToolArguments == "" {
		return DefaultToolArguments
	}
	return b.ToolArguments
}

func (b Behavior) kind() string {
	if b.Kind == "" {
		return KindHealthy
	}
	return b.Kind
}

func (b Behavior) reply() string {
	if strings.TrimSpace(b.Reply) == "" {
		return DefaultReply
	}
	return b.Reply
}

func (b Behavior) contextLength() int {
	if b.ContextLength == 0 {
		return DefaultContextLength
	}
	return b.ContextLength
}

// tokenGap is the pause between two tokens.
func (b Behavior) tokenGap() time.Duration {
	if b.TokensPerSecond <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / b.TokensPerSecond)
}

// tokens splits text into word tokens; every token but the first keeps the
// space before it, so concatenating the deltas gives the text back.
func tokens(text string) []string {
	words := strings.Fields(text)
	for i := 1; i < len(words); i++ {
		words[i] = " " + words[i]
	}
	return words
}
