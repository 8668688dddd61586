package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/chutes-proxy/chutes-proxy/internal/assemble"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// lineKind is what one SSE line is, judged by its first bytes.
type lineKind int

const (
	lineBlank    lineKind = iota // ends an event
	lineField                    // data:, event:, id:, retry:, or a ":" comment: passed on
	lineError                    // data: {"error": ...}: the upstream reports a failure
	lineBareJSON                 // {"error": ...} with no "data: ": Chutes' mid-stream failure
	lineJunk                     // anything else: not SSE, never passed on
)

// maxFirstEvent bounds what is held before a stream is committed.
const maxFirstEvent = 1 << 20

// classify judges a line (with or without its line ending).
func classify(line []byte) (lineKind, []byte) {
	l := bytes.TrimRight(line, "\r\n")
	switch {
	case len(l) == 0:
		return lineBlank, nil
	case l[0] == ':':
		return lineField, nil
	case bytes.HasPrefix(l, []byte("data:")):
		v := l[5:]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		if isErrorObject(v) {
			return lineError, v
		}
		return lineField, nil
	case bytes.HasPrefix(l, []byte("event:")), bytes.HasPrefix(l, []byte("id:")), bytes.HasPrefix(l, []byte("retry:")):
		return lineField, nil
	case l[0] == '{' || l[0] == '[':
		return lineBareJSON, l
	}
	return lineJunk, nil
}

// isErrorObject reports whether v is a JSON object whose first key is
// "error" — how Chutes and vLLM report a failure inside a stream. Ordinary
// chunks start with "id" or "object", so a prefix check suffices.
func isErrorObject(v []byte) bool {
	v = bytes.TrimLeft(v, " \t")
	if len(v) == 0 || v[0] != '{' {
		return false
	}
	v = bytes.TrimLeft(v[1:], " \t\r\n")
	return bytes.HasPrefix(v, []byte(`"error"`))
}

// streamReason is a readable reason from an error line.
func streamReason(v []byte) string {
	if r := failover.ReasonFromBody(v); r != "" {
		return r
	}
	if len(v) > 200 {
		v = v[:200]
	}
	return string(v)
}

// errNoDone ends a stream whose upstream closed the connection cleanly
// without "data: [DONE]": a cut that looks like an ending.
var errNoDone = errors.New("the stream ended without data: [DONE]")

// event is one SSE event: its lines as received, and its data joined.
type event struct {
	lines []byte
	data  []byte
	done  bool // data: [DONE]
}

// nextEvent reads one event (pre-commit only, where events are bounded by
// maxFirstEvent). An error line or a bare error object is the model's
// failure; lines that are not SSE are dropped. At a clean end it returns
// io.EOF, with the last event if it lacked its blank line.
func nextEvent(br *bufio.Reader) (event, error) {
	var ev event
	for {
		line, err := readLine(br)
		if len(line) > 0 {
			switch kind, v := classify(line); kind {
			case lineError, lineBareJSON:
				return ev, &failover.StreamError{Reason: streamReason(v)}
			case lineBlank:
				ev.lines = append(ev.lines, line...)
				if line[len(line)-1] != '\n' {
					ev.lines = append(ev.lines, '\n') // a last blank line cut at EOF
				}
				if ev.data != nil || ev.done {
					return ev, nil
				}
			case lineField:
				ev.lines = append(ev.lines, line...)
				if bytes.HasPrefix(line, []byte("data:")) {
					v := bytes.TrimPrefix(bytes.TrimRight(line[5:], "\r\n"), []byte(" "))
					if string(v) == "[DONE]" {
						ev.done = true
					} else {
						if ev.data != nil {
							ev.data = append(ev.data, '\n')
						}
						ev.data = append(ev.data, v...)
					}
				}
			}
			if len(ev.lines) > maxFirstEvent {
				return ev, errors.New("stream event larger than 1 MiB")
			}
		}
		switch {
		case err == io.EOF:
			if ev.data != nil || ev.done {
				for k := trailingNewlines(ev.lines); k < 2; k++ {
					ev.lines = append(ev.lines, '\n') // the last event's missing end
				}
			}
			return ev, io.EOF
		case err != nil:
			return ev, fmt.Errorf("reading the stream: %w", err)
		}
	}
}

