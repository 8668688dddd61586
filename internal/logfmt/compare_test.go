package logfmt

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fixedTime is a wrapper that stamps every record with t, so that Logger
// calls through slog's handler and ours produce comparable lines.
type fixedTime struct {
	slog.Handler
	t time.Time
}

func (f fixedTime) Handle(ctx context.Context, r slog.Record) error {
	r.Time = f.t
	return f.Handler.Handle(ctx, r)
}

func (f fixedTime) WithAttrs(as []slog.Attr) slog.Handler {
	return fixedTime{f.Handler.WithAttrs(as), f.t}
}

func (f fixedTime) WithGroup(name string) slog.Handler {
	return fixedTime{f.Handler.WithGroup(name), f.t}
}

// recorder wraps a ReplaceAttr and logs each call, so the two handlers'
// calls can be compared as well as their output.
type recorder struct {
	rep   func([]string, slog.Attr) slog.Attr
	calls []string
}

func (rc *recorder) replace(groups []string, a slog.Attr) slog.Attr {
	rc.calls = append(rc.calls, fmt.Sprintf("groups=%q nil=%v key=%q kind=%v", groups, groups == nil, a.Key, a.Value.Kind()))
	return rc.rep(groups, a)
}

// sink is one handler under test with its output and ReplaceAttr calls.
type sink struct {
	buf bytes.Buffer
	rc  *recorder
	h   slog.Handler
}

// pair builds slog's handler and ours over the same options.
func pair(opts *slog.HandlerOptions) (want, got *sink) {
	build := func(newHandler func(w *bytes.Buffer, o *slog.HandlerOptions) slog.Handler) *sink {
		s := &sink{}
		var o *slog.HandlerOptions
		if opts != nil {
			cp := *opts
			if cp.ReplaceAttr != nil {
				s.rc = &recorder{rep: cp.ReplaceAttr}
				cp.ReplaceAttr = s.rc.replace
			}
			o = &cp
		}
		s.h = newHandler(&s.buf, o)
		return s
	}
	want = build(func(w *bytes.Buffer, o *slog.HandlerOptions) slog.Handler { return slog.NewTextHandler(w, o) })
	got = build(func(w *bytes.Buffer, o *slog.HandlerOptions) slog.Handler { return NewTextHandler(w, o) })
	return want, got
}

// check fails t unless both sinks wrote the same bytes and made the same
// ReplaceAttr calls.
func check(t *testing.T, want, got *sink) {
	t.Helper()
	if w, g := want.buf.String(), got.buf.String(); w != g {
		t.Errorf("output differs\nslog:   %q\nlogfmt: %q", w, g)
	}
	if want.rc != nil {
		if w, g := strings.Join(want.rc.calls, "\n"), strings.Join(got.rc.calls, "\n"); w != g {
			t.Errorf("ReplaceAttr calls differ\nslog:\n%s\nlogfmt:\n%s", w, g)
		}
	}
}
