package proxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/upstream"
)

// NewUpstream returns the transport of chat, completion and embedding
// requests: HTTP/1.1 in the handler's goroutine (see package upstream), with
// fallback for what it does not handle (an environment proxy). Probes,
// model lists and pass-through requests use fallback directly.
func NewUpstream(u config.Upstream, fallback *http.Transport) *upstream.Transport {
	return &upstream.Transport{
		Dial:             newDialer(u).DialContext,
		HandshakeTimeout: connectTimeout(u),
		Proxy:            http.ProxyFromEnvironment,
		Fallback:         fallback,
		MaxIdlePerHost:   256,
		IdleTimeout:      90 * time.Second,
	}
}

// NewTransport returns the upstream transport: tuned for one busy host.
// Go's default keeps 2 idle connections per host, so 16 concurrent chats
// would open and close connections all day; we keep up to 256 warm. HTTP/2 is
// used where the upstream offers it. There is no ResponseHeaderTimeout and no
// Client.Timeout: the first-byte timer of each attempt bounds the wait, and a
// long stream must not be cut by a whole-response deadline.
func NewTransport(u config.Upstream) *http.Transport {
	connect := connectTimeout(u)
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           newDialer(u).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
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

// newDialer dials with connect_timeout, through the configured DNS
// resolver if there is one.
func newDialer(u config.Upstream) *net.Dialer {
	connect := connectTimeout(u)
	dialer := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	if u.Resolver != "" {
		server := u.Resolver
		dialer.Resolver = &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				d := net.Dialer{Timeout: connect}
				return d.DialContext(ctx, network, server)
			},
		}
	}
	return dialer
}
