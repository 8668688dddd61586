package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/v2"
	"github.com/pelletier/go-toml/v2"

	chutesproxy "github.com/chutes-proxy/chutes-proxy"
)

// Environment variables Load reads (through Options.Getenv). An empty value
// does not override.
const (
	// EnvConfig names the config file when --config is not given.
	EnvConfig = "CHUTES_PROXY_CONFIG"
	// EnvAPIKey sets upstream.api_key.
	EnvAPIKey = "CHUTES_API_KEY"
	// EnvListen sets listen.
	EnvListen = "CHUTES_PROXY_LISTEN"
	// EnvUpstream sets upstream.base_url.
	EnvUpstream = "CHUTES_PROXY_UPSTREAM"
)

// embeddedName is how messages name the defaults compiled into the binary.
const embeddedName = "(embedded proxy.toml)"

// Options says where Load looks and what the command line set. The zero
// value reads ./proxy.toml (or the embedded defaults) and the process
// environment.
type Options struct {
	// File is the --config flag; "" means not given.
	File string
	// Listen is the --listen flag; "" means not given.
	Listen string
	// Getenv reads the environment; nil means os.Getenv. Tests pass their own
	// so that they never depend on the real environment.
	Getenv func(string) string
	// Dir is where ./proxy.toml is looked for, and what a relative File or
	// $CHUTES_PROXY_CONFIG is relative to; "" means the current directory.
	Dir string
}

// Load finds the config in the contract's order — Options.File,
// $CHUTES_PROXY_CONFIG, ./proxy.toml in Options.Dir, else the embedded
// defaults — and layers the environment and then the flags over it.
//
// The embedded defaults are loaded first so that every key a file leaves out
// keeps its documented value; the one exception is [[models]]: a user file's
// tables replace the embedded ones entirely (a file without any means no
// model has settings), because merging lists of models would resurrect
// models the user deleted.
//
// A file named by the flag or the environment that does not exist is an
// error (wrapping fs.ErrNotExist), not a reason to fall back: the user asked
// for that file. Invalid content is reported as Problems, every one of them;
// other errors are I/O errors. On error the *Config is nil.
func Load(opts Options) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	path, data, err := find(opts, getenv)
	if err != nil {
		return nil, err
	}
	label := path
	if path == "" {
		label = embeddedName
	}

	k := koanf.New(".")
	def, probs := parseTOML(embeddedName, chutesproxy.DefaultConfig)
	if len(probs) > 0 {
		return nil, probs // a broken build; the tests keep this from happening
	}
	if err := k.Load(confmap.Provider(def, ""), nil); err != nil {
		return nil, fmt.Errorf("loading the embedded defaults: %w", err)
	}
	var found Problems // shape problems: unknown keys, tables that are not tables
	if path == "" {
		found = append(found, checkKeys(embeddedName, def)...)
	} else {
		m, probs := parseTOML(label, data)
		if len(probs) > 0 {
			// Nothing after a syntax error can be trusted; fix that first.
			return nil, probs
		}
		found = append(found, checkKeys(label, m)...)
		k.Delete("models")
		if err := k.Load(confmap.Provider(m, ""), nil); err != nil {
			return nil, fmt.Errorf("loading %s: %w", label, err)
		}
	}

	over, origin, notes := overrides(opts, getenv)
	if len(over) > 0 {
		if err := k.Load(confmap.Provider(over, "."), nil); err != nil {
			return nil, fmt.Errorf("applying environment and flags: %w", err)
		}
	}
	from := func(key string) string {
		if who, ok := origin[key]; ok {
			return who
		}
		return label
	}

	cfg := &Config{Source: path}
	dp, err := decode(k, cfg, from)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", label, err)
	}
	for _, p := range dp {
		// checkKeys may have said so already, about the file's own value.
		if !slices.ContainsFunc(found, func(f Problem) bool { return f.Key == p.Key }) {
			found = append(found, p)
		}
	}

	cfg.Upstream.BaseURL = strings.TrimRight(cfg.Upstream.BaseURL, "/")
	cfg.Upstream.AccountURL = strings.TrimRight(cfg.Upstream.AccountURL, "/")
	cfg.Upstream.APIKey = trimKey("upstream.api_key", from("upstream.api_key"), cfg.Upstream.APIKey, &notes)
	cfg.ProxyKey = trimKey("proxy_key", from("proxy_key"), cfg.ProxyKey, &notes)
	if key := cfg.Upstream.APIKey.Reveal(); key != "" && !strings.HasPrefix(key, "cpk_") {
		notes = append(notes, fmt.Sprintf("upstream.api_key (from %s) does not start with cpk_ as Chutes keys do (it starts %s); check that it is a Chutes API key",
			from("upstream.api_key"), Redact(key)))
	}
	cfg.Notes = notes

	if all := merge(found, validate(cfg, from)); len(all) > 0 {
		return nil, all.withModelIDs(cfg)
	}
	return cfg, nil
}

