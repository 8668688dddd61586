//go:build unix

package upstream

import (
	"crypto/tls"
	"net"
	"syscall"
)

// checksAlive: pooled connections are checked before reuse here, so a
// request is never sent twice.
const checksAlive = true

// alive reports whether a pooled connection can carry a request: the server
// has not closed it and sent nothing unasked (a TLS close_notify included).
// It peeks at the socket without blocking: one recvfrom(2), about a
// microsecond, where net/http's Transport keeps a reader goroutine parked
// on every idle connection to learn the same.
func alive(nc net.Conn) bool {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait for readiness
	})
	return err == nil && ok
}
