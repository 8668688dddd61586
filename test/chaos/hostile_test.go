package chaos

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawRequest builds an HTTP/1.1 request with the proxy key, a loopback Host
// and a Content-Length.
func rawRequest(method, path, body string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n", method, path, proxyKey)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// exchange writes raw to a new connection to addr and reads n responses,
// each body whole; the connection has a deadline of wait.
func exchange(t *testing.T, addr, raw string, n int, wait time.Duration) ([]result, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, raw); err != nil {
		return nil, fmt.Errorf("writing: %w", err)
	}
	br := bufio.NewReader(c)
	var out []result
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out, fmt.Errorf("reading response %d: %w", len(out)+1, err)
		}
		r := result{status: resp.StatusCode, header: resp.Header,
			stream: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}
		r.body, r.readErr = io.ReadAll(resp.Body)
		resp.Body.Close()
		captured.add("raw response "+t.Name(), r.body)
		out = append(out, r)
	}
	return out, nil
}

// hostileOutcome is a short description: "200 chaos/good (1 attempts)",
// "400 invalid_json", or "431 (net/http, not OpenAI-shaped)".
func hostileOutcome(r result) string {
	if r.status >= 400 && r.header.Get("X-Request-Id") == "" {
		// Answered by net/http before the proxy's handler ran.
		return fmt.Sprintf("%d from net/http: %.40q", r.status, strings.TrimSpace(string(r.body)))
	}
	return r.outcome()
}

func deep(n int) string {
	return `{"model":"` + goodModel + `","messages":[{"role":"user","content":"x"}],"x":` +
		strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
}

