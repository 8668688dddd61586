package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// Model list freshness: a list younger than modelsFresh is served as is; an
// older one is served at once and refreshed in the background; with no list
// at all the proxy waits up to modelsWait for one, then answers with the
// configured models so that an app's model picker fills even offline.
const (
	modelsFresh = time.Minute
	modelsWait  = 3 * time.Second
)

// models serves GET /v1/models: the upstream's list plus one entry per
// alias.
func (s *Server) models(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo) {
	key, _ := s.upstreamKey(st, r)
	age := s.catalog.Age(time.Now())
	switch {
	case age == 1<<63-1:
		ctx, cancel := context.WithTimeout(r.Context(), modelsWait)
		_ = s.catalog.Fetch(ctx, st.client, st.base, key)
		cancel()
	case age > modelsFresh:
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = s.catalog.Fetch(ctx, st.client, st.base, key)
		}()
	}
	entries, _ := s.catalog.Entries()
	data := make([]json.RawMessage, 0, len(entries)+8)
	seen := map[string]bool{}
	for _, e := range entries {
		data = append(data, e.Raw)
		seen[e.ID] = true
	}
	now := time.Now().Unix()
	// Configured models the upstream did not list (or no list at all),
	// and every other provider's model of the config as NAME:MODEL, so that
	// an app's model picker offers them.
	for _, m := range st.cfg.Models {
		for _, id := range append([]string{m.ID}, m.Fallbacks...) {
			p, _ := st.cfg.Split(id)
			if seen[id] || (id != m.ID && p == config.Chutes) {
				continue
			}
			seen[id] = true
			data = append(data, modelEntry(id, "", now))
		}
	}
	aliases := s.router.Aliases()
	names := make([]string, 0, len(aliases))
	for a := range aliases {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		if !seen[a] {
			data = append(data, modelEntry(a, aliases[a], now))
		}
	}
	b, _ := json.Marshal(struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}{"list", data})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func modelEntry(id, aliasFor string, created int64) json.RawMessage {
	owner := "chutes-proxy"
	if p, _, ok := strings.Cut(id, ":"); ok && !strings.Contains(p, "/") {
		owner = p // a provider's NAME:MODEL
	}
	e := map[string]any{"id": id, "object": "model", "created": created, "owned_by": owner}
	if aliasFor != "" {
		e["alias_for"] = aliasFor
		e["root"] = aliasFor
	}
	b, _ := json.Marshal(e)
	return b
}

// passthrough forwards any other /v1 path as is, with no failover: the
// body streams through unread.
func (s *Server) passthrough(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo, path string) {
	key, fromClient := s.upstreamKey(st, r)
	ctx, cancel := context.WithTimeout(r.Context(), st.cfg.Upstream.RequestTimeout.D())
	defer cancel()
	var body io.Reader = r.Body
	if r.ContentLength == 0 {
		body = http.NoBody
	}
	// path is decoded: escape it again, so that a "%3F" in it stays part of
	// the path instead of starting a query.
	target := upstreamURL(st.base, (&url.URL{Path: path}).EscapedPath(), r.URL)
	req, err := http.NewRequestWithContext(ctx, r.Method, target, body)
	if err != nil {
		s.writeError(w, r, st, info, diagnose.UpstreamUnreachable(st.base, err.Error()))
		return
	}
	req.ContentLength = r.ContentLength
	req.Header = upstreamHeader(r.Header, key)
	resp, err := st.transport.RoundTrip(req)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		s.writeError(w, r, st, info, diagnose.UpstreamUnreachable(st.base, failover.Describe(err)))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		ue := &failover.UpstreamError{Status: resp.StatusCode, Body: b}
		s.writeError(w, r, st, info, diagnose.InvalidKey(ue.Reason(), s.diagEnv(st, key, fromClient)))
		return
	}
	copyResponseHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 16<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
	}
}