// overrides collects what the environment and the flags set, as flat koanf
// keys, and who set each ("env CHUTES_PROXY_LISTEN", "flag --listen") so
// that a bad value is blamed on its source rather than on the file. Empty
// values do not override.
func overrides(opts Options, getenv func(string) string) (over map[string]any, origin map[string]string, notes []string) {
	over, origin = map[string]any{}, map[string]string{}
	set := func(key, who, val string) {
		over[key] = val
		origin[key] = who
	}
	if v := strings.TrimSpace(getenv(EnvListen)); v != "" {
		set("listen", "env "+EnvListen, v)
	}
	if v := strings.TrimSpace(getenv(EnvUpstream)); v != "" {
		set("upstream.base_url", "env "+EnvUpstream, v)
	}
	if v := getenv(EnvAPIKey); v != "" {
		if strings.TrimFunc(v, isKeyJunk) == "" {
			notes = append(notes, "env "+EnvAPIKey+" is set but holds only white space or quotes; ignored")
		} else {
			// Kept untrimmed here: trimKey trims it later and says so.
			set("upstream.api_key", "env "+EnvAPIKey, v)
		}
	}
	if v := strings.TrimSpace(opts.Listen); v != "" {
		set("listen", "flag --listen", v) // after the environment: flags win
	}
	return over, origin, notes
}

// decode decodes k into cfg strictly, turning each field that fails into a
// Problem; the error is for failures that are not about a field.
func decode(k *koanf.Koanf, cfg *Config, from func(string) string) (Problems, error) {
	dc := &mapstructure.DecoderConfig{
		// Not WeaklyTypedInput: "32" where a number goes is a mistake to
		// report, not to guess at. Unknown keys are found by checkKeys, which
		// can suggest the right key, so ErrorUnused stays off.
		DecodeHook: mapstructure.ComposeDecodeHookFunc(strictHook, mapstructure.TextUnmarshallerHookFunc()),
		// TOML keys are case sensitive; mapstructure's default is not.
		MatchName: func(mapKey, fieldName string) bool { return mapKey == fieldName },
		TagName:   "koanf",
	}
	err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{DecoderConfig: dc})
	if err == nil {
		return nil, nil
	}
	ps, ok := decodeProblems(err, k.Raw(), from)
	if !ok {
		return nil, err
	}
	return ps, nil
}

// find returns the config file's path and content, or "" and nil for the
// embedded defaults.
func find(opts Options, getenv func(string) string) (string, []byte, error) {
	named := func(p, via string) (string, []byte, error) {
		if !filepath.IsAbs(p) && opts.Dir != "" {
			p = filepath.Join(opts.Dir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", nil, fmt.Errorf("config file named by %s: %w", via, err)
		}
		return p, b, nil
	}
	if opts.File != "" {
		return named(opts.File, "--config")
	}
	if p := getenv(EnvConfig); p != "" {
		return named(p, "$"+EnvConfig)
	}
	p := filepath.Join(opts.Dir, "proxy.toml")
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil, nil
	case err != nil:
		return "", nil, fmt.Errorf("reading config: %w", err)
	}
	return p, b, nil
}

