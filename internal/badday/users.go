package badday

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Reply is one user-visible reply: a chat request through the proxy and
// what the user got.
type Reply struct {
	ID     int64
	User   int
	Stream bool
	Long   bool
	// Start is when the request was sent, from the run's start.
	Start time.Duration
	// TTFT is the time to the first token: the first event with text or
	// reasoning of a stream, the whole reply of a plain request (the user
	// sees nothing before it). Set when OK.
	TTFT time.Duration
	// Model served it (X-Chutes-Proxy-Model).
	Model string
	OK    bool
	// Why a reply was lost: the proxy's error code, or what broke.
	Why string
}

// Think is the pause between a user's replies (uniform in [Think/2,
// 3·Think/2]): people read, then write.
const Think = 150 * time.Millisecond

// LongPrompt is the size of a long prompt's history, about 8,000 tokens.
const LongPrompt = 32 << 10

var longText = strings.Repeat("Once more the story goes on, and the history of this chat grows long. ", LongPrompt/70)

// user is one person chatting through the proxy, plain or streaming, until
// told to stop.
type user struct {
	n      int
	stream bool
	long   float64 // share of long prompts
	rng    *rand.Rand
	client *http.Client
	url    string
	t0     time.Time
	ids    *atomic.Int64
}

// loop sends chats, one after the other, until stop; each reply goes to out.
// A reply in flight at stop is finished.
func (u *user) loop(ctx context.Context, stop time.Time, out func(Reply)) {
	for time.Now().Before(stop) && ctx.Err() == nil {
		out(u.chat(ctx))
		pause := Think/2 + time.Duration(u.rng.Int64N(int64(Think)))
		if wait(ctx, pause) != nil {
			return
		}
	}
}

func (u *user) chat(ctx context.Context) Reply {
	rp := Reply{ID: u.ids.Add(1), User: u.n, Stream: u.stream, Long: u.rng.Float64() < u.long}
	content := "Tell me something kind, in one sentence."
	if rp.Long {
		content = longText + content
	}
	body, _ := json.Marshal(map[string]any{
		"model":    Alias,
		"stream":   u.stream,
		"messages": []map[string]string{{"role": "user", "content": content}},
	})
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout+5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(headerReply, strconv.FormatInt(rp.ID, 10))
	if rp.Long {
		req.Header.Set(headerPrompt, "long")
	}
	start := time.Now()
	rp.Start = start.Sub(u.t0)
	resp, err := u.client.Do(req)
	if err != nil {
		rp.Why = "no answer: " + err.Error()
		return rp
	}
	defer resp.Body.Close()
	rp.Model = resp.Header.Get("X-Chutes-Proxy-Model")
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		rp.Why = fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Error"))
		return rp
	}
	if u.stream {
		rp.TTFT, rp.Why = readStream(resp.Body, start)
	} else {
		rp.TTFT, rp.Why = readPlain(resp.Body, start)
	}
	rp.OK = rp.Why == ""
	return rp
}

// delta is what the bench reads of a chat event or reply.
type delta struct {
	Choices []struct {
		Delta   message `json:"delta"`
		Message message `json:"message"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

type message struct {
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content"`
	Reasoning        string `json:"reasoning"`
}

func (m message) text() bool { return m.Content != "" || m.ReasoningContent != "" || m.Reasoning != "" }

// readStream reads an SSE reply to its end: the time to the first event
// with a token, and why the reply is lost ("" when it ended with [DONE]
// and no error event).
func readStream(body io.Reader, start time.Time) (ttft time.Duration, why string) {
	br := bufio.NewReaderSize(body, 16<<10)
	for {
		line, err := br.ReadBytes('\n')
		if data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: ")); ok {
			if string(data) == "[DONE]" {
				if ttft == 0 {
					return 0, "no token before [DONE]"
				}
				return ttft, ""
			}
			var d delta
			if json.Unmarshal(data, &d) != nil {
				return ttft, "an event that is not JSON"
			}
			if len(d.Error) > 0 {
				var e struct {
					Code string `json:"code"`
				}
				_ = json.Unmarshal(d.Error, &e)
				return ttft, "error event " + e.Code
			}
			if ttft == 0 && len(d.Choices) > 0 && d.Choices[0].Delta.text() {
				ttft = time.Since(start)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return ttft, "stream ended without [DONE]"
			}
			return ttft, "stream cut: " + err.Error()
		}
	}
}

// readPlain reads a plain reply whole.
func readPlain(body io.Reader, start time.Time) (time.Duration, string) {
	b, err := io.ReadAll(body)
	if err != nil {
		return 0, "reply cut: " + err.Error()
	}
	ttft := time.Since(start)
	var d delta
	if err := json.Unmarshal(b, &d); err != nil {
		return 0, "a reply that is not JSON"
	}
	if len(d.Choices) == 0 || !d.Choices[0].Message.text() {
		return 0, "a reply without text"
	}
	return ttft, ""
}
