package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/chutes-proxy/chutes-proxy/internal/failover"
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

// firstEvent reads a stream up to the end of its first data event and
// returns those bytes to send once the model is committed. An error event or
// a bare error line first is that model's failure, as is a stream that ends
// before any event.
func firstEvent(br *bufio.Reader) ([]byte, error) {
	var pending []byte
	sawData := false
	for {
		line, err := readLine(br)
		if len(line) > 0 {
			switch kind, v := classify(line); kind {
			case lineError, lineBareJSON:
				return nil, &failover.StreamError{Reason: streamReason(v)}
			case lineBlank:
				pending = append(pending, line...)
				if sawData {
					return pending, nil
				}
			case lineField:
				if bytes.HasPrefix(line, []byte("data:")) {
					sawData = true
				}
				pending = append(pending, line...)
			}
			if len(pending) > maxFirstEvent {
				return nil, errors.New("first stream event larger than 1 MiB")
			}
		}
		switch {
		case err == io.EOF && sawData:
			return pending, nil
		case err == io.EOF:
			return nil, &failover.StreamError{Reason: "the stream ended before its first event"}
		case err != nil:
			return nil, fmt.Errorf("reading the first event: %w", err)
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
// dropped; an error line ends the relay with an error.
func relaySSE(w io.Writer, rc *http.ResponseController, c *committed, touch func()) error {
	if _, err := w.Write(c.pending); err != nil {
		return fmt.Errorf("%w: %w", errClientWrite, err)
	}
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errClientWrite, err)
	}
	br := c.br
	midLine, passing := false, false
	for {
		line, err := br.ReadSlice('\n')
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
			if !midLine {
				kind, v := classify(line)
				switch kind {
				case lineError, lineBareJSON:
					return &upstreamStreamError{streamReason(v)}
				case lineJunk:
					passing = false
				default:
					passing = true
				}
			}
			if passing {
				if _, werr := w.Write(line); werr != nil {
					return fmt.Errorf("%w: %w", errClientWrite, werr)
				}
				if !midLine && (line[0] == '\n' || line[0] == '\r') {
					if ferr := rc.Flush(); ferr != nil {
						return fmt.Errorf("%w: %w", errClientWrite, ferr)
					}
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
			return nil
		case midLine || (len(line) > 0 && line[len(line)-1] != '\n'):
			return fmt.Errorf("%w: reading the stream: %w", errMidLine, err)
		default:
			return fmt.Errorf("reading the stream: %w", err)
		}
	}
}

// errMidLine marks a stream that broke after part of a line was passed on.
var errMidLine = errors.New("cut in the middle of a line")
