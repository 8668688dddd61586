package simulator

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxChoices is the largest n a request may ask for, as OpenAI's API.
const maxChoices = 128

// What a vLLM server answers (400) when a request asks to continue the final
// message and to open a new turn at once; add_generation_prompt defaults to
// true there, so it must be sent as false.
const continueBothMessage = "Cannot set both `continue_final_message` and `add_generation_prompt` to True."

// piece kinds: what one token of a choice is.
const (
	pReasoning = iota
	pContent
	pRefusal
	pToolStart // a tool call's first fragment: its id, type and name
	pToolArgs  // a piece of its arguments
)

// piece is one token of a choice.
type piece struct {
	kind int
	text string
	call int // the tool call, for pToolStart and pToolArgs
}

// choicePlan is what one choice will say, token by token.
type choicePlan struct {
	pieces []piece
	finish string
	calls  []plannedCall
}

type plannedCall struct{ id, name string }

// completion is what a model will say to one request.
type completion struct {
	choices      []choicePlan
	promptTokens int
	continuation bool // continues a prefill: a cut stream is not padded
	logprobs     bool
	topLogprobs  int
}

func (c completion) completionTokens() int {
	n := 0
	for _, ch := range c.choices {
		n += len(ch.pieces)
	}
	return n
}

// longest is the most tokens any choice has: choices are generated side by
// side, so it sets the generation time.
func (c completion) longest() int {
	n := 0
	for _, ch := range c.choices {
		n = max(n, len(ch.pieces))
	}
	return n
}

// planError is a request the model's server refuses (400) before
// generating anything.
type planError struct{ msg string }

func (e *planError) Error() string { return e.msg }

// plan lays out the reply to x.req: per choice, reasoning first, then a
// refusal, tool calls or the text (continued from a prefill when asked),
// cut at max_tokens.
func (x *exchange) plan() (completion, error) {
	var c completion
	for _, raw := range []json.RawMessage{x.req.Messages, x.req.Prompt, x.req.Input} {
		c.promptTokens += countWords(raw)
	}
	n := 1
	if x.req.N != nil {
		n = *x.req.N
	}
	if n < 1 || n > maxChoices {
		return c, &planError{fmt.Sprintf("Invalid request body: n must be between 1 and %d, got %d", maxChoices, n)}
	}
	prefill, cont, err := x.prefill()
	if err != nil {
		return c, err
	}
	c.continuation = cont
	c.logprobs, c.topLogprobs = x.logprobs()
	names := x.toolNames()
	limit := x.req.MaxCompletionTokens
	if limit == 0 {
		limit = x.req.MaxTokens
	}
	for k := range n {
		var ch choicePlan
		add := func(kind int, toks []string) {
			for _, t := range toks {
				ch.pieces = append(ch.pieces, piece{kind: kind, text: t})
			}
		}
		if x.ep == epChat && !cont {
			add(pReasoning, tokens(x.b.Reasoning))
		}
		ch.finish = "stop"
		switch {
		case x.b.Refusal != "" && x.ep == epChat:
			add(pRefusal, tokens(x.b.Refusal))
		case x.b.Refusal != "":
			add(pContent, tokens(x.b.Refusal)) // completions have no refusal field
		case len(names) > 0:
			ch.finish = "tool_calls"
			for i, name := range names {
				ch.calls = append(ch.calls, plannedCall{id: x.callID(k, i), name: name})
				ch.pieces = append(ch.pieces, piece{kind: pToolStart, call: i})
				for _, a := range argPieces(x.b.toolArguments()) {
					ch.pieces = append(ch.pieces, piece{kind: pToolArgs, text: a, call: i})
				}
			}
		default:
			reply := choiceReply(x.b.reply(), k)
			if canned := strings.Join(tokens(reply), ""); cont && strings.HasPrefix(canned, prefill) {
				add(pContent, splitTokens(canned[len(prefill):]))
			} else {
				add(pContent, tokens(reply))
			}
		}
		// Reasoning is generated first, so it eats the budget first.
		if limit > 0 && len(ch.pieces) > limit {
			ch.pieces, ch.finish = ch.pieces[:limit], "length"
		}
		c.choices = append(c.choices, ch)
	}
	return c, nil
}

// choiceReply is choice k's text: the reply for the first, numbered for the
// others so that choices can be told apart.
func choiceReply(reply string, k int) string {
	if k == 0 {
		return reply
	}
	return fmt.Sprintf("Choice %d: %s", k+1, reply)
}

