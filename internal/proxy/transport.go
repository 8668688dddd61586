package proxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// NewTransport returns the upstream transport: tuned for one busy host.
// Go's default keeps 2 idle connections per host, so 16 concurrent chats
// would open and close connections all day; we keep up to 256 warm. HTTP/2 is
// used where the upstream offers it. There is no ResponseHeaderTimeout and no
// Client.Timeout: the first-byte timer of each attempt bounds the wait, and a
// long stream must not be cut by a whole-response deadline.
func NewTransport(u config.Upstream) *http.Transport {
	connect := u.ConnectTimeout.D()
	if connect <= 0 {
		connect = 10 * time.Second
	}
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
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
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
