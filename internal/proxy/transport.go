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
	}
}

// NewTransport returns net/http's transport for what NewUpstream's does not
// carry: probes (which need httptrace on a fresh connection), model lists,
// pass-through, and requests through an environment proxy. It keeps as many
// idle connections as NewUpstream's pool (Go's default of 2 per host would
// open and close connections all day); HTTP/2 is used where offered. There
// is no ResponseHeaderTimeout and no Client.Timeout: the first-byte timer of
// each attempt bounds the wait, and a long stream must not be cut by a
// whole-response deadline.
func NewTransport(u config.Upstream) *http.Transport {
	connect := connectTimeout(u)
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           newDialer(u).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   upstream.DefaultMaxIdlePerHost,
		IdleConnTimeout:       upstream.DefaultIdleTimeout,
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
