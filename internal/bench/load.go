package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Request body sizes: a chat turn, and the large-body scenario's.
const (
	bodySize  = 1 << 10
	largeSize = 1 << 20
)

// client is the load generator: enough idle connections per host that it
// never churns connections itself.
type client struct {
	hc *http.Client
	tr *http.Transport
}

func newClient() *client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        8192,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &client{hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute}, tr: tr}
}

// Close drops idle connections.
func (c *client) Close() { c.tr.CloseIdleConnections() }

// reply is what one request got: the proxy's headers that say who served it.
type reply struct {
	model    string // X-Chutes-Proxy-Model
	attempts string // X-Chutes-Proxy-Attempts
}

// do sends body to url and returns the response with a 200 status.
func (c *client) do(ctx context.Context, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp, err
}

// post sends body to url and reads the whole answer.
func (c *client) post(ctx context.Context, url string, body []byte) (reply, error) {
	resp, err := c.do(ctx, url, body)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return reply{model: resp.Header.Get("X-Chutes-Proxy-Model"), attempts: resp.Header.Get("X-Chutes-Proxy-Attempts")}, err
}

// chatBody is a chat request for model of about size bytes (the user
// message is padded), streaming or not.
func chatBody(model string, stream bool, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"` + model + `","messages":[{"role":"system","content":"You are a helpful assistant in a group chat. Stay in character."},{"role":"user","content":"`)
	for pad := size - b.Len() - 80; pad > 0; pad -= 60 {
		b.WriteString("The quick brown fox jumps over the lazy dog again and again. "[:min(pad, 60)])
	}
	b.WriteString(`Hello!"}],"temperature":0.7,"max_tokens":256`)
	if stream {
		b.WriteString(`,"stream":true`)
	}
	b.WriteString("}")
	return b.Bytes()
}

// streamQuery sets the shape of the simulator's fast streams.
func streamQuery(events int, gap time.Duration) string {
	return "?events=" + strconv.Itoa(events) + "&gap=" + gap.String()
}

// sample is one round's measurements of one target; also one worker's.
type sample struct {
	n, errs   int
	firstErr  string
	elapsed   time.Duration
	lat       []time.Duration // sorted request latencies (stream: to the end)
	delay     []time.Duration // sorted per-event delays (stream)
	coalesced int             // events that arrived in the same read as the one before
	events    int
	cpu       time.Duration // the serving side's CPU time during the round
	haveCPU   bool
}

func (s *sample) rps() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.n) / s.elapsed.Seconds()
}

// done records one request begun at t0: its latency, or its error.
func (s *sample) done(t0 time.Time, err error) {
	if err != nil {
		s.errs++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.lat = append(s.lat, time.Since(t0))
	s.n++
}

// pct is the nearest-rank percentile of sorted d.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p/100*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// workers runs n workers until each returns and merges their samples.
func workers(n int, work func(w *sample)) sample {
	ws := make([]sample, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		wg.Go(func() { work(&ws[i]) })
	}
	wg.Wait()
	s := sample{elapsed: time.Since(start)}
	for _, w := range ws {
		s.n += w.n
		s.errs += w.errs
		if s.firstErr == "" {
			s.firstErr = w.firstErr
		}
		s.lat = append(s.lat, w.lat...)
		s.delay = append(s.delay, w.delay...)
		s.coalesced += w.coalesced
		s.events += w.events
	}
	slices.Sort(s.lat)
	slices.Sort(s.delay)
	return s
}

// plain runs clients closed-loop workers posting body to url for d, or
// until each has sent count requests when count > 0.
func (c *client) plain(ctx context.Context, url string, body []byte, clients int, d time.Duration, count int) sample {
	deadline := time.Now().Add(d)
	return workers(clients, func(w *sample) {
		for ctx.Err() == nil && (count > 0 && w.n+w.errs < count || count <= 0 && time.Now().Before(deadline)) {
			t0 := time.Now()
			_, err := c.post(ctx, url, body)
			w.done(t0, err)
		}
	})
}

// countReader counts Read calls, to tell events that came in their own read
// from events that were batched with the one before.
type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	c.n++
	return c.r.Read(p)
}

// stream opens one stream, calls opened once its headers are in (or it
// failed), and reads it to the end, noting each event's delay from its
// upstream stamp to the moment this reader has it.
func (c *client) stream(ctx context.Context, url string, body []byte, want int, w *sample, opened func()) error {
	resp, err := c.do(ctx, url, body)
	opened()
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	cr := &countReader{r: resp.Body}
	br := bufio.NewReaderSize(cr, 64<<10)
	lastRead, got, done := -1, 0, false
	prefix := []byte(`data: {"t":`)
	for {
		line, err := br.ReadSlice('\n')
		if rest, ok := bytes.CutPrefix(line, prefix); ok {
			now := time.Now().UnixNano()
			if i := bytes.IndexByte(rest, ','); i > 0 {
				if t, err := strconv.ParseInt(string(rest[:i]), 10, 64); err == nil {
					w.delay = append(w.delay, time.Duration(now-t))
				}
			}
			if cr.n == lastRead {
				w.coalesced++
			}
			lastRead = cr.n
			got++
			w.events++
		} else if bytes.HasPrefix(line, []byte("data: [DONE]")) {
			done = true
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
	}
	if got < want || !done {
		return fmt.Errorf("stream ended early: %d of %d events, done=%v", got, want, done)
	}
	return nil
}

// streams runs clients workers that open streams of events one after the
// other for d.
func (c *client) streams(ctx context.Context, url string, body []byte, events, clients int, d time.Duration) sample {
	deadline := time.Now().Add(d)
	return workers(clients, func(w *sample) {
		for ctx.Err() == nil && time.Now().Before(deadline) {
			t0 := time.Now()
			w.done(t0, c.stream(ctx, url, body, events, w, func() {}))
		}
	})
}

// concurrent opens n streams at once. Once every one of them has its
// response headers (or failed), atPeak is called while all are still open;
// then they are read to the end.
func (c *client) concurrent(ctx context.Context, url string, body []byte, events, n int, atPeak func()) sample {
	var open sync.WaitGroup
	open.Add(n)
	peaked := make(chan struct{})
	go func() {
		open.Wait()
		atPeak()
		close(peaked)
	}()
	s := workers(n, func(w *sample) {
		t0 := time.Now()
		w.done(t0, c.stream(ctx, url, body, events, w, open.Done))
	})
	<-peaked
	return s
}
