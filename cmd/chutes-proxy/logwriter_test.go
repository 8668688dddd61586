package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

func (c *countingWriter) get() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.writes
}

func TestBatchWriter(t *testing.T) {
	t.Run("a lone line is written at once", func(t *testing.T) {
		var w countingWriter
		b := newBatchWriter(&w)
		b.Write([]byte("one\n"))
		if got, n := w.get(); got != "one\n" || n != 1 {
			t.Fatalf("got %q in %d writes", got, n)
		}
	})
	t.Run("a burst is one write, in order, within the batch time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var w countingWriter
			b := newBatchWriter(&w)
			var want strings.Builder
			for i := range 100 {
				line := strings.Repeat("x", i%7) + "\n"
				want.WriteString(line)
				b.Write([]byte(line))
			}
			if _, n := w.get(); n != 1 {
				t.Fatalf("%d writes before the batch time, want 1 (the first line through, the rest held)", n)
			}
			time.Sleep(logBatch) // the bubble's clock: no real time passes
			synctest.Wait()
			got, n := w.get()
			if got != want.String() {
				t.Fatalf("after the batch time: got %q", got)
			}
			if n != 2 {
				t.Fatalf("100 lines took %d writes, want 2 (the first through, the rest batched)", n)
			}
		})
	})
	t.Run("Flush writes what is held", func(t *testing.T) {
		var w countingWriter
		b := newBatchWriter(&w)
		b.Write([]byte("a\n"))
		b.Write([]byte("b\n"))
		b.Flush()
		if got, _ := w.get(); got != "a\nb\n" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("a large backlog is written without waiting", func(t *testing.T) {
		var w countingWriter
		b := newBatchWriter(&w)
		b.Write([]byte("a\n"))
		big := bytes.Repeat([]byte("y"), 70<<10)
		b.Write([]byte("b\n"))
		b.Write(big)
		if got, _ := w.get(); len(got) != 2+2+len(big) {
			t.Fatalf("held %d bytes past the 64 KiB bound", 2+2+len(big)-len(got))
		}
	})
}
