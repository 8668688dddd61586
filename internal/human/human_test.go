package human

import (
	"testing"
	"time"
	"unicode/utf8"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"},
		{300 * time.Microsecond, "<1ms"},
		{350*time.Millisecond + 200*time.Microsecond, "350ms"},
		{2500 * time.Millisecond, "2.5s"},
		{59*time.Second + 990*time.Millisecond, "1m0s"},
		{90 * time.Second, "1m30s"},
		{5*time.Hour + 12*time.Minute + 10*time.Second, "5h12m"},
		{time.Hour, "1h00m"},
	}
	for _, tt := range tests {
		if got := Duration(tt.d); got != tt.want {
			t.Errorf("Duration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer sentence", 8, "a longer…"},
		{"héllo", 2, "h…"}, // 'é' is two bytes: never split
		{"anything", 0, "anything"},
	}
	for _, tt := range tests {
		got := Truncate(tt.s, tt.n)
		if got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q: not valid UTF-8", tt.s, tt.n, got)
		}
	}
}
