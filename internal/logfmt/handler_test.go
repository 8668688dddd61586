package logfmt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"
)

var (
	fixed    = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	kolkata  = time.FixedZone("IST", 5*3600+30*60)
	oddZone  = time.FixedZone("LMT", -(4*3600 + 56*60 + 2)) // offset with seconds
	withMono = time.Now()                                   // carries a monotonic reading
)

// secret redacts itself, as the proxy's key types do.
type secret string

func (secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// pair of values: a LogValuer that becomes a group.
type endpoint struct{ host, path string }

func (e endpoint) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", e.host), slog.String("path", e.path))
}

type chained int

func (c chained) LogValue() slog.Value {
	if c == 0 {
		return slog.IntValue(0)
	}
	return slog.AnyValue(c - 1)
}

type panicky struct{}

func (panicky) LogValue() slog.Value { panic("boom") }

type emptyGroup struct{}

func (emptyGroup) LogValue() slog.Value { return slog.GroupValue() }

type text struct{ s string }

func (t *text) MarshalText() ([]byte, error) {
	if t.s == "fail" {
		return nil, errors.New("cannot marshal")
	}
	if t.s == "panic" {
		panic("marshal panicked")
	}
	return []byte(t.s), nil
}

type bytesNamed []byte

// replace functions for the table.
func dropAuth(_ []string, a slog.Attr) slog.Attr {
	if strings.EqualFold(a.Key, "authorization") || strings.EqualFold(a.Key, "api_key") {
		return slog.Attr{}
	}
	return a
}

func dropKey(key string) func([]string, slog.Attr) slog.Attr {
	return func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == key {
			return slog.Attr{}
		}
		return a
	}
}

func dropBuiltins(groups []string, a slog.Attr) slog.Attr {
	if groups == nil && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
		return slog.Attr{}
	}
	return a
}

func rename(_ []string, a slog.Attr) slog.Attr {
	switch a.Key {
	case slog.TimeKey:
		a.Key = "ts"
	case slog.LevelKey:
		a.Key = "severity"
	case slog.MessageKey:
		a.Key = "message text"
	default:
		a.Key = strings.ToUpper(a.Key)
	}
	return a
}

// rekind changes values and kinds, built-ins included.
func rekind(groups []string, a slog.Attr) slog.Attr {
	switch a.Key {
	case slog.TimeKey:
		if groups == nil {
			return slog.Int64(a.Key, a.Value.Time().Unix())
		}
	case slog.LevelKey:
		return slog.String(a.Key, strings.ToLower(a.Value.String()))
	case slog.MessageKey:
		return slog.Any(a.Key, errors.New("msg became an error"))
	case "n":
		return slog.String("n", fmt.Sprint(a.Value.Any(), " as string"))
	case "s":
		return slog.Int("s", len(a.Value.String()))
	case "bytes":
		return slog.Any("bytes", []byte(a.Value.String()))
	case "named":
		return slog.Any("named", bytesNamed(a.Value.String()))
	case "tm":
		return slog.Any("tm", &text{a.Value.String()})
	case "nilptr":
		return slog.Any("nilptr", (*text)(nil))
	case "src":
		return slog.Any("src", &slog.Source{Function: "f", File: "a b.go", Line: 7})
	case "nilsrc":
		return slog.Any("nilsrc", (*slog.Source)(nil))
	case "emptysrc":
		return slog.Any("emptysrc", &slog.Source{})
	case "secret":
		return slog.Any("secret", secret(a.Value.String()))
	case "nokey":
		return slog.String("", a.Value.String())
	case "t":
		return slog.Time("t", time.Date(2001, 2, 3, 4, 5, 6, 7e6, kolkata))
	case "lvl":
		return slog.Any("lvl", slog.LevelWarn+1)
	case "map":
		return slog.Any("map", map[string]int{"a": 1})
	}
	return a
}

