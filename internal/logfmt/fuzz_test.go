package logfmt

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"
)

// fuzzRep drops, renames, regroups or retypes attributes depending on
// their key, so fuzzed keys steer it.
func fuzzRep(groups []string, a slog.Attr) slog.Attr {
	switch {
	case strings.HasPrefix(a.Key, "drop"):
		return slog.Attr{}
	case strings.HasPrefix(a.Key, "up"):
		a.Key = strings.ToUpper(a.Key)
	case strings.HasPrefix(a.Key, "grp") && len(groups) == 0: // once, or it nests forever
		return slog.Group(a.Key, a, slog.String("drop", ""))
	case strings.HasPrefix(a.Key, "gone"):
		return slog.Group(a.Key, slog.String("drop", ""))
	case strings.HasPrefix(a.Key, "str"):
		return slog.String(a.Key, a.Value.String())
	case a.Key == slog.TimeKey && groups == nil:
		return slog.Time(a.Key, a.Value.Time().Add(time.Hour))
	}
	return a
}

func FuzzTextHandler(f *testing.F) {
	f.Add("request", "request_id", "0123456789abcdef", "path", "/v1/chat/completions", int64(200), uint64(5678), 1.5, true, int64(1234), 0)
	f.Add("", "", "", "=", "\"", int64(-1), uint64(math.MaxUint64), math.NaN(), false, int64(-1), -4)
	f.Add("new\nline", "a b", "héllo wörld", "日本語", "bad\xffutf8", int64(math.MinInt64), uint64(0), math.Inf(-1), true, int64(math.MaxInt64), 8)
	f.Add("drop", "drop", "x", "up", "y", int64(0), uint64(1), 0.0, false, int64(0), 1)
	f.Add("m", "grp", "v", "gone", "w", int64(1), uint64(2), 1e21, true, int64(1e9), 2)
	f.Add("m", "str", "\u00a0", "gonegrp", "\ufffd", int64(7), uint64(8), -0.0, true, int64(-5e9), 3)
	f.Add("\x00\x7f", `back\slash`, "\u200b", "tab\t", "🎉", int64(42), uint64(1<<63), math.SmallestNonzeroFloat64, false, int64(1), -100)
	f.Fuzz(func(t *testing.T, msg, k1, v1, k2, v2 string, n int64, u uint64, fl float64, b bool, ns int64, level int) {
		tm := time.Unix(0, ns).In(time.FixedZone("z", int(n%(18*3600))))
		attrs := []slog.Attr{
			slog.String(k1, v1), slog.Int64(k2, n), slog.Uint64(k1+k2, u), slog.Float64(v2, fl), slog.Bool(k2, b),
			slog.Duration(k1, time.Duration(ns)), slog.Time(v1, tm), slog.String(v2, msg),
			slog.Time(k2, time.Unix(n/1000, ns).In(tm.Location())), // any year, to about ±292 million
		}
		withs := []slog.Attr{slog.String(k2, v2), slog.Int64(v1, n)}
		for _, opts := range []*slog.HandlerOptions{
			{Level: slog.Level(-200)},
			{Level: slog.Level(-200), ReplaceAttr: dropAuth},
			{Level: slog.Level(-200), ReplaceAttr: fuzzRep},
		} {
			want, got := pair(opts)
			for _, s := range []*sink{want, got} {
				r := slog.NewRecord(tm, slog.Level(level), msg, 0)
				r.AddAttrs(attrs...)
				_ = s.h.Handle(context.Background(), r)
				_ = s.h.WithAttrs(withs).Handle(context.Background(), r)
				_ = s.h.WithAttrs(withs).WithAttrs(attrs[:3]).Handle(context.Background(), r)
				r.AddAttrs(slog.Group(k1, slog.String(k2, v2)))
				_ = s.h.WithAttrs(withs).Handle(context.Background(), r) // delegated
			}
			check(t, want, got)
		}
	})
}
