package assemble

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkAssemble measures the cost of assembling one plain reply from
// its stream: every event's Add and the final JSON. ns/token is that cost
// per token event; each op is one reply.
func BenchmarkAssemble(b *testing.B) {
	for _, tokens := range []int{20, 200, 2000} {
		b.Run(fmt.Sprintf("chat/tokens=%d", tokens), func(b *testing.B) {
			benchReply(b, Chat, replyEvents(tokens, true))
		})
	}
	b.Run("completions/tokens=200", func(b *testing.B) {
		benchReply(b, Completions, replyEvents(200, false))
	})
	// The floor for comparison on a busy machine: only decoding each
	// event into map[string]any, as any generic handling would.
	b.Run("baseline-decode-only/tokens=200", func(b *testing.B) {
		events := replyEvents(200, true)
		b.ReportAllocs()
		for b.Loop() {
			for _, e := range events {
				var v map[string]any
				if err := json.Unmarshal(e, &v); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/200, "ns/token")
	})
}

func benchReply(b *testing.B, ep Endpoint, events [][]byte) {
	var size int
	for _, e := range events {
		size += len(e)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		a := New(ep)
		for _, e := range events {
			if _, err := a.Add(e); err != nil {
				b.Fatal(err)
			}
		}
		if len(a.JSON()) == 0 {
			b.Fatal("empty output")
		}
	}
	tokens := len(events) - 3 // role, finish and usage carry none
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(tokens), "ns/token")
}

// replyEvents is a typical vLLM-shaped stream: a role chunk, a quarter of
// the tokens as reasoning_content (chat), the rest as content, a finish
// chunk and a usage chunk.
func replyEvents(tokens int, chat bool) [][]byte {
	const head = `{"id":"chatcmpl-8f1e2d","object":"chat.completion.chunk","created":1735689600,"model":"deepseek-ai/DeepSeek-R1",`
	var evs [][]byte
	add := func(s string) { evs = append(evs, []byte(s)) }
	if chat {
		add(head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`)
	} else {
		add(head + `"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":null}]}`)
	}
	words := strings.Fields("the quick brown fox jumps over a lazy dog while \"quoting\" things")
	for i := range tokens {
		w := " " + words[i%len(words)]
		switch {
		case !chat:
			add(head + fmt.Sprintf(`"choices":[{"index":0,"text":%q,"logprobs":null,"finish_reason":null}]}`, w))
		case i < tokens/4:
			add(head + fmt.Sprintf(`"choices":[{"index":0,"delta":{"reasoning_content":%q},"logprobs":null,"finish_reason":null}]}`, w))
		default:
			add(head + fmt.Sprintf(`"choices":[{"index":0,"delta":{"content":%q},"logprobs":null,"finish_reason":null}]}`, w))
		}
	}
	if chat {
		add(head + `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}`)
	} else {
		add(head + `"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}]}`)
	}
	add(head + fmt.Sprintf(`"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`, tokens, tokens+12))
	return evs
}