// grouping turns some attributes into groups, including ones whose members
// are all dropped (slog then leaves the group's prefix open).
func grouping(groups []string, a slog.Attr) slog.Attr {
	switch a.Key {
	case "authorization":
		return slog.Attr{}
	case "g":
		return slog.Group("g", slog.String("inner", a.Value.String()), slog.Int("x", 1))
	case "gone":
		return slog.Group("gone", slog.String("authorization", "k"))
	case "inline":
		return slog.Group("", slog.String("i1", "v"), slog.String("i2", "w w"))
	case "none":
		return slog.Group("none")
	case "eg":
		// A member that resolves to an empty group: nothing is written,
		// yet slog counts the group as written.
		return slog.Group("eg", slog.Any("e", emptyGroup{}))
	case slog.MessageKey:
		if groups == nil {
			return slog.Group("m", slog.String("body", a.Value.String()), slog.String("authorization", "k"))
		}
	case slog.TimeKey:
		if groups == nil {
			return slog.Group("t", slog.String("authorization", "k"))
		}
	}
	return a
}

// bare drops the built-ins, then groups.
func bare(groups []string, a slog.Attr) slog.Attr {
	if a = dropBuiltins(groups, a); a.Equal(slog.Attr{}) {
		return a
	}
	return grouping(groups, a)
}

