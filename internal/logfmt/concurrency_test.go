package logfmt

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// parseLine splits a text-handler line into its keys and values, unquoting
// quoted ones; it fails on anything else.
func parseLine(line string) (map[string]string, error) {
	kv := map[string]string{}
	for line != "" {
		key, rest, err := parseToken(line)
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		if !strings.HasPrefix(rest, "=") {
			return nil, fmt.Errorf("no '=' after key %q", key)
		}
		val, rest, err := parseToken(rest[1:])
		if err != nil {
			return nil, fmt.Errorf("value of %q: %w", key, err)
		}
		if _, dup := kv[key]; dup {
			return nil, fmt.Errorf("duplicate key %q", key)
		}
		kv[key] = val
		line = strings.TrimPrefix(rest, " ")
	}
	return kv, nil
}

func parseToken(s string) (tok, rest string, err error) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", err
		}
		tok, err = strconv.Unquote(q)
		return tok, s[len(q):], err
	}
	i := strings.IndexAny(s, " =")
	if i < 0 {
		i = len(s)
	}
	return s[:i], s[i:], nil
}

// TestConcurrent logs from many goroutines through handlers derived with
// WithAttrs (and one with WithGroup), on both paths, into a writer that is
// not safe for concurrent use: every line must come out whole, once.
func TestConcurrent(t *testing.T) {
	const goroutines, perG = 16, 200
	var buf bytes.Buffer
	root := NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropAuth})
	base := root.WithAttrs([]slog.Attr{slog.String("component", "proxy")})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var h slog.Handler = base.WithAttrs([]slog.Attr{slog.Int("g", g), slog.String("authorization", "k")})
			switch g % 4 {
			case 2: // share base, and its delegate, with the other goroutines like this one
				h = base
			case 3:
				h = h.WithGroup("grp")
			}
			l := slog.New(h)
			for i := range perG {
				id := []any{"i", i}
				if g%4 == 2 {
					id = append(id, "g", g)
				}
				switch i % 3 {
				case 0:
					l.Info("request", append(id, "path", "/v1/chat completions", "stream", true)...)
				case 1:
					l.Warn("failed", append(id, "err", errors.New("reading: EOF"))...)
				case 2:
					l.Info("request", append(id, slog.Group("up", slog.String("name", "a b")))...)
				}
			}
		})
	}
	wg.Wait()

	seen := map[string]bool{}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != goroutines*perG {
		t.Fatalf("%d lines, want %d", len(lines), goroutines*perG)
	}
	for _, line := range lines {
		kv, err := parseLine(line)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		prefix := ""
		if _, ok := kv["grp.i"]; ok {
			prefix = "grp."
		}
		id := kv["g"] + "/" + kv[prefix+"i"]
		if kv["time"] == "" || kv["component"] != "proxy" || kv["g"] == "" || kv[prefix+"i"] == "" || kv["authorization"] != "" {
			t.Fatalf("line %q lacks an attribute", line)
		}
		if seen[id] {
			t.Fatalf("line %s twice", id)
		}
		seen[id] = true
	}
}
