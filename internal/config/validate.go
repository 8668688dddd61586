package config

import (
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

// Problems is every problem found in one Load, in a stable order: first
// what could not be read (values of the wrong type, unknown keys) in the
// order of the tables, then what is wrong with the values read.
type Problems []Problem

// Error returns one "FILE:KEY: problem" line per problem.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// finish joins the problems decoding found with those validation found,
// drops a validation problem about a key that failed to decode or lies
// inside or around one (its zero value would only repeat the complaint),
// blames each on whoever set the key (from), and names the [[models]] table
// a problem is in by its id, since counting tables is error-prone.
func finish(cfg *Config, found, checked Problems, from func(key string) string) Problems {
	inside := func(x, y string) bool { return strings.HasPrefix(x, y+".") || strings.HasPrefix(x, y+"[") }
	all := found
	for _, c := range checked {
		if !slices.ContainsFunc(found, func(f Problem) bool { return f.Key == c.Key || inside(f.Key, c.Key) || inside(c.Key, f.Key) }) {
			all = append(all, c)
		}
	}
	for i, p := range all {
		all[i].File = from(p.Key)
		var n int
		if _, err := fmt.Sscanf(p.Key, "models[%d]", &n); err != nil || n < 0 || n >= len(cfg.Models) {
			continue
		}
		if id := cfg.Models[n].ID; strings.TrimSpace(id) != "" && !strings.Contains(p.Msg, id) {
			all[i].Msg += fmt.Sprintf(" (in the [[models]] table with id %q)", id)
		}
	}
	return all
}

// checker collects the problems validate finds.
type checker struct{ probs Problems }

// add adds a problem once: two empty entries in one list are one problem.
func (c *checker) add(key, format string, args ...any) {
	if p := (Problem{Key: key, Msg: fmt.Sprintf(format, args...)}); !slices.Contains(c.probs, p) {
		c.probs = append(c.probs, p)
	}
}

// named reports whether s can name something: not empty (else it adds the
// problem empty) and without white space.
func (c *checker) named(key, s, empty string) bool {
	switch {
	case strings.TrimSpace(s) == "":
		c.add(key, "%s", empty)
	case strings.ContainsFunc(s, unicode.IsSpace):
		c.add(key, "%q has white space in it", s)
	default:
		return true
	}
	return false
}

// fields holds every number in v, the table at key prefix, to its field's
// check tag (see Config), and checks every key.
func (c *checker) fields(prefix string, v reflect.Value) {
	for _, f := range keys(v.Type()) {
		key, fv := strings.TrimPrefix(prefix+"."+keyName(f), "."), reflect.Indirect(v.FieldByIndex(f.Index))
		switch check := f.Tag.Get("check"); {
		case !fv.IsValid(): // an override the table leaves out
		case fv.Kind() == reflect.Struct:
			c.fields(key, fv)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			for i := range fv.Len() {
				c.fields(fmt.Sprintf("%s[%d]", key, i), fv.Index(i))
			}
		case fv.Type() == reflect.TypeFor[Secret]() && strings.ContainsFunc(fv.String(), IsKeyJunk):
			// What trimKey cannot fix: characters inside a key that no key
			// has, which the upstream would reject without saying why.
			c.add(key, "has white space, quotes or control characters inside it; copy the key again")
		case check != "":
			x, got := fv.Convert(reflect.TypeFor[float64]()).Float(), fmt.Sprint(fv.Interface())
			switch {
			case math.IsNaN(x) || math.IsInf(x, 0):
				c.add(key, "must be a finite number; got %s", got)
			case check == "positive" && x <= 0:
				c.add(key, "must be more than 0 (it has no \"off\"); got %s", got)
			case check == "min1" && x < 1:
				c.add(key, "must be at least 1; got %s", got)
			case x < 0:
				c.add(key, "must not be negative; got %s", got)
			}
		}
	}
}

// validate checks what decoding cannot: ranges, addresses, URLs, and how
// the [[models]] tables refer to each other. It reports every problem, not
// the first.
func validate(cfg *Config) Problems {
	c := &checker{}
	c.fields("", reflect.ValueOf(cfg).Elem())

	if msg := hostPort(cfg.Listen, true); msg != "" {
		c.add("listen", "%s; use e.g. \"127.0.0.1:8787\"", msg)
	} else if !IsLoopback(cfg.Listen) && cfg.ProxyKey == "" {
		c.add("listen", "%q is reachable from other machines, so proxy_key must be set (clients then send \"Authorization: Bearer <proxy_key>\"); or listen on 127.0.0.1", cfg.Listen)
	}
	if len(cfg.AllowedHosts) > 0 && cfg.ProxyKey == "" && IsLoopback(cfg.Listen) {
		// A tunnel's name makes a loopback proxy reachable from anywhere.
		c.add("allowed_hosts", "names other machines can reach the proxy through (a tunnel), so proxy_key must be set (clients then send \"Authorization: Bearer <proxy_key>\")")
	}
	for _, h := range cfg.AllowedHosts {
		if c.named("allowed_hosts", h, "an entry is empty") && strings.Contains(h, "/") {
			c.add("allowed_hosts", "%q is not a host name; write just the host, such as \"my-tunnel.example.com\"", h)
		}
	}
	for _, o := range cfg.Compat.CORSOrigins {
		// Browsers send an origin as exactly scheme://host[:port]: anything
		// more, even a trailing /, never matches.
		switch u, err := url.Parse(o); {
		case err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "":
			c.add("compat.cors_origins", "%q is not an origin; write scheme://host[:port], e.g. \"https://janitorai.com\"", o)
		case u.Scheme+"://"+u.Host != o:
			c.add("compat.cors_origins", "%q is not an origin, which is only scheme://host[:port] with no path, not even /; write %q", o, u.Scheme+"://"+u.Host)
		}
	}

	up := cfg.Upstream
	if msg := URLProblem(up.BaseURL); msg != "" {
		c.add("upstream.base_url", "%s; the default is \"https://llm.chutes.ai/v1\"", msg)
	} else if u, _ := url.Parse(up.BaseURL); strings.HasSuffix(u.Path, "/completions") {
		c.add("upstream.base_url", "%q is an endpoint, not the API's base; drop the endpoint, e.g. \"https://llm.chutes.ai/v1\"", up.BaseURL)
	}
	if msg := hostPort(up.Resolver, false); up.Resolver != "" && msg != "" {
		c.add("upstream.resolver", "%s; use e.g. \"1.1.1.1:53\", or \"\" for the system's resolver", msg)
	}
	if msg := URLProblem(up.AccountURL); up.AccountURL != "" && msg != "" {
		c.add("upstream.account_url", "%s; use \"https://api.chutes.ai\", or \"\" to turn the account checks off", msg)
	}

	// A limiter with burst 0 admits nothing. A [[models]] table that
	// overrides neither rate nor burst has the [rate_limit] check's answer.
	rl := cfg.RateLimit
	burst0 := func(key string, rate float64, burst int, note string) {
		if rate > 0 && !math.IsInf(rate, 1) && burst == 0 {
			c.add(key, "must be at least 1 when requests_per_minute is above 0 (a limiter with burst 0 admits nothing); got 0%s", note)
		}
	}
	burst0("rate_limit.burst", rl.RequestsPerMinute, rl.Burst, "")
	for i, m := range cfg.Models {
		switch rate, key := or(m.RequestsPerMinute, rl.RequestsPerMinute), fmt.Sprintf("models[%d].burst", i); {
		case m.Burst != nil:
			burst0(key, rate, *m.Burst, "")
		case m.RequestsPerMinute != nil:
			burst0(key, rate, rl.Burst, " (from rate_limit.burst)")
		}
	}
	c.providers(cfg)
	c.models(cfg)
	return c.probs
}

// models checks the [[models]] tables' ids, aliases and fallbacks.
func (c *checker) models(cfg *Config) {
	ids := map[string]int{}     // id → first table with it
	aliases := map[string]int{} // alias → its table
	for i, m := range cfg.Models {
		key := fmt.Sprintf("models[%d].id", i)
		c.modelRef(cfg, key, m.ID)
		switch j, dup := ids[m.ID]; {
		case !c.named(key, m.ID, "missing or empty; every [[models]] table needs id = \"org/model\""):
		case dup:
			c.add(key, "%q is also the id of models[%d]; merge the two tables", m.ID, j)
		default:
			ids[m.ID] = i
		}
	}
	for i, m := range cfg.Models {
		key := fmt.Sprintf("models[%d].aliases", i)
		for _, a := range m.Aliases {
			j, isID := ids[a]
			k, dup := aliases[a]
			switch {
			case !c.named(key, a, "an alias is empty"):
			case isID && j == i:
				// An alias equal to the table's own id changes nothing.
			case isID:
				c.add(key, "%q is the id of models[%d]; an alias cannot name another model", a, j)
			case dup && k == i:
				c.add(key, "%q is listed twice", a)
			case dup:
				c.add(key, "%q is already an alias of models[%d] (%s); an alias names one model", a, k, cfg.Models[k].ID)
			default:
				aliases[a] = i
			}
		}
	}
	known := maps.Clone(ids) // every name a fallback may use
	maps.Copy(known, aliases)
	names := slices.Sorted(maps.Keys(known))
	for i, m := range cfg.Models {
		key := fmt.Sprintf("models[%d].fallbacks", i)
		for _, f := range m.Fallbacks {
			c.modelRef(cfg, key, f)
			switch j, ok := known[f]; {
			case !c.named(key, f, "a fallback is empty"):
			case ok && j == i:
				// Harmless, since a model always comes first in its own chain,
				// but it reads as "retry this model", which it does not do.
				c.add(key, "%q is this model itself (%s), which is always tried first; remove it, or name another model", f, m.ID)
			case ok, strings.Contains(f, "/"), strings.Contains(f, ":"):
				// A chain is one level deep (a fallback's own fallbacks are
				// not followed), so two models may name each other; and any
				// org/model id may be a fallback without a table of its own.
			case closest(f, names) != "":
				c.add(key, "%q is no configured alias or id, nor an org/model id; did you mean %q?", f, closest(f, names))
			default:
				c.add(key, "%q is no configured alias or id, nor an org/model id; use the full org/model id, or add it to a model's aliases", f)
			}
		}
	}
}

// hostPort checks "host:port"; an empty host is allowed only where it
// means every interface. It returns what is wrong, or "".
func hostPort(s string, emptyHost bool) string {
	host, port, err := net.SplitHostPort(s)
	n, nerr := strconv.Atoi(port)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not host:port", s)
	case host == "" && !emptyHost:
		return fmt.Sprintf("%q has no host", s)
	case nerr != nil || n < 0 || n > 65535 || (n == 0 && !emptyHost):
		return fmt.Sprintf("%q has no valid port number", s)
	}
	return ""
}

// URLProblem checks an http(s) URL with a host, as base_url and account_url
// must be; it returns what is wrong, or "".
func URLProblem(s string) string {
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
