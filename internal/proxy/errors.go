package proxy

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
)

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// writeError is the only writer of error responses. With [compat]
// errors_as_messages it also delivers the diagnostic as an assistant message
// (status 200) to a chat or completion request, for chat UIs that show
// nothing of an error body.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo, e *diagnose.Error) {
	info.errCode = e.Code
	h := w.Header()
	if ra := e.RetryAfterHeader(); ra != "" {
		h.Set("Retry-After", ra)
	}
	h.Set("X-Chutes-Proxy-Error", e.Code)
	if info.endpoint != 0 {
		h.Set("X-Chutes-Proxy-Attempts", strconv.Itoa(info.attempts))
		if info.served != "" {
			h.Set("X-Chutes-Proxy-Model", info.served)
		}
	}
	if st.cfg.Compat.ErrorsAsMessages && (info.endpoint == epChat || info.endpoint == epCompletions) {
		writeErrorAsMessage(w, info, e)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.JSON())
}

// writeErrorAsMessage answers with a normal completion whose text is the
// diagnostic, as SSE when the client asked for a stream.
func writeErrorAsMessage(w http.ResponseWriter, info *reqInfo, e *diagnose.Error) {
	text := "⚠️ chutes-proxy: " + e.Message
	model := info.model
	id := "chutes-proxy-error-" + info.id
	created := time.Now().Unix()
	chat := info.endpoint == epChat
	if info.stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		var chunk, last any
		if chat {
			chunk = map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": text}, "finish_reason": nil}}}
			last = map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}}
		} else {
			chunk = map[string]any{"id": id, "object": "text_completion", "created": created, "model": model,
				"choices": []any{map[string]any{"index": 0, "text": text, "finish_reason": nil}}}
			last = map[string]any{"id": id, "object": "text_completion", "created": created, "model": model,
				"choices": []any{map[string]any{"index": 0, "text": "", "finish_reason": "stop"}}}
		}
		for _, c := range []any{chunk, last} {
			b, _ := json.Marshal(c)
			_, _ = w.Write([]byte("data: "))
			_, _ = w.Write(b)
			_, _ = w.Write([]byte("\n\n"))
		}
		_, _ = w.Write([]byte("data: [DONE]\n\n"))
		return
	}
	var resp any
	if chat {
		resp = map[string]any{"id": id, "object": "chat.completion", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
	} else {
		resp = map[string]any{"id": id, "object": "text_completion", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "text": text, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
	}
	b, _ := json.Marshal(resp)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
