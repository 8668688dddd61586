package config

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Problem is one thing wrong with the configuration, located precisely
// enough to fix without reading any code.
type Problem struct {
	// File is where the bad value came from: the file's path,
	// "(embedded proxy.toml)", or "env CHUTES_API_KEY" / "flag --listen" when
	// that set it.
	File string
	// Key is the TOML path, such as "upstream.connect_timeout" or
	// "models[2].aliases" ([[models]] tables count from 0). A TOML syntax
	// error has "LINE:COLUMN" (or "LINE" for a key defined twice) instead,
	// as there is no key yet; "" means the whole file.
	Key string
	// Msg says what is wrong and, where it can, how to fix it.
	Msg string
}

// Error returns "FILE:KEY: problem".
func (p Problem) Error() string {
	if p.Key == "" {
		return p.File + ": " + p.Msg
	}
	return p.File + ":" + p.Key + ": " + p.Msg
}

// Problems is every problem found in one Load, in the order of the keys in
// proxy.toml (then by key), so that the same file always gives the same
// lines.
type Problems []Problem

// Error returns one "FILE:KEY: problem" line per problem.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// merge joins the decode problems (found: wrong types, unknown keys) with
// the validation problems (checked), drops a validation problem about a key
// that already failed to decode (its zero value would only repeat the
// complaint), removes duplicates, and sorts.
func merge(found, checked Problems) Problems {
	all := slices.Clone(found)
	for _, c := range checked {
		if !slices.ContainsFunc(found, func(f Problem) bool { return related(f.Key, c.Key) }) {
			all = append(all, c)
		}
	}
	slices.SortStableFunc(all, compareProblems)
	return slices.Compact(all)
}

// related reports whether a and b are the same key or one lies inside the
// other.
func related(a, b string) bool {
	inside := func(x, y string) bool {
		return strings.HasPrefix(x, y) && len(x) > len(y) && (x[len(y)] == '.' || x[len(y)] == '[')
	}
	return a == b || inside(a, b) || inside(b, a)
}

func compareProblems(a, b Problem) int {
	return cmp.Or(slices.Compare(keyRank(a.Key), keyRank(b.Key)),
		cmp.Compare(a.Key, b.Key), cmp.Compare(a.File, b.File), cmp.Compare(a.Msg, b.Msg))
}

