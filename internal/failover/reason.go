package failover

import (
	"encoding/json"
	"strings"

	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// maxReason bounds a reason kept from an upstream body, so a huge error page
// cannot bloat logs or the attempts array.
const maxReason = 300

// ReasonFromBody extracts the message of an error body in the shapes Chutes
// and OpenAI-compatible servers use: {"detail": "..."}, {"detail": {"message":
// "..."}}, {"detail": [{"msg": "..."}]} (FastAPI validation), {"error":
// {"message": "..."}}, {"error": "..."}, {"message": "..."}. It returns "" when
// the body is none of these.
func ReasonFromBody(body []byte) string {
	var v struct {
		Detail  json.RawMessage `json:"detail"`
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	for _, raw := range []json.RawMessage{v.Detail, v.Error} {
		if r := messageOf(raw); r != "" {
			return human.Truncate(strings.TrimSpace(r), maxReason)
		}
	}
	return human.Truncate(strings.TrimSpace(v.Message), maxReason)
}

func messageOf(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Message string `json:"message"`
		Msg     string `json:"msg"`
		Detail  string `json:"detail"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		for _, m := range []string{obj.Message, obj.Msg, obj.Detail} {
			if m != "" {
				return m
			}
		}
	}
	var list []struct {
		Msg string `json:"msg"`
		Loc []any  `json:"loc"`
	}
	if json.Unmarshal(raw, &list) == nil && len(list) > 0 {
		parts := make([]string, 0, len(list))
		for _, e := range list {
			if e.Msg != "" {
				parts = append(parts, e.Msg)
			}
		}
		return strings.Join(parts, "; ")
	}
	return ""
}