// prefill returns the text of the final assistant message when the request
// asks to continue it (vLLM's continue_final_message with
// add_generation_prompt false). Asking for both is refused, as vLLM does; a
// final message that is not the assistant's is answered as usual.
func (x *exchange) prefill() (string, bool, error) {
	if !x.req.ContinueFinalMessage || x.ep != epChat {
		return "", false, nil
	}
	if x.req.AddGenerationPrompt == nil || *x.req.AddGenerationPrompt {
		return "", false, &planError{continueBothMessage}
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(x.req.Messages, &msgs) != nil || len(msgs) == 0 || msgs[len(msgs)-1].Role != "assistant" {
		return "", false, nil
	}
	return messageText(msgs[len(msgs)-1].Content), true, nil
}

// messageText is a message's content: a string, or the text parts of an
// array of parts, joined.
func messageText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// toolNames returns the function each tool call of the reply names, or nil
// for a text reply: a chat request that offers tools to a model with
// ToolCalls > 0 gets that many calls, to the function tool_choice forces or
// else to the offered tools in turn; tool_choice "none" gets text.
func (x *exchange) toolNames() []string {
	if x.ep != epChat || x.b.ToolCalls <= 0 {
		return nil
	}
	var tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(x.req.Tools, &tools) != nil || len(tools) == 0 {
		return nil
	}
	var mode string
	if json.Unmarshal(x.req.ToolChoice, &mode) == nil && mode == "none" {
		return nil
	}
	var forced struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	_ = json.Unmarshal(x.req.ToolChoice, &forced)
	names := make([]string, x.b.ToolCalls)
	for i := range names {
		names[i] = forced.Function.Name
		if names[i] == "" {
			names[i] = tools[i%len(tools)].Function.Name
		}
		if names[i] == "" {
			names[i] = "tool"
		}
	}
	return names
}

// callID is a tool call's id, derived from the model, the messages and the
// call's place: the same request gets the same ids, streamed or not, and the
// next turn of a conversation (more messages) gets new ones.
func (x *exchange) callID(choice, call int) string {
	h := sha1.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00", x.req.Model, choice, call)
	h.Write(x.req.Messages)
	return "call_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// argPieces splits tool-call arguments into tokens of at most 5 bytes, cut
// anywhere (mid-string, mid-key) as a tokenizer would, never inside a UTF-8
// character.
func argPieces(s string) []string {
	const size = 5
	var out []string
	for len(s) > 0 {
		n := min(size, len(s))
		for n < len(s) && !utf8.RuneStart(s[n]) {
			n++
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

// splitTokens splits text into tokens that keep their leading white space,
// so that the tokens concatenate to text exactly: " the", " rest".
func splitTokens(text string) []string {
	var out []string
	start, inWord := 0, false
	for i, r := range text {
		space := unicode.IsSpace(r)
		if space && inWord {
			out = append(out, text[start:i])
			start = i
		}
		inWord = !space
	}
	if start < len(text) {
		if !inWord && len(out) > 0 { // trailing white space joins the last token
			out[len(out)-1] += text[start:]
		} else {
			out = append(out, text[start:])
		}
	}
	return out
}

// logprobs reports whether the request asks for logprobs and how many top
// alternatives: chat sends "logprobs": true and "top_logprobs": k,
// completions "logprobs": k.
func (x *exchange) logprobs() (bool, int) {
	raw := x.req.Logprobs
	if x.ep == epChat {
		var on bool
		return json.Unmarshal(raw, &on) == nil && on, max(0, min(x.req.TopLogprobs, 20))
	}
	var k int
	if json.Unmarshal(raw, &k) != nil || k < 0 {
		return false, 0
	}
	return true, min(k, 5)
}

// logprob is a token's made-up log probability: deterministic, and exact
// in binary so that it reads back the same.
func logprob(tok string) float64 { return -float64(len(tok)%7+1) / 8 }

func tokenBytes(tok string) []int {
	b := make([]int, len(tok))
	for i := range len(tok) {
		b[i] = int(tok[i])
	}
	return b
}

// chatLogprob is a chat token's logprobs entry with k alternatives, the
// token itself first.
func chatLogprob(tok string, k int) logprobEntry {
	lp := logprob(tok)
	e := logprobEntry{Token: tok, Logprob: lp, Bytes: tokenBytes(tok), TopLogprobs: []topLogprob{}}
	for j := range k {
		alt := tok
		if j > 0 {
			alt = fmt.Sprintf("<alt%d>", j)
		}
		e.TopLogprobs = append(e.TopLogprobs, topLogprob{Token: alt, Logprob: lp - float64(j), Bytes: tokenBytes(alt)})
	}
	return e
}

// completionLogprobs are the legacy logprobs of toks, the first starting at
// offset in the text.
func completionLogprobs(toks []string, offset, k int) *legacyLogprobs {
	l := &legacyLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TextOffset: []int{}}
	if k > 0 {
		l.TopLogprobs = []map[string]float64{}
	}
	for _, t := range toks {
		lp := logprob(t)
		l.Tokens = append(l.Tokens, t)
		l.TokenLogprobs = append(l.TokenLogprobs, lp)
		l.TextOffset = append(l.TextOffset, offset)
		offset += len(t)
		if k > 0 {
			top := map[string]float64{t: lp}
			for j := 1; j < k; j++ {
				top[fmt.Sprintf("<alt%d>", j)] = lp - float64(j)
			}
			l.TopLogprobs = append(l.TopLogprobs, top)
		}
	}
	return l
}