// parseTOML parses one file into koanf's raw map; a syntax error becomes a
// Problem keyed "LINE:COLUMN", since there is no key to name yet.
func parseTOML(label string, b []byte) (map[string]any, Problems) {
	// Windows editors like to start files with a byte-order mark.
	b = bytes.TrimPrefix(b, []byte("\ufeff"))
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		p := Problem{File: label, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			p.Key = fmt.Sprintf("%d:%d", row, col)
		} else if line := locate(b, err.Error()); line > 0 {
			p.Key = strconv.Itoa(line)
		}
		return nil, Problems{p}
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// locate finds the line of a parse error that go-toml reports without a
// position (a key or table defined twice): the first line at which parsing
// the file up to there fails the same way. Only lines that mention the name
// in the message are tried, and only so many, so that a large file cannot
// make Load slow. 0 means not found.
func locate(b []byte, msg string) int {
	if len(b) > 64<<10 {
		return 0 // the message still names the key
	}
	name := ""
	if f := strings.Fields(strings.TrimPrefix(msg, "toml: ")); len(f) > 1 {
		name = f[1] // "key X is…", "table X already…", "expected X to be…"
	}
	budget := 50
	off := 0
	for line := 1; off < len(b) && budget > 0; line++ {
		end := len(b)
		if nl := bytes.IndexByte(b[off:], '\n'); nl >= 0 {
			end = off + nl + 1
		}
		if hasWord(string(b[off:end]), name) {
			budget--
			var m map[string]any
			if err := toml.Unmarshal(b[:end], &m); err != nil && err.Error() == msg {
				return line
			}
		}
		off = end
	}
	return 0
}

// hasWord reports whether w occurs in s as a whole TOML bare key, not as
// part of a longer one.
func hasWord(s, w string) bool {
	bare := func(r byte) bool {
		return r == '_' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	for i := 0; ; {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		j += i
		if (j == 0 || !bare(s[j-1])) && (j+len(w) == len(s) || !bare(s[j+len(w)])) {
			return true
		}
		i = j + 1
	}
}

// trimKey removes what a copy and paste drags along around a key — spaces,
// line ends, quotes, zero-width characters — since no key contains them and
// a key with them is rejected upstream with a message that does not say
// why. It notes the trim, showing only the key's redacted prefix.
func trimKey(name, from string, s Secret, notes *[]string) Secret {
	raw := s.Reveal()
	t := strings.TrimFunc(raw, isKeyJunk)
	if t == raw {
		return s
	}
	lead := len(raw) - len(strings.TrimLeftFunc(raw, isKeyJunk))
	trail := len(strings.TrimRightFunc(raw, isKeyJunk))
	what := "white space"
	if strings.ContainsAny(raw[:lead]+raw[max(trail, lead):], `"'`) {
		what = "white space or quotes"
	}
	if t == "" {
		*notes = append(*notes, fmt.Sprintf("%s (from %s) held only %s; treated as not set", name, from, what))
	} else {
		*notes = append(*notes, fmt.Sprintf("%s (from %s) had %s around it; trimmed: %s", name, from, what, Redact(t)))
	}
	return Secret(t)
}

// isKeyJunk reports whether r is never part of a key but often pasted with
// one.
func isKeyJunk(r rune) bool {
	return unicode.IsSpace(r) || r == '"' || r == '\'' || unicode.Is(unicode.Cf, r) || unicode.IsControl(r)
}

// TOML renders the effective configuration for check-config: the file's
// values with the environment and flags applied and defaults filled in. Keys
// are redacted (Secret marshals itself as a prefix), so the output is safe
// to paste into a bug report but is not a working config.
func (c *Config) TOML() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# effective config from %s, with environment and flags applied; keys redacted\n\n", c.SourceName())
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(c); err != nil {
		// Only a type the encoder cannot handle gets here, which the tests
		// rule out; say so rather than print half a file.
		fmt.Fprintf(&b, "# cannot render the config: %v\n", err)
	}
	return b.Bytes()
}

// valueError is a decode failure whose message is already meant for the
// user.
type valueError struct{ msg string }

func (e valueError) Error() string { return e.msg }

// strictHook decodes what mapstructure would otherwise get wrong or
// silently: a Duration must be a quoted Go duration (a bare 30 would be 30
// nanoseconds), and a whole-number field must not get a fraction.
func strictHook(from, to reflect.Value) (any, error) {
	if !from.IsValid() {
		return nil, nil
	}
	data := from.Interface()
	switch {
	case to.Type() == reflect.TypeFor[Duration]():
		switch v := data.(type) {
		case Duration:
			return v, nil
		case string:
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return nil, valueError{fmt.Sprintf("%q is not a duration; use Go syntax such as \"500ms\", \"30s\", \"10m\"", v)}
			}
			return Duration(d), nil
		default:
			return nil, valueError{fmt.Sprintf("want a quoted duration such as \"30s\", got %s", describe(data))}
		}
	case to.Kind() == reflect.Int:
		if f, ok := data.(float64); ok {
			if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) || f >= math.MaxInt64 || f <= math.MinInt64 {
				return nil, valueError{fmt.Sprintf("want a whole number, got %s", describe(data))}
			}
			return int64(f), nil
		}
	}
	return data, nil
}

