package simulator

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Scenario is everything a Simulator plays: which keys it accepts and how
// each model behaves. docs/SIMULATOR.md documents its TOML form.
type Scenario struct {
	// Seed drives the flaky models' draws: the same seed gives the same
	// sequence of outcomes for the same sequence of requests.
	Seed uint64
	// Keys are the accepted API keys; empty means any key starting "cpk_".
	Keys []string
	// AcceptAnyKey turns auth off: requests with any key, or none, pass.
	AcceptAnyKey bool
	// Models are scripted one by one and listed by /v1/models in this order.
	Models []ModelScenario
	// DefaultBehavior is how a model not in Models answers; nil means 404
	// "model not found". Such models are never listed.
	DefaultBehavior *Behavior
}

// ModelScenario is one model's id and script; in TOML the Behavior fields
// sit next to id in the same [[models]] table.
type ModelScenario struct {
	ID string
	Behavior
}

// Validate reports every problem in sc, one "KEY: problem" per line.
func (sc Scenario) Validate() error {
	var errs []error
	seen := make(map[string]bool)
	for i, m := range sc.Models {
		key := fmt.Sprintf("models[%d]", i)
		switch {
		case strings.TrimSpace(m.ID) == "":
			errs = append(errs, fmt.Errorf("%s.id: missing", key))
		case seen[m.ID]:
			errs = append(errs, fmt.Errorf("%s.id: %q appears twice", key, m.ID))
		}
		seen[m.ID] = true
		if err := m.Behavior.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s.%w", key, err))
		}
	}
	if sc.DefaultBehavior != nil {
		if err := sc.DefaultBehavior.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("default_behavior.%w", err))
		}
	}
	return errors.Join(errs...)
}

// DefaultScenario is the demo's: a chain whose first model is down, a flaky
// but fast second and a healthy third, plus a healthy reasoning model.
// Context lengths are the ones Chutes lists for these models.
func DefaultScenario() Scenario {
	const think = "The user wants a short answer. I will greet them and keep it brief."
	return Scenario{
		Seed: 1,
		Models: []ModelScenario{
			{ID: "deepseek-ai/DeepSeek-R1", Behavior: Behavior{
				Kind: KindDown, ContextLength: 163840, Reasoning: think,
			}},
			{ID: "Qwen/Qwen2.5-72B-Instruct", Behavior: Behavior{
				Kind: KindFlaky, FailureRate: 0.3, TTFT: 200 * time.Millisecond, TokensPerSecond: 40,
				ContextLength: 32768,
			}},
			{ID: "chutesai/Mistral-Small-3.1-24B-Instruct-2503", Behavior: Behavior{
				Kind: KindHealthy, TTFT: 300 * time.Millisecond, TokensPerSecond: 30, ContextLength: 131072,
			}},
			{ID: "deepseek-ai/DeepSeek-V3", Behavior: Behavior{
				Kind: KindHealthy, TTFT: 400 * time.Millisecond, TokensPerSecond: 25, ContextLength: 163840,
				Reasoning: think,
			}},
		},
	}
}

// resumeTOML is the resume demo's scenario, shipped in the binary and in
// the repository (for `chutes-proxy simulate --scenario`).
//
//go:embed scenarios/resume.toml
var resumeTOML []byte

// ResumeScenario is the resume demo's: Qwen/Qwen2.5-72B-Instruct streams but
// cuts half of its replies after five words (flaky, failure_kind
// drop_after); chutesai/Mistral-Small-3.1-24B-Instruct-2503 is healthy and
// says the same. A proxy with resume_streams hides every cut. It is
// scenarios/resume.toml.
func ResumeScenario() Scenario {
	sc, err := parseScenario("scenarios/resume.toml", resumeTOML)
	if err != nil {
		panic("simulator: the embedded resume scenario is invalid: " + err.Error()) // TestResumeScenario keeps it valid
	}
	return sc
}

// LoadScenario reads a TOML scenario file strictly: an unknown key, a value
// of the wrong type or a failed Validate is an error whose lines read
// "FILE:KEY: problem".
func LoadScenario(path string) (Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("reading scenario: %w", err)
	}
	return parseScenario(path, data)
}

