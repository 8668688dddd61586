package failover

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzReasonFromBody feeds arbitrary upstream error bodies to the reader
// of their message. Whatever the body, the reason is short, valid UTF-8
// and trimmed; a message in any documented shape comes back as sent.
func FuzzReasonFromBody(f *testing.F) {
	for _, s := range []string{
		`{"detail":"No instances available (yet) for chute_id='3b1c'"}`,
		`{"detail":{"message":"Invalid request body: model is required"}}`,
		`{"detail":[{"loc":["body","messages"],"msg":"field required","type":"value_error.missing"},{"msg":"second"}]}`,
		`{"error":{"message":"engine dead","type":"InternalServerError","code":500}}`,
		`{"error":"Unhandled exception during response stream: CUDA out of memory"}`,
		`{"message":"plain"}`,
		`{"detail":null,"error":{"msg":"m"},"message":"x"}`,
		`<html><body>502 Bad Gateway</body></html>`,
		`{"detail":"` + strings.Repeat("é", 400) + `"}`,
		`{"detail":"\ud800 lone surrogate \u0000 nul"}`,
		"{\"detail\":\"\xff\xfe invalid utf-8\"}",
		`[1,2,3]`, `"just a string"`, `null`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := ReasonFromBody(body)
		if !utf8.ValidString(r) {
			t.Fatalf("reason is not valid UTF-8: %q", r)
		}
		if len(r) > maxReason+len("…") {
			t.Fatalf("reason of %d bytes, max %d", len(r), maxReason)
		}
		if r != strings.TrimSpace(r) && !strings.HasSuffix(r, "…") {
			t.Fatalf("reason not trimmed: %q", r)
		}
		// Round trip: the body as a message in each shape gives it back.
		msg := strings.ToValidUTF8(string(body), "\uFFFD")
		want := strings.TrimSpace(msg)
		if want == "" || len(want) > maxReason {
			return
		}
		for _, shape := range []string{`{"detail":%s}`, `{"detail":{"message":%s}}`, `{"detail":[{"msg":%s}]}`,
			`{"error":{"message":%s}}`, `{"error":%s}`, `{"message":%s}`} {
			q, _ := json.Marshal(msg)
			in := strings.Replace(shape, "%s", string(q), 1)
			if got := ReasonFromBody([]byte(in)); got != want {
				t.Fatalf("ReasonFromBody(%s) = %q, want %q", in, got, want)
			}
		}
	})
}

// FuzzParseRetryAfter: any header value gives a wait between 0 and 24 h;
// whole seconds and HTTP dates in range come back exactly.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"7", "0", "-1", "86400", "86401", "1.5", " 30 ", "1e3", "Inf", "-Inf", "0x10",
		now.Add(90 * time.Second).Format(http.TimeFormat), "Wed, 25 Nov 2026 11:00:00 GMT",
		"Wednesday, 25-Nov-26 12:01:00 GMT", "Wed Nov 25 12:01:00 2026", "soon", "Wed, 99 Foo", "", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 || d > 24*time.Hour {
			t.Fatalf("ParseRetryAfter(%q) = %v, want 0..24h", v, d)
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 && n <= 86400 {
			if d != time.Duration(n)*time.Second {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %ds", v, d, n)
			}
		}
		if at, err := http.ParseTime(strings.TrimSpace(v)); err == nil {
			if want := at.Sub(now); want > 0 && want <= 24*time.Hour && d != want {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %v", v, d, want)
			}
		}
	})
}
