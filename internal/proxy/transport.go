package proxy

import (
	"net"
	"net/http"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Pool limits of the upstream transport. A chat holds its connection (or,
// over HTTP/2, its stream) for the whole reply, so the pool is sized for as
// many concurrent streams as a busy proxy has, not Go's default of two idle
// connections per host, which would open and close connections all day.
const (
	maxIdlePerHost = 256
	idleConnTime   = 90 * time.Second
)

// NewTransport returns the one upstream transport of a config: chats,
// completions, embeddings, model lists, probes, the account API and
// pass-through all share its pool. HTTP/2 is used where the upstream offers
// it (Chutes does), an environment proxy (HTTPS_PROXY ...) is honoured, and
// [upstream] resolver is reached through its DialContext.
//
// It sets no ResponseHeaderTimeout: each chat attempt is bounded by its own
// first-token timer, which also covers the response head, and a stream must
// not be cut by a whole-response deadline. net/http never sends a request
// again once it was written unless the request says it is idempotent, and
// upstreamHeader drops the headers that would say so: Chutes would count a
// resent chat twice against the daily quota.
func NewTransport(u config.Upstream) *http.Transport {
	connect := connectTimeout(u)
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           newDialer(u).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2 * maxIdlePerHost,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       idleConnTime,
		TLSHandshakeTimeout:   connect,
		ExpectContinueTimeout: time.Second,
		// The proxy asks for identity encoding so that it can read error
		// bodies and SSE events; it never compresses or decompresses.
		DisableCompression: true,
	}
}

func connectTimeout(u config.Upstream) time.Duration {
	if d := u.ConnectTimeout.D(); d > 0 {
		return d
	}
	return 10 * time.Second
}

// newDialer dials with connect_timeout, through the DNS server
// UpstreamDNS picks if it picks one.
func newDialer(u config.Upstream) *net.Dialer {
	connect := connectTimeout(u)
	return &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second, Resolver: UpstreamDNS(u).Resolver(connect)}
}
