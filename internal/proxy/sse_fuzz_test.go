package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/assemble"

	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// sseSeeds are streams as Chutes, vLLM and broken miners send them.
var sseSeeds = []string{
	"data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
	"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n",
	": keep-alive\n\nevent: message\nid: 7\nretry: 100\ndata: {\"a\":1}\n\n",
	"{\"error\":\"Unhandled exception during response stream: CUDA out of memory\"}\n",
	"data: {\"error\":{\"message\":\"engine dead\",\"code\":500}}\n\n",
	"data: {\"id\":\"1\"}\n\ndata: {\"id\":\"2\"}\n\n{\"error\":\"Unhandled exception during response stream: boom\"}\n",
	"data: {\"id\":\"1\"}\n\ndata:{ \"error\" : {\"message\":\"late\"}}\n\n",
	"data: {\"id\":\"1\"}\n\n<html>502</html>\ndata: {\"id\":\"2\"}\n\n",
	"data: {\"id\":\"1\"}\n\ndata: {\"id\":\"2\",\"choices\":[{\"delta\":{\"content\":\"par",
	"data: {\"id\":\"1\"}",
	"\n\n\n",
	"junk\nmore junk\n",
	"data:\n\n",
	"data: [1,2]\n\n[\"bare array\"]\n",
	"data: x\r\r\ndata: {\"error\":1}\r\n",
}

// FuzzClassify: the kind of a line does not depend on its line ending, and
// each kind holds what its name says.
func FuzzClassify(f *testing.F) {
	for _, s := range sseSeeds {
		for _, l := range bytes.SplitAfter([]byte(s), []byte("\n")) {
			f.Add(l)
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		k, v := classify(line)
		trimmed := bytes.TrimRight(line, "\r\n")
		if (k == lineBlank) != (len(trimmed) == 0) {
			t.Fatalf("%q: kind %d", line, k)
		}
		for _, end := range []string{"", "\n", "\r\n", "\r\r\n"} {
			if k2, _ := classify(append(bytes.Clone(trimmed), end...)); k2 != k {
				t.Fatalf("%q: kind %d, with %q: %d", trimmed, k, end, k2)
			}
		}
		switch k {
		case lineError:
			if !bytes.HasPrefix(trimmed, []byte("data:")) || !isErrorObject(v) {
				t.Fatalf("%q: error line with value %q", line, v)
			}
			if r := streamReason(v); len(r) > 400 {
				t.Fatalf("reason of %d bytes", len(r))
			}
		case lineBareJSON:
			if len(v) == 0 || (v[0] != '{' && v[0] != '[') {
				t.Fatalf("%q: bare JSON %q", line, v)
			}
			_ = streamReason(v)
		case lineJunk:
			for _, p := range []string{":", "data:", "event:", "id:", "retry:", "{", "["} {
				if bytes.HasPrefix(trimmed, []byte(p)) {
					t.Fatalf("%q is SSE (%s) but judged junk", line, p)
				}
			}
		}
	})
}

