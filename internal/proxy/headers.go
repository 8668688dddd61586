package proxy

import (
	"net/http"
	"strings"
)

// hopHeaders are meaningful for one connection only (RFC 9110 7.6.1) and
// are never forwarded in either direction.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// upstreamDrop are request headers the upstream must not see: ours to
// replace (Authorization, Accept-Encoding, Host), the browser's and the
// user's own business (cookies, origin), or a question about the body the
// proxy already holds whole (Expect: 100-continue, which curl sends for
// bodies over 1 KB; forwarded, it would make the upstream request wait for
// the upstream's "100 Continue"). Idempotency-Key and X-Idempotency-Key go
// too: net/http takes them as leave to send a POST again after a broken
// kept-alive connection, and Chutes would count the chat twice against the
// daily quota.
var upstreamDrop = []string{
	"Authorization", "Accept-Encoding", "Host", "Content-Length", "Cookie",
	"Origin", "Referer", "X-Api-Key", "Expect", "Idempotency-Key", "X-Idempotency-Key",
}

// copyHeader copies src into dst without hop-by-hop headers.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if !isHop(k, src) {
			dst[k] = vv
		}
	}
}

// isHop reports whether header k is hop-by-hop: a standard one, or one
// named in h's Connection header.
func isHop(k string, h http.Header) bool {
	for _, hop := range hopHeaders {
		if k == hop {
			return true
		}
	}
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

// copyResponseHeader copies an upstream response's headers for the client,
// less CORS headers: whether a web page may read the answer is the proxy's
// decision (cors_origins), not the upstream's.
func copyResponseHeader(dst, src http.Header) {
	for k, vv := range src {
		if !strings.HasPrefix(k, "Access-Control-") && !isHop(k, src) {
			dst[k] = vv
		}
	}
}

// upstreamHeader builds the headers of an upstream request from the
// client's.
func upstreamHeader(client http.Header, key string) http.Header {
	h := make(http.Header, len(client)+2)
	copyHeader(h, client)
	for _, k := range upstreamDrop {
		delete(h, k)
	}
	for k := range h {
		if strings.HasPrefix(k, "Sec-") {
			delete(h, k)
		}
	}
	if key != "" {
		h["Authorization"] = []string{"Bearer " + key}
	}
	h["Accept-Encoding"] = []string{"identity"}
	return h
}

// bearer returns the client's bearer token, trimmed. SillyTavern sends
// "Bearer ", "Bearer undefined" or "Bearer null" when its key field is
// empty: those are no key.
func bearer(r *http.Request) string {
	v := r.Header.Get("Authorization")
	if v == "" {
		v = r.Header.Get("X-Api-Key")
	} else if len(v) >= 7 && strings.EqualFold(v[:7], "bearer ") {
		v = v[7:]
	} else if strings.EqualFold(strings.TrimSpace(v), "bearer") {
		v = ""
	}
	v = strings.Trim(strings.TrimSpace(v), `"'`)
	switch v {
	case "undefined", "null", "None", "none":
		return ""
	}
	return v
}