// keyRank orders keys as proxy.toml does: by the position of each field in
// Config, whose fields follow the file, and by index inside arrays. Keys
// Config does not know sort after the known ones at their level.
func keyRank(key string) []int {
	var rank []int
	t := reflect.TypeFor[Config]()
	for _, s := range strings.FieldsFunc(key, func(r rune) bool { return r == '.' || r == '[' || r == ']' }) {
		if n, err := strconv.Atoi(s); err == nil {
			rank = append(rank, n) // an index
			continue
		}
		i := -1
		if t.Kind() == reflect.Struct {
			i = slices.IndexFunc(keys(t), func(f reflect.StructField) bool { return keyName(f) == s })
		}
		if i < 0 {
			return append(rank, math.MaxInt32)
		}
		rank = append(rank, i)
		if t = keys(t)[i].Type; t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	return rank
}

// withModelIDs names the [[models]] table a problem is in, by its id, since
// counting tables is error-prone.
func (ps Problems) withModelIDs(cfg *Config) Problems {
	for i := range ps {
		var n int
		if _, err := fmt.Sscanf(ps[i].Key, "models[%d]", &n); err != nil || n < 0 || n >= len(cfg.Models) {
			continue
		}
		if id := cfg.Models[n].ID; strings.TrimSpace(id) != "" && !strings.Contains(ps[i].Msg, id) {
			ps[i].Msg += fmt.Sprintf(" (in the [[models]] table with id %q)", id)
		}
	}
	return ps
}

// checker collects the problems validate finds.
type checker struct {
	from  func(key string) string
	probs Problems
}

func (c *checker) add(key, format string, args ...any) {
	c.probs = append(c.probs, Problem{File: c.from(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) notNegative(key string, n int) {
	if n < 0 {
		c.add(key, "must not be negative; got %d", n)
	}
}

func (c *checker) atLeastOne(key string, n int) {
	if n < 1 {
		c.add(key, "must be at least 1; got %d", n)
	}
}

func (c *checker) duration(key string, d Duration) {
	if d < 0 {
		c.add(key, "must not be negative; got %s", d.D())
	}
}

// positive checks a time-out or wait that has no "off": 0 would fail every
// request at once.
func (c *checker) positive(key string, d Duration) {
	if d <= 0 {
		c.add(key, "must be more than 0 (it has no \"off\"); got %s", d.D())
	}
}

// rate checks a requests_per_minute; it reports whether the value is
// usable.
func (c *checker) rate(key string, r float64) bool {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		c.add(key, "must be a finite number; got %v", r)
	case r < 0:
		c.add(key, "must not be negative (0 means unlimited); got %v", r)
	default:
		return true
	}
	return false
}

// validate checks what decoding cannot: ranges, addresses, URLs, and how
// the [[models]] tables refer to each other. It reports every problem, not
// the first.
func validate(cfg *Config, from func(string) string) Problems {
	c := &checker{from: from}

	if msg := hostPort(cfg.Listen, true); msg != "" {
		c.add("listen", "%s; use e.g. \"127.0.0.1:8787\"", msg)
	} else if !IsLoopback(cfg.Listen) && cfg.ProxyKey == "" {
		c.add("listen", "%q is reachable from other machines, so proxy_key must be set (clients then send \"Authorization: Bearer <proxy_key>\"); or listen on 127.0.0.1", cfg.Listen)
	}
	if len(cfg.AllowedHosts) > 0 && cfg.ProxyKey == "" && IsLoopback(cfg.Listen) {
		// A tunnel's name makes a loopback proxy reachable from anywhere.
		c.add("allowed_hosts", "names other machines can reach the proxy through (a tunnel), so proxy_key must be set (clients then send \"Authorization: Bearer <proxy_key>\")")
	}
	c.key("proxy_key", cfg.ProxyKey)
	c.atLeastOne("max_body_mb", cfg.MaxBodyMB)
	for _, h := range cfg.AllowedHosts {
		switch {
		case strings.TrimSpace(h) == "":
			c.add("allowed_hosts", "an entry is empty")
		case strings.Contains(h, "/"):
			c.add("allowed_hosts", "%q is not a host name; write just the host, such as \"my-tunnel.example.com\"", h)
		case strings.ContainsFunc(h, unicode.IsSpace):
			c.add("allowed_hosts", "%q has white space in it", h)
		}
	}

	for _, o := range cfg.Compat.CORSOrigins {
		if msg := corsOrigin(o); msg != "" {
			c.add("compat.cors_origins", "%s", msg)
		}
	}

	up := cfg.Upstream
	if msg := httpURL(up.BaseURL); msg != "" {
		c.add("upstream.base_url", "%s; the default is \"https://llm.chutes.ai/v1\"", msg)
	} else if u, _ := url.Parse(up.BaseURL); strings.HasSuffix(u.Path, "/chat/completions") || strings.HasSuffix(u.Path, "/completions") {
		c.add("upstream.base_url", "%q is an endpoint, not the API's base; drop the endpoint, e.g. \"https://llm.chutes.ai/v1\"", up.BaseURL)
	}
	c.key("upstream.api_key", up.APIKey)
	c.positive("upstream.connect_timeout", up.ConnectTimeout)
	c.positive("upstream.first_byte_timeout", up.FirstByteTimeout)
	c.positive("upstream.idle_timeout", up.IdleTimeout)
	c.positive("upstream.request_timeout", up.RequestTimeout)
	if up.Resolver != "" {
		if msg := hostPort(up.Resolver, false); msg != "" {
			c.add("upstream.resolver", "%s; use e.g. \"1.1.1.1:53\", or \"\" for the system's resolver", msg)
		}
	}
	if up.AccountURL != "" {
		if msg := httpURL(up.AccountURL); msg != "" {
			c.add("upstream.account_url", "%s; use \"https://api.chutes.ai\", or \"\" to turn the account checks off", msg)
		}
	}

	c.atLeastOne("failover.max_attempts", cfg.Failover.MaxAttempts)
	c.atLeastOne("breaker.failures", cfg.Breaker.Failures)
	c.positive("breaker.cooldown", cfg.Breaker.Cooldown)

	rl := cfg.RateLimit
	rateOK := c.rate("rate_limit.requests_per_minute", rl.RequestsPerMinute)
	c.notNegative("rate_limit.burst", rl.Burst)
	if rateOK && rl.RequestsPerMinute > 0 && rl.Burst == 0 {
		c.add("rate_limit.burst", "must be at least 1 when requests_per_minute is above 0 (a limiter with burst 0 admits nothing); got 0")
	}
	c.duration("rate_limit.max_wait", rl.MaxWait)
	c.notNegative("quota.daily_requests", cfg.Quota.DailyRequests)
	c.duration("health.probe_interval", cfg.Health.ProbeInterval)

	c.models(cfg)
	return c.probs
}

// key checks a key for what trimming cannot fix: characters inside it that
// no key has, which the upstream would reject without saying why.
func (c *checker) key(name string, s Secret) {
	if strings.ContainsFunc(s.Reveal(), isKeyJunk) {
		c.add(name, "has white space, quotes or control characters inside it; copy the key again")
	}
}

// models checks the [[models]] tables: ids, aliases, fallbacks and limits.
func (c *checker) models(cfg *Config) {
	ids := map[string]int{}     // id → first table with it
	aliases := map[string]int{} // alias → its table
	for i, m := range cfg.Models {
		key := fmt.Sprintf("models[%d].id", i)
		switch {
		case strings.TrimSpace(m.ID) == "":
			c.add(key, "missing or empty; every [[models]] table needs id = \"org/model\"")
		case strings.ContainsFunc(m.ID, unicode.IsSpace):
			c.add(key, "%q has white space in it", m.ID)
		default:
			if j, dup := ids[m.ID]; dup {
				c.add(key, "%q is also the id of models[%d]; merge the two tables", m.ID, j)
			} else {
				ids[m.ID] = i
			}
		}
	}
	for i, m := range cfg.Models {
		key := fmt.Sprintf("models[%d].aliases", i)
		for _, a := range m.Aliases {
			switch j, isID := ids[a]; {
			case strings.TrimSpace(a) == "":
				c.add(key, "an alias is empty")
			case strings.ContainsFunc(a, unicode.IsSpace):
				c.add(key, "%q has white space in it", a)
			case isID && j != i:
				c.add(key, "%q is the id of models[%d]; an alias cannot name another model", a, j)
			case isID:
				// An alias equal to the table's own id changes nothing.
			default:
				if j, dup := aliases[a]; dup && j == i {
					c.add(key, "%q is listed twice", a)
				} else if dup {
					c.add(key, "%q is already an alias of models[%d] (%s); an alias names one model", a, j, cfg.Models[j].ID)
				} else {
					aliases[a] = i
				}
			}
		}
	}
	known := maps.Clone(ids) // every name a fallback may use
	maps.Copy(known, aliases)
	names := slices.Sorted(maps.Keys(known))

	for i, m := range cfg.Models {
		key := fmt.Sprintf("models[%d].fallbacks", i)
		for _, f := range m.Fallbacks {
			switch j, ok := known[f]; {
			case strings.TrimSpace(f) == "":
				c.add(key, "a fallback is empty")
			case strings.ContainsFunc(f, unicode.IsSpace):
				c.add(key, "%q has white space in it", f)
			case ok && j == i:
				// Harmless, since a model always comes first in its own chain,
				// but it reads as "retry this model", which it does not do.
				c.add(key, "%q is this model itself (%s), which is always tried first; remove it, or name another model", f, m.ID)
			case ok:
				// Chains are one level deep (a fallback's own fallbacks are not
				// followed), so two models may name each other.
			case strings.Contains(f, "/"):
				// Any org/model id may be a fallback without a table of its own.
			default:
				msg := fmt.Sprintf("%q is no configured alias or id, nor an org/model id", f)
				if s := closest(f, names); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				} else {
					msg += "; use the full org/model id, or add it to a model's aliases"
				}
				c.add(key, "%s", msg)
			}
		}
	}
	for i, m := range cfg.Models {
		pre := fmt.Sprintf("models[%d].", i)
		rate, rateOK := cfg.RateLimit.RequestsPerMinute, true
		if m.RequestsPerMinute != nil {
			rate = *m.RequestsPerMinute
			rateOK = c.rate(pre+"requests_per_minute", rate)
		}
		burst := cfg.RateLimit.Burst
		if m.Burst != nil {
			burst = *m.Burst
			c.notNegative(pre+"burst", burst)
		}
		if m.Failures != nil {
			c.atLeastOne(pre+"failures", *m.Failures)
		}
		if m.Cooldown != nil {
			c.positive(pre+"cooldown", *m.Cooldown)
		}
		// Without either override the [rate_limit] check has spoken.
		if rateOK && rate > 0 && burst == 0 && (m.Burst != nil || m.RequestsPerMinute != nil) {
			from := ""
			if m.Burst == nil {
				from = " (from rate_limit.burst)"
			}
			c.add(pre+"burst", "must be at least 1 when requests_per_minute is above 0 (a limiter with burst 0 admits nothing); got 0%s", from)
		}
	}
}

// hostPort checks "host:port"; an empty host is allowed only where it
// means every interface. It returns what is wrong, or "".
func hostPort(s string, emptyHost bool) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", s)
	}
	if host == "" && !emptyHost {
		return fmt.Sprintf("%q has no host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !emptyHost) {
		return fmt.Sprintf("%q has no valid port number", s)
	}
	return ""
}

// httpURL checks an http(s) URL with a host; it returns what is wrong, or
// "".
func httpURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("%q is not an http:// or https:// URL", s)
	case u.Host == "":
		return fmt.Sprintf("%q has no host", s)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Sprintf("%q must not have a query, fragment or user name", s)
	}
	return ""
}

// corsOrigin checks a CORS origin, which browsers send as exactly
// scheme://host[:port]: anything more never matches.
func corsOrigin(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return fmt.Sprintf("%q is not an origin; write scheme://host[:port], e.g. \"https://janitorai.com\"", s)
	case u.Path == "/":
		return fmt.Sprintf("%q has a trailing /, which a browser's Origin never has; write %q", s, strings.TrimSuffix(s, "/"))
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#"):
		return fmt.Sprintf("%q is not an origin, which is only scheme://host[:port]; write %q", s, u.Scheme+"://"+u.Host)
	}
	return ""
}