// decodeProblems turns mapstructure's joined errors into one Problem per
// field. ok is false if an error is not about a field, which would be a bug
// in Load rather than in the file.
func decodeProblems(err error, raw map[string]any, from func(string) string) (Problems, bool) {
	var ps Problems
	ok := true
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case *mapstructure.DecodeError:
			var deeper *mapstructure.DecodeError
			if inner := e.Unwrap(); inner != nil && errors.As(inner, &deeper) {
				walk(inner) // a table's errors, joined; report each field
				return
			}
			ps = append(ps, Problem{File: from(e.Name()), Key: e.Name(), Msg: decodeMessage(e, raw)})
		case interface{ Unwrap() error }:
			walk(e.Unwrap()) // Decode's "decoding failed due to ..." wrapper
		default:
			ok = false
		}
	}
	walk(err)
	return ps, ok
}

func decodeMessage(de *mapstructure.DecodeError, raw map[string]any) string {
	var ve valueError
	if errors.As(de, &ve) {
		return ve.msg
	}
	segs := splitKey(de.Name())
	t := typeAt(segs)
	v, found := valueAt(raw, segs)
	if t == nil || !found {
		return strings.TrimPrefix(de.Error(), "'"+de.Name()+"' ")
	}
	return mismatch(t, segs[len(segs)-1].name, v)
}

// mismatch says what key (of type t) wants and what it got instead.
func mismatch(t reflect.Type, key string, got any) string {
	return fmt.Sprintf("want %s, got %s", expect(t, key), describe(got))
}

func typeAt(segs []keySegment) reflect.Type {
	t := reflect.TypeFor[Config]()
	for _, s := range segs {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case s.isIndex && t.Kind() == reflect.Slice:
			t = t.Elem()
		case !s.isIndex && t.Kind() == reflect.Struct:
			i := slices.IndexFunc(koanfFields(t), func(f reflect.StructField) bool { return koanfName(f) == s.name })
			if i < 0 {
				return nil
			}
			t = koanfFields(t)[i].Type
		default:
			return nil
		}
	}
	return t
}

func valueAt(v any, segs []keySegment) (any, bool) {
	for _, s := range segs {
		switch c := v.(type) {
		case map[string]any:
			if s.isIndex {
				return nil, false
			}
			var ok bool
			if v, ok = c[s.name]; !ok {
				return nil, false
			}
		case []any:
			if !s.isIndex || s.index >= len(c) {
				return nil, false
			}
			v = c[s.index]
		default:
			return nil, false
		}
	}
	return v, true
}

// expect describes what a key of type t takes, in TOML's words.
func expect(t reflect.Type, key string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[Duration]():
		return `a quoted duration such as "30s"`
	case t.Kind() == reflect.String:
		return "a quoted string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Int:
		return "a whole number"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return fmt.Sprintf("[[%s]] tables", key)
	case t.Kind() == reflect.Slice:
		return `a list of strings such as ["a", "b"]`
	case t.Kind() == reflect.Struct:
		if strings.Contains(key, "[") || key == "" {
			return "a table"
		}
		return fmt.Sprintf("a table ([%s])", key)
	}
	return t.String()
}

// describe says what a parsed TOML value is, quoting short values so the
// user can find them.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		if len(v) > 40 {
			return "a string"
		}
		return fmt.Sprintf("the string %q", v)
	case int64, int:
		return fmt.Sprintf("the integer %d", v)
	case float64:
		return fmt.Sprintf("the number %v", v)
	case bool:
		return fmt.Sprintf("%v", v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date and time"
	}
	// go-toml's LocalDate, LocalTime and LocalDateTime.
	if strings.HasPrefix(fmt.Sprintf("%T", v), "toml.Local") {
		return "a date or time"
	}
	return fmt.Sprintf("a %T", v)
}
