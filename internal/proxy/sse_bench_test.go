package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/assemble"
)

// flushCounter is a ResponseWriter that drops what is written and counts
// flushes, so that the copy loops are measured without a socket.
type flushCounter struct {
	h       http.Header
	bytes   int
	flushes int
}

func (f *flushCounter) Header() http.Header         { return f.h }
func (f *flushCounter) WriteHeader(int)             {}
func (f *flushCounter) Write(p []byte) (int, error) { f.bytes += len(p); return len(p), nil }
func (f *flushCounter) Flush()                      { f.flushes++ }

// sseStream is n chat.completion.chunk events as vLLM/SGLang behind Chutes
// send them, then [DONE].
func sseStream(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		b.WriteString(`data: {"id":"chatcmpl-7f3a","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-ai/DeepSeek-R1",` +
			`"choices":[{"index":0,"delta":{"content":" token` + strconv.Itoa(i) + `","reasoning_content":null},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// BenchmarkRelaySSE is the committed stream's copy loop: read a line,
// judge it, write it, flush at each event's end. The figure to read is
// ns/event; every event must be flushed on its own.
func BenchmarkRelaySSE(b *testing.B) {
	for _, n := range []int{20, 500} {
		data := sseStream(n)
		b.Run(strconv.Itoa(n)+"events", func(b *testing.B) {
			rd := bytes.NewReader(data)
			br := bufio.NewReaderSize(rd, bufSize)
			w := &flushCounter{h: http.Header{}}
			rc := http.NewResponseController(w)
			_, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			touch := func() {}
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				rd.Reset(data)
				br.Reset(rd)
				held, tok, err := firstToken(br, assemble.New(assemble.Chat))
				if err != nil {
					b.Fatal(err)
				}
				c := &committed{br: br, pending: append(held, tok...), sse: true, cancel: cancel}
				w.flushes = 0
				if err := relaySSE(w, rc, c, touch, nil); err != nil {
					b.Fatal(err)
				}
				// one flush per event after the first, the first event's,
				// and the one at EOF
				if w.flushes != n+2 {
					b.Fatalf("%d flushes for %d events", w.flushes, n+1)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n+1), "ns/event")
		})
	}
}

// BenchmarkRelayPlain copies a non-stream reply as it arrives.
func BenchmarkRelayPlain(b *testing.B) {
	data := bytes.Repeat([]byte(`{"choices":[{"message":{"content":"lorem ipsum dolor sit amet"}}]}`), 60)
	rd := bytes.NewReader(data)
	br := bufio.NewReaderSize(rd, bufSize)
	w := &flushCounter{h: http.Header{}}
	touch := func() {}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		rd.Reset(data)
		br.Reset(rd)
		if err := relayPlain(w, &committed{br: br}, touch); err != nil {
			b.Fatal(err)
		}
	}
}