func TestNeedsQuoting(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"", true}, {"a", false}, {"a b", true}, {"a=b", true}, {`a"b`, true}, {`a\b`, false},
		{"\x00", true}, {"\x7f", false}, {"é", false}, {"\xff", true}, {"\u00a0", true},
		{"\u200b", true}, {"\ufffd", true}, {"日本", false}, {"a\tb", true}, {"{}[],:", false},
		{`0123456"89`, true}, {"0123=567890", true}, {"0123456789abcdef\x1f", true}, {"0123 567890", true},
		{"0123456789é", false}, {"0123456789\xff", true}, {"0123456789!~#", false}, {"0123456789abcdef\u00a0", true},
	} {
		if got := needsQuoting(tt.in); got != tt.want {
			t.Errorf("needsQuoting(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// strs are messages, keys and values that exercise quoting.
var strs = []string{
	"", "plain", "with space", `quo"te`, "new\nline", "tab\tbed", "héllo wörld", "日本語",
	"bad\xffutf8", "a=b", `back\slash`, "nb\u00a0sp", "zero\u200bwidth", "repl\ufffdchar",
	"del\x7f", "nul\x00", "🎉", "line\u2028sep", "-", "=", `"`, "{}[]:,",
	// Longer than a word, one special byte each: needsQuoting reads eight at a time.
	`0123456"89`, "0123=567890", "0123456789abcdef\x01", "0123 567890", "0123456789é", "0123456789\xff",
	"0123456789abcdef\u00a0", `0123456789abcdef\`, "/v1/chat/completions", "0123456789abcdef0123456789abcdef",
}

func allKinds() []slog.Attr {
	as := []slog.Attr{
		slog.Int("int0", 0), slog.Int("neg", -1), slog.Int64("min", math.MinInt64),
		slog.Int64("max", math.MaxInt64), slog.Uint64("umax", math.MaxUint64), slog.Uint64("u0", 0),
		slog.Float64("f0", 0), slog.Float64("negzero", math.Copysign(0, -1)), slog.Float64("f", 1.5),
		slog.Float64("big", 1e21), slog.Float64("small", 1e-7), slog.Float64("nan", math.NaN()),
		slog.Float64("inf", math.Inf(1)), slog.Float64("ninf", math.Inf(-1)),
		slog.Float64("fmax", math.MaxFloat64), slog.Float64("tiny", math.SmallestNonzeroFloat64),
		slog.Bool("yes", true), slog.Bool("no", false),
		slog.Duration("d0", 0), slog.Duration("d", 1500*time.Millisecond), slog.Duration("dneg", -1),
		slog.Duration("dmax", math.MaxInt64), slog.Duration("h", 90*time.Minute),
		slog.Time("tzero", time.Time{}), slog.Time("tfixed", fixed), slog.Time("tist", fixed.In(kolkata)),
		slog.Time("todd", fixed.In(oddZone)), slog.Time("tmono", withMono),
		slog.Time("tepoch", time.Unix(0, 0).UTC()), slog.Time("tnano", time.Date(2026, 1, 1, 0, 0, 0, 999999999, time.UTC)),
		slog.Time("tyear1", time.Date(1, 1, 1, 0, 0, 0, 1e6, time.UTC)),
	}
	for i, s := range strs {
		as = append(as, slog.String(fmt.Sprint("s", i), s))
	}
	return as
}

func strAttrs(f func(i int, s string) slog.Attr) []slog.Attr {
	var as []slog.Attr
	for i, s := range strs {
		as = append(as, f(i, s))
	}
	return as
}

type tcase struct {
	name  string
	opts  *slog.HandlerOptions
	with  func(slog.Handler) slog.Handler // derive the handler, e.g. WithAttrs
	time  time.Time
	level slog.Level
	msg   string
	attrs []slog.Attr
}

func cases() []tcase {
	all := &slog.HandlerOptions{Level: slog.Level(-100)}
	withAttrs := func(as ...slog.Attr) func(slog.Handler) slog.Handler {
		return func(h slog.Handler) slog.Handler { return h.WithAttrs(as) }
	}
	reqAttrs := []slog.Attr{
		slog.String("request_id", "0123456789abcdef0123456789abcdef"), slog.String("method", "POST"),
		slog.String("path", "/v1/chat/completions"), slog.Int("status", 200), slog.Int64("latency_ms", 1234),
		slog.Int64("bytes", 5678), slog.String("model", "deepseek-ai/DeepSeek-V3"),
		slog.String("served_by", "chutes"), slog.Int("attempts", 1), slog.Bool("stream", true),
	}
	tcs := []tcase{
		{name: "request line", attrs: reqAttrs},
		{name: "request line, production options", opts: &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: dropAuth},
			attrs: append(reqAttrs, slog.String("Authorization", "Bearer x"))},
		{name: "nil options", opts: nil, msg: "hello"},
		{name: "no attrs", msg: "hello world"},
		{name: "zero time", time: time.Time{}, msg: "m", attrs: reqAttrs[:2]},
		{name: "zero time, ReplaceAttr", time: time.Time{}, opts: &slog.HandlerOptions{ReplaceAttr: dropAuth}, msg: "m"},
		{name: "zero time, no level no msg", time: time.Time{}, opts: &slog.HandlerOptions{ReplaceAttr: dropBuiltins}, msg: "m", attrs: reqAttrs[:2]},
		{name: "time with monotonic", time: withMono, msg: "m"},
		{name: "time in IST", time: fixed.In(kolkata), msg: "m"},
		{name: "time with odd offset", time: fixed.In(oddZone), msg: "m"},
		{name: "time year 1", time: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), msg: "m"},
		{name: "time year 10000", time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), msg: "m"},
		{name: "time year 10000, ReplaceAttr", time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), opts: &slog.HandlerOptions{ReplaceAttr: dropAuth}, msg: "m"},
		{name: "every kind", opts: all, attrs: allKinds()},
		{name: "every kind, ReplaceAttr", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth}, attrs: allKinds()},
		{name: "keys that need quoting", attrs: strAttrs(func(i int, s string) slog.Attr { return slog.Int(s, i) })},
		{name: "keys that need quoting, ReplaceAttr", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth},
			attrs: strAttrs(func(i int, s string) slog.Attr { return slog.Int(s, i) })},
		{name: "empty attr", attrs: []slog.Attr{slog.Int("a", 1), {}, slog.Int("b", 2)}},
		{name: "empty key", attrs: []slog.Attr{slog.String("", "v"), slog.Int("", 0)}},
		{name: "group", attrs: []slog.Attr{slog.Group("g", slog.Int("a", 1), slog.Group("h", slog.String("b", "x y"))), slog.Int("c", 3)}},
		{name: "group, ReplaceAttr", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth},
			attrs: []slog.Attr{slog.Group("g", slog.Int("a", 1), slog.String("authorization", "k")), slog.Int("c", 3)}},
		{name: "group all dropped leaves prefix", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth},
			attrs: []slog.Attr{slog.Group("g", slog.String("authorization", "k")), slog.Int("c", 3)}},
		{name: "inline and empty groups", attrs: []slog.Attr{slog.Group("", slog.Int("a", 1)), slog.Group("e"), slog.Int("c", 3)}},
		{name: "group key quoting", attrs: []slog.Attr{slog.Group("a b", slog.Int("c", 1), slog.Int("", 2))}},
		{name: "secret", attrs: []slog.Attr{slog.Any("key", secret("sk-123")), slog.Int("n", 1)}},
		{name: "LogValuer group", attrs: []slog.Attr{slog.Any("ep", endpoint{"h", "/p q"})}},
		{name: "LogValuer chain", attrs: []slog.Attr{slog.Any("c", chained(3)), slog.Any("deep", chained(200))}},
		{name: "LogValuer panics", attrs: []slog.Attr{slog.Int("a", 1), slog.Any("p", panicky{})}},
		{name: "LogValuer empty group", attrs: []slog.Attr{slog.Group("g", slog.Any("e", emptyGroup{})), slog.Int("a", 1)}},
		{name: "any values", attrs: []slog.Attr{
			slog.Any("err", errors.New("it broke")), slog.Any("nil", nil), slog.Any("bytes", []byte("a b")),
			slog.Any("named", bytesNamed("x")), slog.Any("struct", struct{ A, B int }{1, 2}),
			slog.Any("tm", &text{"t m"}), slog.Any("tmfail", &text{"fail"}), slog.Any("tmpanic", &text{"panic"}),
			slog.Any("tmnil", (*text)(nil)), slog.Any("level", slog.LevelWarn), slog.Any("kind", slog.KindTime),
		}},
		{name: "drop built-ins", opts: &slog.HandlerOptions{ReplaceAttr: dropBuiltins}, attrs: reqAttrs[:3]},
		{name: "drop built-ins, no attrs", opts: &slog.HandlerOptions{ReplaceAttr: dropBuiltins}},
		{name: "drop built-ins, with attrs", opts: &slog.HandlerOptions{ReplaceAttr: dropBuiltins}, with: withAttrs(slog.Int("w", 1)), attrs: reqAttrs[:1]},
		{name: "drop time", opts: &slog.HandlerOptions{ReplaceAttr: dropKey(slog.TimeKey)}},
		{name: "drop level", opts: &slog.HandlerOptions{ReplaceAttr: dropKey(slog.LevelKey)}},
		{name: "drop msg", opts: &slog.HandlerOptions{ReplaceAttr: dropKey(slog.MessageKey)}, attrs: reqAttrs[:1]},
		{name: "rename", opts: &slog.HandlerOptions{ReplaceAttr: rename}, attrs: append(allKinds(), slog.Group("g", slog.Int("a", 1)))},
		{name: "rename, with attrs", opts: &slog.HandlerOptions{ReplaceAttr: rename}, with: withAttrs(slog.Int("w", 1)), attrs: reqAttrs},
		{name: "change kinds", opts: &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: rekind}, level: slog.LevelDebug + 1, attrs: []slog.Attr{
			slog.Int("n", 5), slog.String("s", "four"), slog.String("bytes", "a\"b"), slog.String("named", "n"),
			slog.String("tm", "t m"), slog.String("tm", "fail"), slog.String("tm", "panic"), slog.Int("nilptr", 0),
			slog.Int("src", 0), slog.Int("nilsrc", 0), slog.Int("emptysrc", 0), slog.String("secret", "x"),
			slog.String("nokey", "v"), slog.Int("t", 0), slog.Int("lvl", 0), slog.Int("map", 0),
		}},
		{name: "change kinds, with attrs", opts: &slog.HandlerOptions{ReplaceAttr: rekind}, with: withAttrs(
			slog.Int("n", 5), slog.String("tm", "fail"), slog.Int("src", 0), slog.String("secret", "x"), slog.Int("map", 0),
		), attrs: []slog.Attr{slog.String("s", "x")}},
		{name: "ReplaceAttr returns groups", opts: &slog.HandlerOptions{ReplaceAttr: grouping}, attrs: []slog.Attr{
			slog.String("g", "v"), slog.String("a", "1"), slog.String("inline", ""), slog.String("none", ""), slog.Int("b", 2),
		}},
		{name: "ReplaceAttr returns group with members dropped", opts: &slog.HandlerOptions{ReplaceAttr: grouping}, attrs: []slog.Attr{
			slog.String("gone", "v"), slog.String("a", "1"), slog.String("g", "v"), slog.Int("b", 2),
		}},
		{name: "ReplaceAttr returns groups, with attrs", opts: &slog.HandlerOptions{ReplaceAttr: grouping},
			with: withAttrs(slog.String("gone", "v"), slog.String("a", "1")), attrs: []slog.Attr{slog.Int("b", 2)}},
		{name: "ReplaceAttr leaks prefix, with attrs then more", opts: &slog.HandlerOptions{ReplaceAttr: grouping},
			with: func(h slog.Handler) slog.Handler {
				return h.WithAttrs([]slog.Attr{slog.String("gone", "v"), slog.String("a", "1")}).
					WithAttrs([]slog.Attr{slog.String("c", "2")})
			}, attrs: []slog.Attr{slog.Int("b", 2)}},
		{name: "ReplaceAttr leaks prefix, delegated", opts: &slog.HandlerOptions{ReplaceAttr: grouping},
			with: withAttrs(slog.String("gone", "v"), slog.String("a", "1")), attrs: []slog.Attr{slog.Group("grp", slog.Int("b", 2))}},
		{name: "ReplaceAttr returns group of nothing first", opts: &slog.HandlerOptions{ReplaceAttr: bare},
			attrs: []slog.Attr{slog.String("eg", ""), slog.Int("a", 1)}},
		{name: "ReplaceAttr returns group of nothing first, with attrs", opts: &slog.HandlerOptions{ReplaceAttr: bare},
			with: withAttrs(slog.String("eg", ""), slog.Int("a", 1)), attrs: []slog.Attr{slog.Int("b", 2)}},
		{name: "with attrs chain", with: func(h slog.Handler) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.String("component", "proxy")}).WithAttrs(nil).
				WithAttrs([]slog.Attr{slog.Group("e")}).WithAttrs([]slog.Attr{slog.Int("n", 1), slog.String("s", "a b")})
		}, attrs: reqAttrs[:2]},
		{name: "with attrs, record without attrs", with: withAttrs(slog.String("component", "proxy"))},
		{name: "with attrs all dropped", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth},
			with: withAttrs(slog.String("authorization", "k")), attrs: reqAttrs[:2]},
		{name: "with attrs partly dropped", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth},
			with: withAttrs(slog.String("authorization", "k"), slog.String("upstream", "u")), attrs: reqAttrs[:2]},
		{name: "with group and any attrs", with: withAttrs(slog.Group("g", slog.Int("a", 1)), slog.Any("err", errors.New("e"))),
			attrs: reqAttrs[:2]},
		{name: "with attrs, delegated record", opts: &slog.HandlerOptions{ReplaceAttr: rename},
			with: withAttrs(slog.String("w", "1")), attrs: []slog.Attr{slog.Any("err", errors.New("e"))}},
		{name: "with secret", opts: &slog.HandlerOptions{ReplaceAttr: dropAuth},
			with: withAttrs(slog.Any("key", secret("k")), slog.Int("a", 1)), attrs: reqAttrs[:2]},
		{name: "with panicking LogValuer", with: withAttrs(slog.Any("p", panicky{})), attrs: reqAttrs[:1]},
		{name: "with group", opts: &slog.HandlerOptions{ReplaceAttr: rename}, with: func(h slog.Handler) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.Int("a", 1)}).WithGroup("g").WithAttrs([]slog.Attr{slog.Int("b", 2)}).WithGroup("h")
		}, attrs: reqAttrs[:2]},
		{name: "with group, ReplaceAttr sees groups", opts: &slog.HandlerOptions{ReplaceAttr: grouping}, with: func(h slog.Handler) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.String("gone", "")}).WithGroup("outer")
		}, attrs: []slog.Attr{slog.String("g", "v"), slog.Int("b", 2)}},
		{name: "with empty group name", with: func(h slog.Handler) slog.Handler { return h.WithGroup("") }, attrs: reqAttrs[:1]},
	}
	for i, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, 2, -3, 100, -100} {
		tcs = append(tcs, tcase{name: fmt.Sprint("level ", l), opts: all, level: l, attrs: reqAttrs[i : i+1]})
		tcs = append(tcs, tcase{name: fmt.Sprint("level ", l, ", ReplaceAttr"),
			opts: &slog.HandlerOptions{Level: all.Level, ReplaceAttr: dropAuth}, level: l})
	}
	for i, s := range strs {
		tcs = append(tcs, tcase{name: fmt.Sprintf("message %d %q", i, s), msg: s, attrs: reqAttrs[:1]})
		tcs = append(tcs, tcase{name: fmt.Sprintf("message %d %q, ReplaceAttr", i, s), opts: &slog.HandlerOptions{ReplaceAttr: dropAuth}, msg: s})
	}
	return tcs
}

// TestMatchesSlog logs each case through slog.TextHandler and ours, with a
// record built by hand and through Logger calls, and wants the same bytes
// and the same ReplaceAttr calls.
func TestMatchesSlog(t *testing.T) {
	for _, tt := range cases() {
		if tt.time.IsZero() && !strings.Contains(tt.name, "zero time") {
			tt.time = fixed
		}
		if tt.msg == "" && !strings.HasPrefix(tt.name, "message") {
			tt.msg = "request"
		}
		derive := func(h slog.Handler) slog.Handler {
			if tt.with != nil {
				return tt.with(h)
			}
			return h
		}
		t.Run(tt.name, func(t *testing.T) {
			t.Run("record", func(t *testing.T) {
				want, got := pair(tt.opts)
				for _, s := range []*sink{want, got} {
					h := derive(s.h)
					r := slog.NewRecord(tt.time, tt.level, tt.msg, 0)
					r.AddAttrs(tt.attrs...)
					if err := h.Handle(context.Background(), r); err != nil {
						t.Fatal(err)
					}
				}
				check(t, want, got)
			})
			t.Run("logger", func(t *testing.T) {
				want, got := pair(tt.opts)
				args := make([]any, len(tt.attrs))
				for i, a := range tt.attrs {
					args[i] = a
				}
				for _, s := range []*sink{want, got} {
					l := slog.New(derive(fixedTime{s.h, tt.time}))
					ctx := context.Background()
					l.LogAttrs(ctx, tt.level, tt.msg, tt.attrs...)
					l.Log(ctx, tt.level, tt.msg, args...)
					l.With(args...).Log(ctx, tt.level, tt.msg)
					l.With(args...).Log(ctx, tt.level, tt.msg, args...)
				}
				check(t, want, got)
			})
		})
	}
}

func TestLoggerArgs(t *testing.T) {
	want, got := pair(&slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: dropAuth})
	for _, s := range []*sink{want, got} {
		l := slog.New(fixedTime{s.h, fixed})
		l.Debug("debug", "a", 1, "b", "two words", "authorization", "Bearer k")
		// Malformed argument lists, in a slice so vet lets them through.
		odd := []any{"dangling"}
		l.Info("odd args", odd...)
		mixed := []any{1, "x", slog.Int("y", 2), "z", 3 * time.Second, "u", uint(7), "f", float32(1.5)}
		l.Warn("mixed", mixed...)
		c := l.With("component", "proxy", "authorization", "k")
		c.Error("failed", "err", errors.New("upstream: reading: EOF"), "model", "m")
		c.WithGroup("g").Info("grouped", "a", 1)
		c.With().Info("empty with")
		c.WithGroup("").Info("empty group name", "a", 1)
	}
	check(t, want, got)
}

func TestEnabled(t *testing.T) {
	var lv slog.LevelVar
	for _, opts := range []*slog.HandlerOptions{nil, {}, {Level: slog.LevelWarn}, {Level: &lv}} {
		want, got := pair(opts)
		for _, set := range []slog.Level{slog.LevelDebug, slog.LevelError} {
			lv.Set(set)
			for l := slog.Level(-10); l <= 10; l++ {
				if w, g := want.h.Enabled(context.Background(), l), got.h.Enabled(context.Background(), l); w != g {
					t.Errorf("opts %+v, var %v: Enabled(%v) = %v, slog says %v", opts, set, l, g, w)
				}
			}
		}
	}
}

// TestAddSource: with AddSource the record carries a PC, which our path
// doesn't format; the output must still match.
func TestAddSource(t *testing.T) {
	want, got := pair(&slog.HandlerOptions{AddSource: true, ReplaceAttr: dropAuth})
	for _, s := range []*sink{want, got} {
		l := slog.New(fixedTime{s.h, fixed})
		l.Info("with source", "a", 1) // same line for both, so same source
	}
	check(t, want, got)
	if !strings.Contains(got.buf.String(), "source=") {
		t.Errorf("no source in %q", got.buf.String())
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteError(t *testing.T) {
	h := NewTextHandler(errWriter{}, nil)
	r := slog.NewRecord(fixed, slog.LevelInfo, "m", 0)
	if err := h.Handle(context.Background(), r); err == nil || err.Error() != "disk full" {
		t.Errorf("Handle = %v, want disk full", err)
	}
	r.AddAttrs(slog.Group("g", slog.Int("a", 1)))
	if err := h.Handle(context.Background(), r); err == nil || err.Error() != "disk full" {
		t.Errorf("delegated Handle = %v, want disk full", err)
	}
}

// TestOneWritePerRecord: each record is one Write, on either path.
func TestOneWritePerRecord(t *testing.T) {
	var cw countWriter
	h := NewTextHandler(&cw, nil).WithAttrs([]slog.Attr{slog.Int("a", 1)})
	r := slog.NewRecord(fixed, slog.LevelInfo, "m", 0)
	r.AddAttrs(slog.String("s", "x"))
	_ = h.Handle(context.Background(), r)
	r.AddAttrs(slog.Any("err", errors.New("e")))
	_ = h.Handle(context.Background(), r)
	_ = h.WithGroup("g").Handle(context.Background(), r)
	if cw.writes != 3 || cw.lines != 3 {
		t.Errorf("%d writes with %d lines, want 3 and 3", cw.writes, cw.lines)
	}
}

type countWriter struct{ writes, lines int }

func (c *countWriter) Write(p []byte) (int, error) {
	c.writes++
	c.lines += strings.Count(string(p), "\n")
	return len(p), nil
}

// TestFastPath: the request line is formatted here; slog is built only for
// a record that needs it.
func TestFastPath(t *testing.T) {
	h := NewTextHandler(io.Discard, &slog.HandlerOptions{ReplaceAttr: dropAuth}).(*handler)
	c := h.WithAttrs([]slog.Attr{slog.String("component", "proxy")}).(*handler)
	r := slog.NewRecord(fixed, slog.LevelInfo, "request", 0)
	r.AddAttrs(slog.String("model", "m"), slog.Int("status", 200), slog.Bool("stream", true),
		slog.Duration("d", time.Second), slog.Float64("f", 1), slog.Uint64("u", 1), slog.Time("t", fixed))
	_ = c.Handle(context.Background(), r)
	if h.inner != nil || c.inner != nil {
		t.Fatal("simple record was delegated")
	}
	r.AddAttrs(slog.Any("err", errors.New("e")))
	_ = c.Handle(context.Background(), r)
	if c.inner == nil {
		t.Fatal("record with an error value was not delegated")
	}
}

// TestAppendTime: the cached second gives what slog's formatting gives,
// whatever order times in and out of the cache come in.
func TestAppendTime(t *testing.T) {
	far := time.FixedZone("far", 1e6) // an offset of eleven days
	var times []time.Time
	for _, base := range []time.Time{fixed, withMono, time.Time{}, time.Unix(-1, 5e8), time.Unix(-62135596800, 0),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(1<<40, 0)} {
		for _, loc := range []*time.Location{time.UTC, kolkata, oddZone, far, time.Local} {
			for _, d := range []time.Duration{0, time.Millisecond - 1, time.Millisecond, 999 * time.Millisecond, time.Second} {
				times = append(times, base.In(loc).Add(d))
			}
		}
	}
	for _, pass := range []string{"in order", "again"} {
		for _, tm := range times {
			want := string(appendRFC3339Millis([]byte("x="), tm))
			if got := string(appendTime([]byte("x="), tm)); got != want {
				t.Errorf("%s: appendTime(%v) = %q, want %q", pass, tm, got, want)
			}
		}
	}
	// And appendRFC3339Millis is slog's.
	want, got := pair(nil)
	for _, s := range []*sink{want, got} {
		for _, tm := range times {
			r := slog.NewRecord(tm, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.Time("t", tm))
			_ = s.h.Handle(context.Background(), r)
		}
	}
	check(t, want, got)
}
