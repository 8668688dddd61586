package diagnose

import (
	"fmt"
	"net/http"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// NextUTCMidnight is when a daily quota counted per UTC day frees up: Chutes
// resets its request quota at 00:00 UTC, and the proxy's own cap follows it.
func NextUTCMidnight(now time.Time) time.Time {
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

// DailyQuotaExhausted answers a request stopped by the proxy's own daily
// cap ([quota] daily_requests): 429 with Retry-After until 00:00 UTC.
// count is the number of upstream requests made today, limit the cap.
func DailyQuotaExhausted(limit, count int, now time.Time) *Error {
	reset := NextUTCMidnight(now)
	wait := reset.Sub(now)
	e := newError(http.StatusTooManyRequests, CodeQuotaExhausted, fmt.Sprintf(
		"chutes-proxy's own daily quota stopped this request (not Chutes): %d of %d requests used today "+
			"(limit [quota] daily_requests = %d). It frees up at 00:00 UTC, in %s. "+
			"To allow more, raise daily_requests in proxy.toml, or set it to 0 to turn the cap off; the file reloads by itself.",
		count, limit, limit, human.Duration(wait)))
	e.RetryAfter = wait
	return e
}
