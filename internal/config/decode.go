package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/v2"
	"github.com/pelletier/go-toml/v2"

	"github.com/chutes-proxy/chutes-proxy/internal/fuzzy"
)

// decode decodes k's merged layers into cfg. Each value of the wrong type
// and each key Config does not have becomes a Problem (finish says where it
// came from); file is the file's content, where go-toml finds the lines of
// unknown keys.
func decode(k *koanf.Koanf, cfg *Config, file []byte) Problems {
	dc := &mapstructure.DecoderConfig{
		// Not WeaklyTypedInput: "32" where a number goes is a mistake to
		// report, not to guess at.
		DecodeHook:  mapstructure.ComposeDecodeHookFunc(checkType, mapstructure.TextUnmarshallerHookFunc()),
		ErrorUnused: true,
		// TOML keys are case sensitive; mapstructure's default is not.
		MatchName: func(mapKey, fieldName string) bool { return mapKey == fieldName },
	}
	lines := unknownLines(file)
	var ps Problems
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case interface{ Unwrap() []error }: // a table's errors, joined
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case *mapstructure.DecodeError:
			list, unused := strings.CutPrefix(e.Unwrap().Error(), "has invalid keys: ")
			if !unused {
				ps = append(ps, Problem{Key: e.Name(), Msg: e.Unwrap().Error()})
				return
			}
			// mapstructure names the top level by its type.
			table := strings.TrimPrefix(e.Name(), reflect.TypeFor[Config]().String())
			for _, key := range strings.Split(list, ", ") {
				path := strings.TrimPrefix(table+"."+key, ".")
				ps = append(ps, Problem{Key: path, Msg: unknown(table, key, lines)})
			}
		case interface{ Unwrap() error }: // Decode's "decoding failed due to ..."
			walk(e.Unwrap())
		case error: // not about the file: a bug here, but say it rather than drop it
			ps = append(ps, Problem{Msg: e.Error()})
		}
	}
	walk(k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{Tag: "toml", DecoderConfig: dc}))
	return ps
}

// wants says what TOML writes for each kind of key.
var wants = map[reflect.Kind]string{reflect.Int: "a whole number", reflect.Float64: "a number",
	reflect.String: "a quoted string", reflect.Bool: "true or false", reflect.Struct: "a table",
	reflect.Slice: `a list of strings such as ["a", "b"]`}

// checkType lets through only what TOML writes for each key: a Duration
// only as a quoted Go duration (a bare 30 would be 30 nanoseconds), a whole
// number also as 2.0.
func checkType(from, to reflect.Value) (any, error) {
	v, t := from.Interface(), to.Type()
	want, ok := wants[t.Kind()], from.Kind() == t.Kind()
	switch f, isFloat := v.(float64); {
	case t == reflect.TypeFor[Duration](): // TextUnmarshallerHookFunc parses it
		want, ok = `a quoted duration such as "30s"`, from.Kind() == reflect.String
	case t.Kind() == reflect.Int && isFloat && f == math.Trunc(f) && math.Abs(f) < math.MaxInt64:
		return int64(f), nil
	case t.Kind() == reflect.Int:
		ok = from.Kind() == reflect.Int64
	case t.Kind() == reflect.Float64:
		ok = isFloat || from.Kind() == reflect.Int64
	case t.Kind() == reflect.Struct:
		ok = from.Kind() == reflect.Map
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		want = "an array of tables"
	case want == "":
		return v, nil // a pointer: checked as what it points to
	}
	if ok {
		return v, nil
	}
	// Show the value as the user wrote it, roughly, so that they can find
	// it; not a long string, which may be a key.
	got := fmt.Sprint(v) // numbers, true and false, dates and times
	switch v := v.(type) {
	case string:
		got = strconv.Quote(v)
		if len(v) > 40 {
			got = "a long string"
		}
	case []any:
		got = "an array"
	case map[string]any:
		got = "a table"
	}
	return nil, fmt.Errorf("want %s, got %s", want, got)
}

// unknownLines decodes the file strictly into the shape of Config to learn
// where the keys Config does not have are: "key on line 7" or "table on
// line 7", by the key's path without [[models]] indices, in file order. The
// shape takes any value where Config has one, so that a value of the wrong
// type does not stop the search.
//
// mapstructure, not go-toml, decides which keys are unknown: go-toml
// matches keys regardless of case (Listen for listen), has no [[models]]
// index, and stops at a table written as a value. A key it did not report
// is named without a line.
func unknownLines(b []byte) map[string][]string {
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var strict *toml.StrictMissingError
	if !errors.As(dec.Decode(reflect.New(shape(reflect.TypeFor[Config]())).Interface()), &strict) {
		return nil
	}
	lines := map[string][]string{}
	for _, e := range strict.Errors {
		row, _ := e.Position()
		what, path := "key", strings.Join(e.Key(), ".")
		if strings.HasSuffix(e.Error(), "missing table") {
			what = "table"
		}
		lines[path] = append(lines[path], fmt.Sprintf("%s on line %d", what, row))
	}
	return lines
}