// trailingNewlines counts the line endings that close b (at most 2).
func trailingNewlines(b []byte) int {
	n := 0
	for i := len(b) - 1; i >= 0 && n < 2; i-- {
		switch b[i] {
		case '\n':
			n++
		case '\r':
		default:
			return n
		}
	}
	return n
}

// firstToken reads a stream up to the end of its first event that carries
// a token or a finish_reason, feeding reply. It returns the events held
// before it (role-only deltas, comments, keep-alives) and that event, to be
// sent once the model is committed. An error event, a stream that ends
// before any token, and junk in place of events are that model's failure.
// An event that is not a chunk at all (an upstream of another shape) counts
// as a token: its stream is passed on as it is.
func firstToken(br *bufio.Reader, reply *assemble.Assembler) (held, tok []byte, err error) {
	for {
		ev, err := nextEvent(br)
		if err != nil && err != io.EOF {
			return nil, nil, err
		}
		if ev.data != nil {
			token, aerr := reply.Add(ev.data)
			var ee *assemble.EventError
			switch {
			case errors.As(aerr, &ee):
				return nil, nil, &failover.StreamError{Reason: streamReason(ee.Body)}
			case aerr != nil, token:
				return held, ev.lines, nil
			}
		}
		if ev.done {
			return nil, nil, &failover.StreamError{Reason: "the stream ended before its first token"}
		}
		held = append(held, ev.lines...)
		if len(held) > maxFirstEvent {
			return nil, nil, errors.New("more than 1 MiB of stream before the first token")
		}
		if err == io.EOF {
			return nil, nil, &failover.StreamError{Reason: "the stream ended before its first token"}
		}
	}
}

// assembleReply reads a whole stream into reply and returns the assembled
// object. token is called at each event that carries a token (the attempt's
// timer becomes idle_timeout); false ends the read (a lost hedge). A stream that breaks, stalls or reports an
// error before its end is the model's failure; one that ends without
// "data: [DONE]" counts as whole only when every choice has its
// finish_reason.
func assembleReply(br *bufio.Reader, reply *assemble.Assembler, token func() bool) ([]byte, error) {
	tokens := 0
	for {
		ev, err := nextEvent(br)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if ev.done {
			return reply.JSON(), nil
		}
		if ev.data != nil {
			tok, aerr := reply.Add(ev.data)
			var ee *assemble.EventError
			switch {
			case errors.As(aerr, &ee):
				return nil, &failover.StreamError{Reason: streamReason(ee.Body)}
			case aerr != nil:
				return nil, &failover.StreamError{Reason: "the upstream sent something that is not a completion chunk: " + human.Truncate(string(ev.data), 80)}
			case tok:
				tokens++
				if !token() {
					return nil, failover.ErrHedgeLost
				}
			}
		}
		switch {
		case err == io.EOF && reply.Done():
			return reply.JSON(), nil
		case err == io.EOF && tokens == 0:
			return nil, &failover.StreamError{Reason: "the stream ended before its first token"}
		case err == io.EOF:
			return nil, &failover.StreamError{Reason: fmt.Sprintf("the reply was cut off after %d tokens", tokens)}
		}
	}
}

// readLine reads one whole line (pre-commit only, where lines are bounded
// by maxFirstEvent).
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return line, err
	}
	full := append([]byte(nil), line...)
	for err == bufio.ErrBufferFull && len(full) <= maxFirstEvent {
		line, err = br.ReadSlice('\n')
		full = append(full, line...)
	}
	if err == bufio.ErrBufferFull {
		err = errors.New("stream line longer than 1 MiB")
	}
	return full, err
}

// upstreamStreamError is a failure the upstream announced inside a stream
// that had already started.
type upstreamStreamError struct{ reason string }

