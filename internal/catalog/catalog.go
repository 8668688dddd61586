// Package catalog keeps the upstream's model list (GET {base_url}/models):
// what /v1/models serves, what "did you mean" suggests from, and each
// model's context window. The health probe refreshes it in the background;
// the proxy fetches it on demand when it is empty or stale.
//
// It also keeps each other provider's list apart from Chutes', so that
// Lookup("openrouter:deepseek/deepseek-r1:free") knows that model's context
// window while IDs, Listed and Entries stay Chutes' alone.
package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Entry is one model of the upstream's list. Raw is the entry as the
// upstream sent it, so /v1/models passes every field (pricing, quantization,
// ...) through unchanged.
type Entry struct {
	ID            string
	ContextLength int
	Raw           json.RawMessage
}

// Catalog is safe for concurrent use.
type Catalog struct {
	mu      sync.RWMutex
	entries []Entry
	index   map[string]int
	fetched time.Time
	lastErr error
	// providers are the other providers' lists by provider name, each
	// indexed by the provider's own model id (without "NAME:").
	providers map[string]map[string]Entry

	fetchMu sync.Mutex // one fetch at a time
}

// New returns an empty catalog.
func New() *Catalog { return &Catalog{} }

// Entries returns the list and when it was fetched (zero if never).
func (c *Catalog) Entries() ([]Entry, time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.entries, c.fetched
}

// IDs returns the model ids, nil when the list was never fetched.
func (c *Catalog) IDs() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.entries == nil {
		return nil
	}
	ids := make([]string, len(c.entries))
	for i, e := range c.entries {
		ids[i] = e.ID
	}
	return ids
}

// Lookup returns the entry for id: a Chutes id, "chutes:MODEL", or
// "NAME:MODEL" of a provider whose list SetProvider stored (its Entry.ID is
// then the provider's own id, MODEL).
func (c *Catalog) Lookup(id string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if i, ok := c.index[id]; ok {
		return c.entries[i], true
	}
	name, model, ok := strings.Cut(id, ":")
	if !ok || strings.Contains(name, "/") {
		return Entry{}, false
	}
	if name == config.Chutes {
		i, ok := c.index[model]
		if !ok {
			return Entry{}, false
		}
		return c.entries[i], true
	}
	e, ok := c.providers[name][model]
	return e, ok
}

// ProviderListed reports whether provider name lists model (its own id,
// without "NAME:"); known is false when no list of it is stored.
func (c *Catalog) ProviderListed(name, model string) (listed, known bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	list, known := c.providers[name]
	_, listed = list[model]
	return listed, known
}

// SetProvider replaces provider name's list; nil entries forget it (the
// provider left the config, or its base_url changed).
func (c *Catalog) SetProvider(name string, entries []Entry) {
	var list map[string]Entry
	if entries != nil {
		list = make(map[string]Entry, len(entries))
		for _, e := range entries {
			list[e.ID] = e
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if list == nil {
		delete(c.providers, name)
		return
	}
	if c.providers == nil {
		c.providers = map[string]map[string]Entry{}
	}
	c.providers[name] = list
}

// Listed reports whether id is in the list; known is false when there is
// no list to ask.
func (c *Catalog) Listed(id string) (listed, known bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.entries == nil {
		return false, false
	}
	_, ok := c.index[id]
	return ok, true
}

// Age is how old the list is; a large value when never fetched.
func (c *Catalog) Age(now time.Time) time.Duration {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fetched.IsZero() {
		return 1<<63 - 1
	}
	return now.Sub(c.fetched)
}

// LastError is the last fetch's error, nil after a success.
func (c *Catalog) LastError() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.lastErr
}

// Set replaces the list.
func (c *Catalog) Set(entries []Entry, at time.Time) {
	idx := make(map[string]int, len(entries))
	for i, e := range entries {
		idx[e.ID] = i
	}
	c.mu.Lock()
	c.entries, c.index, c.fetched, c.lastErr = entries, idx, at, nil
	c.mu.Unlock()
}

func (c *Catalog) fail(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// Parse reads an OpenAI-style model list, leniently: entries without an id
// are dropped, context_length or max_model_len gives the window.
func Parse(body []byte) ([]Entry, error) {
	var list struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("model list is not JSON: %w", err)
	}
	if list.Data == nil {
		return nil, fmt.Errorf("model list has no \"data\" array")
	}
	out := make([]Entry, 0, len(list.Data))
	for _, raw := range list.Data {
		var e struct {
			ID            string  `json:"id"`
			ContextLength float64 `json:"context_length"`
			MaxModelLen   float64 `json:"max_model_len"`
		}
		if json.Unmarshal(raw, &e) != nil || e.ID == "" {
			continue
		}
		n := int(e.ContextLength)
		if n == 0 {
			n = int(e.MaxModelLen)
		}
		out = append(out, Entry{ID: e.ID, ContextLength: n, Raw: raw})
	}
	return out, nil
}

// Fetch gets {base}/models with client and stores the list. key may be ""
// (Chutes serves the list without one). Concurrent calls share one fetch.
func (c *Catalog) Fetch(ctx context.Context, client *http.Client, base, key string) error {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	start := time.Now()
	if _, at := c.Entries(); at.After(start.Add(-time.Second)) {
		return nil // another caller just fetched it
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/models", nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		c.fail(err)
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		c.fail(err)
		return fmt.Errorf("reading the model list: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("model list: upstream answered %d", resp.StatusCode)
		c.fail(err)
		return err
	}
	entries, err := Parse(body)
	if err != nil {
		c.fail(err)
		return err
	}
	c.Set(entries, time.Now())
	return nil
}
