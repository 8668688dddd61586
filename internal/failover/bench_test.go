package failover

import (
	"context"
	"testing"

	"github.com/sony/gobreaker/v2"
)

// BenchmarkDo is the chain walk around one attempt, the try itself free:
// what failover costs a request. "closed" is the common case (the first
// model serves); "first-open" skips a model whose breaker is open and
// serves from the second, the figure behind the ≤ 50 µs target;
// "alias" resolves an alias first; "parallel" is "closed" from every P at
// once, to show contention on the router's shared state.
func BenchmarkDo(b *testing.B) {
	ctx := context.Background()
	served := func(context.Context, string) error { return nil }
	newRouter := func(b *testing.B) *Router {
		return New(testConfig(b, chain("a/first", []string{"auto"}, "b/second", "c/third")), nil, nil)
	}
	req := Request{Model: "a/first", PromptTokens: 300}

	b.Run("closed", func(b *testing.B) {
		r := newRouter(b)
		b.ReportAllocs()
		for b.Loop() {
			if res, err := r.Do(ctx, req, served); err != nil || res.Model != "a/first" {
				b.Fatal(res.Model, err)
			}
		}
	})
	b.Run("alias", func(b *testing.B) {
		r := newRouter(b)
		b.ReportAllocs()
		for b.Loop() {
			if res, err := r.Do(ctx, Request{Model: "auto", PromptTokens: 300}, served); err != nil || res.Model != "a/first" {
				b.Fatal(res.Model, err)
			}
		}
	})
	b.Run("first-open", func(b *testing.B) {
		r := newRouter(b)
		fail := func(_ context.Context, model string) error {
			if model == "a/first" {
				return &UpstreamError{Status: 503}
			}
			return nil
		}
		for range 10 {
			_, _ = r.Do(ctx, req, fail)
		}
		if st := r.Model("a/first").State(); st != gobreaker.StateOpen {
			b.Fatalf("breaker %s, want open", st)
		}
		b.ReportAllocs()
		for b.Loop() {
			if res, err := r.Do(ctx, req, served); err != nil || res.Model != "b/second" {
				b.Fatal(res.Model, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		r := newRouter(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if res, err := r.Do(ctx, req, served); err != nil || res.Model != "a/first" {
					b.Error(res.Model, err)
					return
				}
			}
		})
	})
}
