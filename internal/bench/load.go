package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Client is the load generator's HTTP client: enough idle connections per
// host that it never churns connections itself.
type Client struct {
	hc *http.Client
	tr *http.Transport
}

// NewClient returns a client with up to 4096 connections per host kept warm.
func NewClient() *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        8192,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute}, tr: tr}
}

// Close drops idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// reply is what one request got.
type reply struct {
	status   int
	model    string // X-Chutes-Proxy-Model
	attempts string // X-Chutes-Proxy-Attempts
}

// post sends body to url and reads the whole answer.
func (c *Client) post(ctx context.Context, url string, body []byte) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r := reply{status: resp.StatusCode, model: resp.Header.Get("X-Chutes-Proxy-Model"),
		attempts: resp.Header.Get("X-Chutes-Proxy-Attempts")}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return r, err
}

// ChatBody is a chat request for model of about size bytes (the user
// message is padded), streaming or not.
func ChatBody(model string, stream bool, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"` + model + `","messages":[{"role":"system","content":"You are a helpful assistant in a group chat. Stay in character."},{"role":"user","content":"`)
	pad := size - b.Len() - 80
	for pad > 0 {
		n := min(pad, 60)
		b.WriteString("The quick brown fox jumps over the lazy dog again and again. "[:n])
		pad -= n
	}
	b.WriteString(`Hello!"}],"temperature":0.7,"max_tokens":256`)
	if stream {
		b.WriteString(`,"stream":true`)
	}
	b.WriteString("}")
	return b.Bytes()
}

// Sample is one round's measurements of one target.
type Sample struct {
	N, Errors int
	FirstErr  string
	Elapsed   time.Duration
	Lat       []time.Duration // sorted request latencies (stream: to the end)
	Delay     []time.Duration // sorted per-event delays (stream)
	Coalesced int             // events that arrived in the same read as the one before
	Events    int
	// CPU is the serving side's CPU time during the round, when known.
	CPU     time.Duration
	HaveCPU bool
}

// RPS is requests (or streams) per second.
func (s *Sample) RPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.N) / s.Elapsed.Seconds()
}

// pct is the nearest-rank percentile of sorted d.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p/100*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

type worker struct {
	n, errs   int
	firstErr  error
	lat       []time.Duration
	delay     []time.Duration
	coalesced int
	events    int
}

// done records one request begun at t0: its latency, or its error.
func (w *worker) done(t0 time.Time, err error) {
	if err != nil {
		w.errs++
		if w.firstErr == nil {
			w.firstErr = err
		}
		return
	}
	w.lat = append(w.lat, time.Since(t0))
	w.n++
}

func merge(ws []*worker, elapsed time.Duration) Sample {
	s := Sample{Elapsed: elapsed}
	for _, w := range ws {
		s.N += w.n
		s.Errors += w.errs
		if w.firstErr != nil && s.FirstErr == "" {
			s.FirstErr = w.firstErr.Error()
		}
		s.Lat = append(s.Lat, w.lat...)
		s.Delay = append(s.Delay, w.delay...)
		s.Coalesced += w.coalesced
		s.Events += w.events
	}
	slices.Sort(s.Lat)
	slices.Sort(s.Delay)
	return s
}

// Plain runs clients closed-loop workers posting body to url for d (or
// until each has sent count requests when count > 0).
func (c *Client) Plain(ctx context.Context, url string, body []byte, clients int, d time.Duration, count int) Sample {
	ws := make([]*worker, clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 4096)}
		ws[i] = w
		wg.Go(func() {
			for ctx.Err() == nil {
				if count > 0 && w.n+w.errs >= count || count <= 0 && !time.Now().Before(deadline) {
					return
				}
				t0 := time.Now()
				_, err := c.post(ctx, url, body)
				w.done(t0, err)
			}
		})
	}
	wg.Wait()
	return merge(ws, time.Since(start))
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

var errShortStream = errors.New("stream ended early")

// readStream reads one SSE answer and notes each event's delay from its
// upstream stamp to the moment this reader has it.
func readStream(body io.Reader, want int, w *worker) error {
	cr := &countReader{r: body}
	br := bufio.NewReaderSize(cr, 64<<10)
	lastRead, got, done := -1, 0, false
	prefix := []byte(`data: {"t":`)
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, prefix) {
			now := time.Now().UnixNano()
			rest := line[len(prefix):]
			if i := bytes.IndexByte(rest, ','); i > 0 {
				if t, perr := strconv.ParseInt(string(rest[:i]), 10, 64); perr == nil {
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
		return fmt.Errorf("%w: %d of %d events, done=%v", errShortStream, got, want, done)
	}
	return nil
}

// stream opens one stream and reads it to the end.
func (c *Client) stream(ctx context.Context, url string, body []byte, events int, w *worker, opened func()) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if opened != nil {
		opened()
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return readStream(resp.Body, events, w)
}

// Stream runs clients workers that open streams of events one after the
// other for d.
func (c *Client) Stream(ctx context.Context, url string, body []byte, events, clients int, d time.Duration) Sample {
	ws := make([]*worker, clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := range ws {
		w := &worker{}
		ws[i] = w
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t0 := time.Now()
				w.done(t0, c.stream(ctx, url, body, events, w, nil))
			}
		})
	}
	wg.Wait()
	return merge(ws, time.Since(start))
}

// Concurrent opens n streams at once. Once every one of them has its
// response headers (or failed), atPeak is called while all are still open;
// then they are read to the end.
func (c *Client) Concurrent(ctx context.Context, url string, body []byte, events, n int, atPeak func()) Sample {
	ws := make([]*worker, n)
	var wg sync.WaitGroup
	var openWG sync.WaitGroup
	openWG.Add(n)
	start := time.Now()
	for i := range ws {
		w := &worker{}
		ws[i] = w
		wg.Go(func() {
			var once sync.Once
			t0 := time.Now()
			err := c.stream(ctx, url, body, events, w, func() { once.Do(openWG.Done) })
			once.Do(openWG.Done)
			if err != nil {
				w.errs++
				w.firstErr = err
				return
			}
			w.lat = append(w.lat, time.Since(t0))
			w.n++
		})
	}
	openWG.Wait()
	if atPeak != nil {
		atPeak()
	}
	wg.Wait()
	return merge(ws, time.Since(start))
}
