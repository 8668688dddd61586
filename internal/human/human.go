// Package human formats values for the sentences a person reads: error
// messages, log lines, the status page and doctor's report. One formatter of
// each kind, so that the same wait reads the same everywhere.
package human

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Duration renders a wait or a time taken: "350ms" under a second, "2.5s"
// under a minute, "1m30s" under an hour, "5h12m" beyond. Sub-millisecond
// values read "<1ms" rather than a misleading "0s"; zero and negative ones
// read "0s".
func Duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	m := int64(d.Round(time.Minute) / time.Minute)
	return strconv.FormatInt(m/60, 10) + "h" + pad2(m%60) + "m"
}

func pad2(n int64) string {
	if n < 10 {
		return "0" + strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(n, 10)
}

// Truncate shortens s to at most n bytes plus an ellipsis, cutting on a
// UTF-8 boundary so that the result stays valid text. n <= 0 means no limit.
func Truncate(s string, n int) string {
	if n <= 0 || len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
