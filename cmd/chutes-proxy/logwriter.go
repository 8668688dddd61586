package main

import (
	"io"
	"sync"
	"time"
)

// logBatch is how long a log line may wait for the ones after it.
const logBatch = 50 * time.Millisecond

// batchWriter writes log lines to w as they come while they come slowly,
// and in batches at most logBatch late while they come fast: under load
// the proxy logs a line per request, and a write to a terminal, a pipe or
// journald costs more than formatting the line (docs/BENCHMARKS.md). Flush
// must be called before the process exits.
type batchWriter struct {
	mu      sync.Mutex
	w       io.Writer
	buf     []byte
	last    time.Time // of the last write to w
	pending bool      // a flush is scheduled
	timer   *time.Timer
}

func newBatchWriter(w io.Writer) *batchWriter { return &batchWriter{w: w} }

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending {
		b.buf = append(b.buf, p...)
		if len(b.buf) >= 64<<10 {
			b.flushLocked()
		}
		return len(p), nil
	}
	now := time.Now()
	if now.Sub(b.last) >= logBatch {
		b.last = now
		return b.w.Write(p)
	}
	// A line right after another: hold it, and those after it, for one
	// write.
	b.buf = append(b.buf, p...)
	b.pending = true
	if b.timer == nil {
		b.timer = time.AfterFunc(logBatch, b.Flush)
	} else {
		b.timer.Reset(logBatch)
	}
	return len(p), nil
}

// Flush writes what is held.
func (b *batchWriter) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *batchWriter) flushLocked() {
	if len(b.buf) > 0 {
		_, _ = b.w.Write(b.buf)
		b.buf = b.buf[:0]
		b.last = time.Now()
	}
	b.pending = false
	if b.timer != nil {
		b.timer.Stop()
	}
}
