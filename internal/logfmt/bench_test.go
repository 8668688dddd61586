package logfmt

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkHandler logs the proxy's request line (proxy.Server.logRequest)
// with the options cmd/chutes-proxy's newLogger uses.
func BenchmarkHandler(b *testing.B) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: dropAuth}
	for _, bb := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewTextHandler(io.Discard, opts)},
		{"logfmt", NewTextHandler(io.Discard, opts)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			l := slog.New(bb.h)
			ctx := context.Background()
			latency := 1234 * time.Millisecond
			b.ReportAllocs()
			for b.Loop() {
				attrs := make([]slog.Attr, 0, 11)
				attrs = append(attrs,
					slog.String("request_id", "0123456789abcdef0123456789abcdef"),
					slog.String("method", "POST"),
					slog.String("path", "/v1/chat/completions"),
					slog.Int("status", 200),
					slog.Int64("latency_ms", latency.Milliseconds()),
					slog.Int64("bytes", 5678),
				)
				attrs = append(attrs, slog.String("model", "deepseek-ai/DeepSeek-V3-0324"), slog.String("served_by", "chutes-a"),
					slog.Int("attempts", 1), slog.Bool("stream", true))
				l.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
			}
		})
	}
}

// BenchmarkHandle times Handle alone on a prebuilt request-line record,
// without the Logger's own costs (caller PC, building the Record), which
// both handlers share.
func BenchmarkHandle(b *testing.B) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: dropAuth}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
	r.AddAttrs(
		slog.String("request_id", "0123456789abcdef0123456789abcdef"), slog.String("method", "POST"),
		slog.String("path", "/v1/chat/completions"), slog.Int("status", 200), slog.Int64("latency_ms", 1234),
		slog.Int64("bytes", 5678), slog.String("model", "deepseek-ai/DeepSeek-V3-0324"),
		slog.String("served_by", "chutes-a"), slog.Int("attempts", 1), slog.Bool("stream", true),
	)
	for _, bb := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewTextHandler(io.Discard, opts)},
		{"logfmt", NewTextHandler(io.Discard, opts)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_ = bb.h.Handle(ctx, r)
			}
		})
	}
}