// shape returns t with every value replaced by any, keeping the tables.
func shape(t reflect.Type) reflect.Type {
	switch {
	case t.Kind() == reflect.Struct:
		fs := keys(t)
		for i := range fs {
			fs[i].Type = shape(fs[i].Type)
		}
		return reflect.StructOf(fs)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return reflect.SliceOf(shape(t.Elem()))
	}
	return reflect.TypeFor[any]()
}

// indexRE matches the [[models]] indices in a key path.
var indexRE = regexp.MustCompile(`\[\d+\]`)

// unknown explains the unknown key in table, taking its line from lines
// (mapstructure reports [[models]] tables in order, as go-toml does, so the
// first line left for a path is this key's) and saying what it may have
// meant. The commonest cause is not a typo but TOML's rule that every key
// after a [table] header belongs to that table, so it first looks for the
// key elsewhere in Config.
func unknown(table, name string, lines map[string][]string) string {
	bare := strings.TrimPrefix(indexRE.ReplaceAllString(table, "")+"."+name, ".")
	at := "key"
	if l := lines[bare]; len(l) > 0 {
		at, lines[bare] = l[0], l[1:]
	}
	table = indexRE.ReplaceAllString(table, "[]") // as in keyPaths
	var to string
	var here []string
	for _, p := range keyPaths {
		i := strings.LastIndex(p, ".")
		if p[i+1:] == name && to == "" {
			// The first: [[models]], whose keys copy some of [breaker]'s
			// and [rate_limit]'s, comes last.
			to = p
		} else if p[:max(i, 0)] == table {
			here = append(here, p[i+1:])
		}
	}
	switch {
	case to == name && table != "":
		return fmt.Sprintf("unknown %s; %s is a top-level key: keys below a [table] header belong to that table, so move it above the first [table]", at, name)
	case strings.HasPrefix(to, "models[]."):
		return fmt.Sprintf("unknown %s; %s belongs in a [[models]] table, after id = \"org/model\"", at, name)
	case to != "":
		return fmt.Sprintf("unknown %s; did you mean %s (under [%s])?", at, to, strings.Split(to, ".")[0])
	case closest(name, here) != "":
		return fmt.Sprintf("unknown %s; did you mean %q?", at, closest(name, here))
	}
	where := "at the top level"
	if table != "" {
		where = "under [" + strings.TrimSuffix(table, "[]") + "]"
	}
	return fmt.Sprintf("unknown %s; the keys %s are %s", at, where, strings.Join(here, ", "))
}

// keyPaths lists Config's keys, tables included, in declaration order,
// which is proxy.toml's: "listen", …, "upstream", "upstream.base_url", …,
// "models", "models[].id", ….
var keyPaths = tomlPaths("", reflect.TypeFor[Config]())

func tomlPaths(prefix string, t reflect.Type) (ps []string) {
	for _, f := range keys(t) {
		p, ft := strings.TrimPrefix(prefix+"."+keyName(f), "."), f.Type
		ps = append(ps, p)
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			p, ft = p+"[]", ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			ps = append(ps, tomlPaths(p, ft)...)
		}
	}
	return ps
}

// keys returns t's fields that have a TOML key, in declaration order.
func keys(t reflect.Type) (fs []reflect.StructField) {
	for i := range t.NumField() {
		if name := keyName(t.Field(i)); name != "" && name != "-" {
			fs = append(fs, t.Field(i))
		}
	}
	return fs
}

func keyName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// closest returns the candidate nearest to s by edit distance, or "" if
// none is near enough to be a likely typo.
func closest(s string, candidates []string) string {
	if len(s) > 64 {
		return "" // not a typo of anything we have, and costly to compare
	}
	best, bestD := "", 0
	for _, c := range candidates {
		if len(c) > 64 {
			continue
		}
		d := fuzzy.Distance(strings.ToLower(s), strings.ToLower(c))
		if limit := max(2, len(c)/3); d <= limit && (best == "" || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// syntaxProblem locates a TOML syntax error as "LINE:COLUMN", since there is
// no key to name yet. go-toml gives no position for a key or table defined
// twice; for that it is the first line such that the file up to there fails
// the same way, found by a binary search, since a prefix of the file fails
// so exactly when it holds the second definition.
func syntaxProblem(file string, b []byte, err error) Problem {
	p := Problem{File: file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		p.Key = fmt.Sprintf("%d:%d", row, col)
		return p
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	n := sort.Search(len(lines), func(i int) bool {
		var m map[string]any
		e := toml.Unmarshal(bytes.Join(lines[:i+1], nil), &m)
		return e != nil && e.Error() == err.Error()
	})
	if n < len(lines) {
		p.Key = strconv.Itoa(n + 1)
	}
	return p
}