func (e *upstreamStreamError) Error() string { return "the upstream reported: " + e.reason }

// relaySSE passes a committed stream on line by line and flushes at the end
// of every event, so each token reaches the client as soon as it arrives;
// nothing is buffered beyond the current line. Lines that are not SSE are
// dropped; an error line ends the relay with an error, and so does an end
// without "data: [DONE]". When the reply is tracked (resume_streams), each
// line is read whole, its data fed to c.reply once written, and a
// continuation's id is rewritten to the first stream's (ids).
func relaySSE(w io.Writer, rc *http.ResponseController, c *committed, touch func(), ids *idRewrite) error {
	write := func(b []byte) error {
		if ids != nil {
			b = ids.apply(b)
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("%w: %w", errClientWrite, err)
		}
		return nil
	}
	if err := write(c.pending); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errClientWrite, err)
	}
	br := c.br
	midLine, passing, sawDone := false, false, false
	for {
		var line []byte
		var err error
		if c.reply != nil {
			line, err = readLine(br)
		} else {
			line, err = br.ReadSlice('\n')
		}
		if len(line) > 0 && err != nil && err != bufio.ErrBufferFull && !midLine {
			// A last line without its line ending. After a clean end it
			// is complete (some servers omit the final newline); after a
			// failure it is a fragment, never passed on.
			if err != io.EOF {
				return fmt.Errorf("reading the stream: %w", err)
			}
			line = append(bytes.TrimRight(line, "\r"), '\n', '\n')
		}
		if len(line) > 0 {
			touch()
			var data []byte
			if !midLine {
				kind, v := classify(line)
				switch kind {
				case lineError, lineBareJSON:
					return &upstreamStreamError{streamReason(v)}
				case lineJunk:
					passing = false
				default:
					passing = true
					if bytes.HasPrefix(line, []byte("data:")) {
						data = bytes.TrimPrefix(bytes.TrimRight(line[5:], "\r\n"), []byte(" "))
						sawDone = sawDone || string(data) == "[DONE]"
					}
				}
			}
			if passing {
				if err := write(line); err != nil {
					return err
				}
				if !midLine && (line[0] == '\n' || line[0] == '\r') {
					if ferr := rc.Flush(); ferr != nil {
						return fmt.Errorf("%w: %w", errClientWrite, ferr)
					}
				}
				if c.reply != nil && len(data) > 0 && string(data) != "[DONE]" {
					_, _ = c.reply.Add(data)
				}
			}
			midLine = err == bufio.ErrBufferFull
		}
		switch {
		case err == nil, err == bufio.ErrBufferFull:
		case err == io.EOF:
			if len(line) > 0 && line[len(line)-1] != '\n' && passing {
				_, _ = w.Write([]byte("\n\n")) // the end of a long last line
			}
			if ferr := rc.Flush(); ferr != nil {
				return fmt.Errorf("%w: %w", errClientWrite, ferr)
			}
			if !sawDone {
				return errNoDone
			}
			return nil
		case midLine || (len(line) > 0 && line[len(line)-1] != '\n'):
			return fmt.Errorf("%w: reading the stream: %w", errMidLine, err)
		default:
			return fmt.Errorf("reading the stream: %w", err)
		}
	}
}

// idRewrite gives a continuation's events the first stream's id, so that
// the client sees one reply.
type idRewrite struct{ from, to []byte }

func newIDRewrite(from, to string) *idRewrite {
	if from == "" || from == to {
		return nil
	}
	return &idRewrite{from: append([]byte(`"id":`), payload.Quote(from)...), to: append([]byte(`"id":`), payload.Quote(to)...)}
}

func (r *idRewrite) apply(b []byte) []byte {
	if !bytes.Contains(b, r.from) {
		return b
	}
	return bytes.ReplaceAll(b, r.from, r.to)
}

// errMidLine marks a stream that broke after part of a line was passed on.
var errMidLine = errors.New("cut in the middle of a line")