// relayModel is what relaySSE must make of a stream after its commit: the
// rest is passed on line by line without junk until an error line; a last
// line without its ending is completed after a clean end, and an end
// without "data: [DONE]" is a failure.
func relayModel(rest []byte) (out []byte, failed bool) {
	lines := bytes.SplitAfter(rest, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	sawDone := false
	for _, l := range lines {
		switch k, _ := classify(l); k {
		case lineError, lineBareJSON:
			return out, true
		case lineJunk:
			continue
		}
		if l[len(l)-1] != '\n' {
			l = append(bytes.TrimRight(l, "\r"), '\n', '\n')
		}
		if d, ok := bytes.CutPrefix(bytes.TrimRight(l, "\r\n"), []byte("data:")); ok && string(bytes.TrimPrefix(d, []byte(" "))) == "[DONE]" {
			sawDone = true
		}
		out = append(out, l...)
	}
	return out, !sawDone
}

// firstAll runs firstToken over data with a read buffer of size, and says
// how many bytes of data it consumed.
func firstAll(data []byte, size int) (pending []byte, consumed int, br *bufio.Reader, err error) {
	rd := bytes.NewReader(data)
	br = bufio.NewReaderSize(rd, size)
	held, tok, err := firstToken(br, assemble.New(assemble.Chat))
	return append(held, tok...), len(data) - rd.Len() - br.Buffered(), br, err
}

// relayAll runs firstToken and relaySSE over data as the proxy does, with a
// read buffer of size.
func relayAll(data []byte, size int) (out, pending []byte, consumed int, firstErr, relayErr error) {
	pending, consumed, br, err := firstAll(data, size)
	if err != nil {
		return nil, nil, 0, err, nil
	}
	rec := httptest.NewRecorder()
	c := &committed{br: br, pending: pending}
	err = relaySSE(rec, http.NewResponseController(rec), c, func() {}, nil)
	return rec.Body.Bytes(), pending, consumed, nil, err
}

// FuzzFirstToken: what is held before committing is the same whatever the
// read buffer's size, never holds an error or junk line, and ends at an
// event boundary or the end of the stream.
func FuzzFirstToken(f *testing.F) {
	for _, s := range sseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got [2][]byte
		var errs [2]error
		for i, size := range []int{16, 64 << 10} {
			got[i], _, _, errs[i] = firstAll(data, size)
		}
		if !bytes.Equal(got[0], got[1]) || (errs[0] == nil) != (errs[1] == nil) {
			t.Fatalf("buffer sizes disagree: %q (%v) vs %q (%v)", got[0], errs[0], got[1], errs[1])
		}
		if errs[0] != nil {
			var se *failover.StreamError
			if !errors.As(errs[0], &se) && len(data) <= maxFirstEvent {
				t.Fatalf("not a StreamError: %v", errs[0])
			}
			return
		}
		lines := bytes.SplitAfter(got[0], []byte("\n"))
		for _, l := range lines {
			if len(l) == 0 {
				continue
			}
			if k, _ := classify(l); k == lineError || k == lineBareJSON || k == lineJunk {
				t.Fatalf("held line %q of kind %d", l, k)
			}
		}
		if !bytes.Contains(got[0], []byte("data:")) {
			t.Fatalf("no data line in %q", got[0])
		}
		if !bytes.HasSuffix(got[0], []byte("\n")) || len(bytes.TrimRight(lines[len(lines)-2], "\r\n")) > 0 {
			t.Fatalf("held %q does not end with a blank line", got[0])
		}
	})
}

// FuzzRelaySSE: what reaches the client is exactly the held events and
// relayModel's answer for the rest, and with a tiny read buffer (lines split
// across reads) nothing panics and no whole error line is ever passed on.
func FuzzRelaySSE(f *testing.F) {
	for _, s := range sseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, _, _, firstErr, _ := relayAll(data, 16)
		if firstErr == nil {
			for _, l := range bytes.SplitAfter(out, []byte("\n")) {
				if k, _ := classify(l); len(l) > 0 && l[len(l)-1] == '\n' && len(l) <= 16 && (k == lineError || k == lineBareJSON) {
					t.Fatalf("passed on the error line %q", l)
				}
			}
		}
		for _, l := range bytes.SplitAfter(data, []byte("\n")) {
			if len(l) >= 4096 {
				return // the model judges a line whole; the relay by its first 4 KiB
			}
		}
		out, pending, consumed, firstErr, relayErr := relayAll(data, 4096)
		if firstErr != nil {
			return
		}
		rest, failed := relayModel(data[consumed:])
		want := append(bytes.Clone(pending), rest...)
		switch {
		case failed != (relayErr != nil):
			t.Fatalf("relay error %v, model says failed=%v; out %q", relayErr, failed, out)
		case !bytes.Equal(out, want):
			t.Fatalf("relayed\n%q\nwant\n%q", out, want)
		}
		if relayErr != nil {
			var ue *upstreamStreamError
			if !errors.As(relayErr, &ue) && !errors.Is(relayErr, errNoDone) {
				t.Fatalf("relay error %v is neither the upstream's nor a missing [DONE]", relayErr)
			}
		}
	})
}