func parseScenario(path string, data []byte) (Scenario, error) {
	var f fileScenario
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Scenario{}, tomlError(path, data, err)
	}
	sc := Scenario{Seed: f.Seed, Keys: f.Keys, AcceptAnyKey: f.AcceptAnyKey}
	for _, m := range f.Models {
		sc.Models = append(sc.Models, ModelScenario{ID: m.ID, Behavior: m.behavior()})
	}
	if f.DefaultBehavior != nil {
		b := f.DefaultBehavior.behavior()
		sc.DefaultBehavior = &b
	}
	if err := sc.Validate(); err != nil {
		var lines []string
		for _, e := range unjoin(err) {
			lines = append(lines, path+":"+e.Error())
		}
		return Scenario{}, errors.New(strings.Join(lines, "\n"))
	}
	return sc, nil
}

// tomlError names the file, the key and the line of a decoding failure.
func tomlError(path string, data []byte, err error) error {
	if sme, ok := errors.AsType[*toml.StrictMissingError](err); ok {
		lines := make([]string, 0, len(sme.Errors))
		for _, e := range sme.Errors {
			row, _ := e.Position()
			lines = append(lines, fmt.Sprintf("%s:%s: unknown key (line %d)", path, strings.Join(e.Key(), "."), row))
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	if de, ok := errors.AsType[*toml.DecodeError](err); ok {
		row, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if key := keyAt(data, row); key != "" {
			return fmt.Errorf("%s:%s: %s (line %d)", path, key, msg, row)
		}
		return fmt.Errorf("%s:%d:%d: %s", path, row, col, msg)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// keyAt names the key assigned on line row (1-based) of a TOML document,
// prefixed with the table it sits in, for errors go-toml reports by position
// only. It reads the simple layout scenarios use; "" when unsure.
func keyAt(data []byte, row int) string {
	lines := strings.Split(string(data), "\n")
	if row < 1 || row > len(lines) {
		return ""
	}
	key, _, ok := strings.Cut(lines[row-1], "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" || strings.ContainsAny(key, "[]\"'#") {
		return ""
	}
	for i := row - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "[") {
			table := strings.Trim(strings.TrimSpace(strings.SplitN(l, "#", 2)[0]), "[] ")
			return table + "." + key
		}
	}
	return key
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// The file's shapes. They differ from the Go API only in ttft, a string in
// Go duration syntax ("200ms").
type (
	fileScenario struct {
		Seed            uint64        `toml:"seed"`
		Keys            []string      `toml:"keys"`
		AcceptAnyKey    bool          `toml:"accept_any_key"`
		DefaultBehavior *fileBehavior `toml:"default_behavior"`
		Models          []fileModel   `toml:"models"`
	}
	fileModel struct {
		ID string `toml:"id"`
		fileBehavior
	}
	fileBehavior struct {
		Kind            string   `toml:"kind"`
		TokensPerSecond float64  `toml:"tokens_per_second"`
		TTFT            duration `toml:"ttft"`
		RetryAfter      int      `toml:"retry_after"`
		DropAfter       int      `toml:"drop_after"`
		FailureRate     float64  `toml:"failure_rate"`
		Reply           string   `toml:"reply"`
		Reasoning       string   `toml:"reasoning"`
		ContextLength   int      `toml:"context_length"`
		ErrorAsData     bool     `toml:"error_as_data"`
		EndAfter        int      `toml:"end_after"`
		StallAfter      int      `toml:"stall_after"`
		FailureKind     string   `toml:"failure_kind"`
		ReasoningField  string   `toml:"reasoning_field"`
		Refusal         string   `toml:"refusal"`
		ToolCalls       int      `toml:"tool_calls"`
		ToolArguments   string   `toml:"tool_arguments"`
	}
)

func (f fileBehavior) behavior() Behavior {
	return Behavior{
		Kind: f.Kind, TokensPerSecond: f.TokensPerSecond, TTFT: f.TTFT.d, RetryAfter: f.RetryAfter,
		DropAfter: f.DropAfter, FailureRate: f.FailureRate, Reply: f.Reply, Reasoning: f.Reasoning,
		ContextLength: f.ContextLength, ErrorAsData: f.ErrorAsData, EndAfter: f.EndAfter,
		StallAfter: f.StallAfter, FailureKind: f.FailureKind, ReasoningField: f.ReasoningField,
		Refusal: f.Refusal, ToolCalls: f.ToolCalls, ToolArguments: f.ToolArguments,
	}
}

// duration is a time.Duration written as a Go duration string. A struct,
// so a bare number (ambiguous units) is a type error rather than nanoseconds.
type duration struct{ d time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"200ms\": %w", err)
	}
	d.d = v
	return nil
}