// TestHostileRequests sends requests no client should send, over raw TCP
// to the real http.Server; each must get a 4xx (OpenAI-shaped when the
// proxy answers) or be served, and none may crash or hang the proxy.
func TestHostileRequests(t *testing.T) {
	up := newUpstream(t, false)
	p := startProxy(t, newConfig(t, up.URL, nil))
	chat := "/v1/chat/completions"
	ok := chatBody(goodModel, false)
	served := "200 " + goodModel + " (1 attempts)"
	tests := []struct {
		name string
		raw  string
		n    int // responses; 0 means 1
		want []string
	}{
		{"empty body", rawRequest("POST", chat, ""), 0, []string{"400 invalid_json"}},
		{"JSON null", rawRequest("POST", chat, "null"), 0, []string{"400 invalid_json"}},
		{"JSON array", rawRequest("POST", chat, `[{"model":"chaos/good"}]`), 0, []string{"400 invalid_json"}},
		{"JSON string", rawRequest("POST", chat, `"chaos/good"`), 0, []string{"400 invalid_json"}},
		{"JSON number", rawRequest("POST", chat, `42`), 0, []string{"400 invalid_json"}},
		{"not JSON", rawRequest("POST", chat, `model=chaos/good`), 0, []string{"400 invalid_json"}},
		{"truncated JSON", rawRequest("POST", chat, `{"model":"chaos/good","messages":[`), 0, []string{"400 invalid_json"}},
		{"trailing garbage", rawRequest("POST", chat, ok+`}{`), 0, []string{"400 invalid_json"}},
		{"model is a number", rawRequest("POST", chat, `{"model":42,"messages":[]}`), 0, []string{"400 missing_model"}},
		{"model is null", rawRequest("POST", chat, `{"model":null}`), 0, []string{"400 missing_model"}},
		{"model is an array", rawRequest("POST", chat, `{"model":["chaos/good"]}`), 0, []string{"400 missing_model"}},
		{"model is an object", rawRequest("POST", chat, `{"model":{"id":"chaos/good"}}`), 0, []string{"400 missing_model"}},
		{"model is empty", rawRequest("POST", chat, `{"model":"","messages":[]}`), 0, []string{"400 missing_model"}},
		{"no model", rawRequest("POST", chat, `{"messages":[]}`), 0, []string{"400 missing_model"}},
		{"nesting 9,000 deep (under the limit)", rawRequest("POST", chat, deep(9000)), 0, []string{served}},
		{"nesting 200,000 deep", rawRequest("POST", chat, deep(200000)), 0, []string{"400 invalid_json"}},
		{"invalid UTF-8 in the prompt", rawRequest("POST", chat, "{\"model\":\"chaos/good\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\xc3\"}]}"), 0, []string{served}},
		{"invalid JSON escape in the prompt", rawRequest("POST", chat, `{"model":"chaos/good","messages":[{"role":"user","content":"\xff"}]}`), 0, []string{"400 invalid_json"}},
		{"invalid UTF-8 in the model", rawRequest("POST", chat, "{\"model\":\"chaos/\xff\xfe\"}"), 0, []string{"400 invalid_json", "404 model_not_found"}},
		{"NUL and escapes in the model", rawRequest("POST", chat, `{"model":"chaos/\u0000\n\"good"}`), 0, []string{"404 model_not_found"}},
		{"Content-Length over max_body_mb", "POST " + chat + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + proxyKey + "\r\nContent-Length: 99999999\r\n\r\n{", 0, []string{"413 body_too_large"}},
		{"Content-Length and Transfer-Encoding", "POST " + chat + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + proxyKey + "\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(ok) + "0\r\n\r\n", 0, []string{`400 from net/http: "Bad Request"`, served}},
		{"two Content-Lengths", "POST " + chat + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 0, []string{`400 from net/http: "400 Bad Request"`}},
		{"oversized headers (128 KiB)", rawRequest("POST", chat, ok, "X-Big: "+strings.Repeat("a", 128<<10)), 0, []string{`431 from net/http: "431 Request Header Fields Too Large"`}},
		{"NUL in a header", rawRequest("POST", chat, ok, "X-Bad: a\x00b"), 0, []string{`400 from net/http: "400 Bad Request"`}},
		{"unknown method", rawRequest("BREW", chat, ok), 0, []string{"405 method_not_allowed"}},
		{"GET on chat", rawRequest("GET", chat, ""), 0, []string{"405 method_not_allowed"}},
		{"DELETE on models", rawRequest("DELETE", "/v1/models", ""), 0, []string{"405 method_not_allowed"}},
		{"TRACE on /", rawRequest("TRACE", "/", ""), 0, []string{"404 not_found"}},
		{"unknown path", rawRequest("POST", "/admin", ok), 0, []string{"404 not_found"}},
		{"absolute URI naming another host", "POST http://evil.example" + chat + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}", 0, []string{"403 host_not_allowed"}},
		{"HTTP/1.0", "POST " + chat + " HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + proxyKey + "\r\nContent-Length: " + strconv.Itoa(len(ok)) + "\r\n\r\n" + ok, 0, []string{served}},
		{"HTTP/1.0 stream", "POST " + chat + " HTTP/1.0\r\nAuthorization: Bearer " + proxyKey + "\r\nContent-Length: " + strconv.Itoa(len(chatBody(goodModel, true))) + "\r\n\r\n" + chatBody(goodModel, true), 0, []string{served}},
		{"pipelined: chat, healthz, stream, bad JSON", rawRequest("POST", chat, ok) + "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" + rawRequest("POST", chat, chatBody(goodModel, true)) + rawRequest("POST", chat, "{"), 4,
			[]string{served + " | 200 ok | " + served + " | 400 invalid_json"}},
		{"request line garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n", 0, []string{`400 from net/http: "Client sent an HTTP request to an HTTPS server."`, `400 from net/http: "400 Bad Request"`}},
	}
	var mu sync.Mutex
	var rows []string
	t.Cleanup(func() {
		t.Logf("\n| request | proxy answered |\n| --- | --- |\n%s", strings.Join(rows, "\n"))
	})
	// The group returns once every hostile request has its answer.
	t.Run("requests", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				n := max(tt.n, 1)
				rs, err := exchange(t, p.Addr, tt.raw, n, 10*time.Second)
				var got []string
				for _, r := range rs {
					if r.status == 200 && r.header.Get("Content-Type") == "text/plain; charset=utf-8" {
						got = append(got, "200 "+strings.TrimSpace(string(r.body)))
						continue
					}
					got = append(got, hostileOutcome(r))
				}
				if err != nil {
					got = append(got, err.Error())
				}
				g := strings.Join(got, " | ")
				mu.Lock()
				rows = append(rows, fmt.Sprintf("| %s | %s |", tt.name, g))
				mu.Unlock()
				if !slices.Contains(tt.want, g) {
					t.Errorf("got %s, want one of %q", g, tt.want)
				}
			})
		}
	})
	if got := send(t, newClient(t), p.URL, goodModel, true).outcome(); got != served {
		t.Fatalf("after the hostile requests: %s", got)
	}
}

// TestBodyNeverArrives declares a Content-Length and sends less. The
// proxy waits (ReadTimeout bounds it, 2 min), answers nothing, and keeps
// serving others; when the client gives up, the handler ends.
func TestBodyNeverArrives(t *testing.T) {
	up := newUpstream(t, false)
	p := startProxy(t, newConfig(t, up.URL, nil))
	const stuck = 20
	conns := make([]net.Conn, 0, stuck)
	for range stuck {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "+proxyKey+"\r\nContent-Length: 1000\r\n\r\n{\"model\":")
	}
	// Others are served meanwhile.
	start := time.Now()
	if got := send(t, newClient(t), p.URL, goodModel, false).outcome(); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("a normal request during the stall: %s", got)
	}
	t.Logf("a normal request with %d stalled bodies pending took %v", stuck, time.Since(start))
	// No answer to a stalled one within a short client deadline.
	_ = conns[0].SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := conns[0].Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("an answer before the body arrived: %d bytes, %v", n, err)
	}
	for _, c := range conns {
		c.Close()
	}
	// Each stalled handler ends and logs its request once its client left.
	if !eventually(5*time.Second, func() bool {
		return strings.Count(p.logs.String(), `"error":"invalid_json"`) >= stuck
	}) {
		t.Fatalf("stalled handlers did not end after their clients left; logs:\n%s", p.logs.String())
	}
}
