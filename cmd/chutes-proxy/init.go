package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/term"

	chutesproxy "github.com/chutes-proxy/chutes-proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
)

// init's limits.
const (
	// initChainLen is how many models the proposed chain holds: the one
	// that serves and three fallbacks. max_attempts (3) bounds the tries per
	// request; the fourth is reached when a breaker skips one of the others.
	initChainLen = 4
	// initListMax bounds the models shown when asking for the chain; the
	// rest can still be typed by id.
	initListMax = 25
	// initListTimeout bounds fetching a model list (Chutes' or a second
	// provider's). The account check has its own bound (chutes.CheckAccount).
	initListTimeout = 20 * time.Second
	// initKeyTries is how often a typed key that Chutes rejects is asked
	// for again before init gives up.
	initKeyTries = 3
	// initMinContext leaves models with a smaller context window out of the
	// proposal: a long chat sent to one gets a 400, which is never failed
	// over.
	initMinContext = 8192
	// initCommentColumn is where proxy.toml's trailing comments start.
	initCommentColumn = 31
)

// errNoAnswer ends init when standard input ends before a question is
// answered: a script that pipes too few answers gets nothing half-done.
var errNoAnswer = errors.New("no answer: standard input ended (run with --yes to take the defaults without questions)")

// initEnv is what init reads from the process, so that the tests can
// script it.
type initEnv struct {
	in io.Reader
	// termFD is stdin's descriptor when it is a terminal, so that a typed
	// key is not echoed; -1 when it is not (a pipe, a test).
	termFD int
	getenv func(string) string
	now    func() time.Time
}

func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fd := -1
	if f := int(os.Stdin.Fd()); term.IsTerminal(f) {
		fd = f
	}
	return initMain(ctx, args, initEnv{in: os.Stdin, termFD: fd, getenv: os.Getenv, now: time.Now}, stdout, stderr)
}

// initMain is the init command with its input, environment and clock
// given.
func initMain(ctx context.Context, args []string, env initEnv, stdout, stderr io.Writer) int {
	flags := newFlags("init", "First-run set-up: asks for the Chutes key (or reads $CHUTES_API_KEY) and checks it with Chutes' account API, "+
		"proposes a fallback chain from the models Chutes lists right now (largest first, with their context windows), "+
		"optionally adds a second provider, and writes a commented proxy.toml. It never overwrites a file without asking.", stdout, stderr)
	file := flags.String("config", "proxy.toml", "the file to write")
	yes := flags.Bool("yes", false, "take the defaults without questions: the key from $CHUTES_API_KEY (not written to the file), the proposed chain, alias auto, "+
		"no second provider; an existing file is left alone")
	baseURL := flags.String("base-url", "", "the Chutes-compatible API to use (default: $CHUTES_PROXY_UPSTREAM, else Chutes' own)")
	accountURL := flags.String("account-url", "", "its account API, for the key check (default: Chutes' own with Chutes' base URL, else none)")
	if code, done := parse(flags, args); done {
		return code
	}
	accountSet := false
	flags.Visit(func(f *flag.Flag) { accountSet = accountSet || f.Name == "account-url" })

	defaults, err := embeddedUpstream()
	if err != nil {
		fmt.Fprintln(stderr, "chutes-proxy init:", err) // TestInitRender keeps this from happening
		return 1
	}
	in := &initer{
		p:   &prompter{in: bufio.NewReader(env.in), out: stdout, termFD: env.termFD},
		out: stdout, yes: *yes, getenv: env.getenv, now: env.now,
		path: *file,
	}
	in.base = strings.TrimRight(cmp.Or(*baseURL, strings.TrimSpace(env.getenv(config.EnvUpstream)), defaults.BaseURL), "/")
	if msg := config.URLProblem(in.base); msg != "" {
		fmt.Fprintf(stderr, "chutes-proxy init: base URL: %s\n", msg)
		return 2
	}
	switch {
	case accountSet:
		in.account = strings.TrimRight(*accountURL, "/")
	case in.base == defaults.BaseURL:
		in.account = defaults.AccountURL
	}
	// Another server's keys are not Chutes', and Chutes' own key should not
	// go to a host the user did not name: without --account-url the check
	// is off there, and so it is in the file.
	if in.account != "" {
		if msg := config.URLProblem(in.account); msg != "" {
			fmt.Fprintf(stderr, "chutes-proxy init: account URL: %s\n", msg)
			return 2
		}
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	in.client = &http.Client{Transport: tr}

	if err := in.run(ctx); err != nil {
		switch {
		case ctx.Err() != nil:
			fmt.Fprintln(stderr, "\nchutes-proxy init: interrupted; nothing written")
		case errors.Is(err, errNothingWritten):
			fmt.Fprintln(stderr, err)
		default:
			fmt.Fprintf(stderr, "chutes-proxy init: %v; nothing written\n", err)
		}
		return 1
	}
	return 0
}

// errNothingWritten marks an ending init has already explained.
var errNothingWritten = errors.New("nothing written")

// initer is one run of init.
type initer struct {
	p       *prompter
	out     io.Writer
	yes     bool
	getenv  func(string) string
	now     func() time.Time
	client  *http.Client
	path    string // the file to write
	base    string // Chutes' base URL, written as upstream.base_url
	account string // the account API, written as upstream.account_url; "" = off
}

func (in *initer) run(ctx context.Context) error {
	replace, err := in.mayWrite(ctx)
	if err != nil {
		return err
	}
	// The list comes while the person types the key; it needs no key.
	listed := make(chan listResult, 1)
	listCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { listed <- fetchList(listCtx, in.client, in.base, "") }()

	key, fromEnv, err := in.askKey(ctx)
	if err != nil {
		return err
	}
	var list listResult
	select {
	case list = <-listed:
	case <-ctx.Done():
		return ctx.Err()
	}

	f := initFile{BaseURL: in.base, AccountURL: in.account, Written: in.now()}
	if list.err != nil || len(list.entries) == 0 {
		why := "it lists no models"
		if list.err != nil {
			why = list.err.Error()
		}
		fmt.Fprintf(in.out, "\nCould not list the models at %s (%s): offline, or Chutes is down.\n"+
			"Writing the built-in chain instead; run `chutes-proxy doctor` once Chutes answers to check it.\n", in.base, why)
	} else {
		if f.Chain, err = in.askChain(ctx, list.entries); err != nil {
			return err
		}
		if f.Aliases, err = in.askAliases(ctx, f.Chain); err != nil {
			return err
		}
		if f.Provider, err = in.askProvider(ctx); err != nil {
			return err
		}
	}
	if key != "" {
		write, err := in.askWriteKey(ctx, fromEnv)
		if err != nil {
			return err
		}
		if write {
			f.Key = key
		}
	}

	data, err := renderInit(f)
	if err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if f.Key != "" {
		perm = 0o600 // it holds a secret
	}
	cfg, err := writeInitConfig(in.path, data, perm, replace, in.getenv)
	if err != nil {
		return err
	}
	in.summary(cfg, f, key, fromEnv)
	return nil
}

// mayWrite says whether the file may be written, asking before an existing
// one is replaced; replace is true when it exists and may be.
func (in *initer) mayWrite(ctx context.Context) (replace bool, err error) {
	// A folder that does not exist yet is made at the end (the user's
	// config folder often does not); one that is a file cannot be.
	if fi, err := os.Stat(filepath.Dir(in.path)); err == nil && !fi.IsDir() {
		return false, fmt.Errorf("cannot write %s: %s is not a folder; %w", in.path, filepath.Dir(in.path), errNothingWritten)
	}
	_, err = os.Stat(in.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("cannot look at %s: %w", in.path, err)
	case in.yes:
		return false, fmt.Errorf("%s exists and --yes never overwrites a file: move it away, name another file with --config, "+
			"or run without --yes to be asked; %w", in.path, errNothingWritten)
	}
	ok, err := in.p.yesNo(ctx, in.path+" exists. Replace it with a new one at the end?", false)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("%s left as it is; name another file with --config; %w", in.path, errNothingWritten)
	}
	return true, nil
}

// askKey returns the Chutes key, from $CHUTES_API_KEY or typed, once Chutes'
// account API has not rejected it; "" when there is none.
func (in *initer) askKey(ctx context.Context) (key string, fromEnv bool, err error) {
	if key = strings.TrimFunc(in.getenv(config.EnvAPIKey), config.IsKeyJunk); key != "" {
		fmt.Fprintf(in.out, "Using the key in %s (%s).\n", config.EnvAPIKey, config.Redact(key))
		if !in.keyOK(ctx, key, "from "+config.EnvAPIKey) {
			return "", true, fmt.Errorf("fix %s, or unset it to type the key; %w", config.EnvAPIKey, errNothingWritten)
		}
		return key, true, nil
	}
	if in.yes {
		fmt.Fprintf(in.out, "%s is not set: writing no key. Apps then send their own Chutes key (as their OpenAI API key), or set %s where chutes-proxy runs.\n",
			config.EnvAPIKey, config.EnvAPIKey)
		return "", false, nil
	}
	fmt.Fprintln(in.out, "Your Chutes API key starts with cpk_ (chutes.ai, API keys). Without one, apps send their own.")
	for try := 1; ; try++ {
		q := "Chutes API key (input hidden; empty for none): "
		if try > 1 {
			q = "Paste the key again (empty to stop): "
		}
		if key, err = in.p.secret(ctx, q); err != nil {
			return "", false, err
		}
		switch key = strings.TrimFunc(key, config.IsKeyJunk); {
		case key == "" && try == 1:
			fmt.Fprintln(in.out, "No key: apps send their own Chutes key (as their OpenAI API key).")
			return "", false, nil
		case key != "" && in.keyOK(ctx, key, "as typed"):
			return key, false, nil
		case key == "" || try == initKeyTries:
			return "", false, fmt.Errorf("no key that Chutes accepts; %w", errNothingWritten)
		}
	}
}

// keyOK says whether key may be used: nothing inside it that no key has,
// and not rejected by the account API. It says what is wrong.
func (in *initer) keyOK(ctx context.Context, key, from string) bool {
	if strings.ContainsFunc(key, config.IsKeyJunk) {
		fmt.Fprintf(in.out, "The key %s (%s) has white space, quotes or control characters inside it, which no key has: copy it again.\n", config.Redact(key), from)
		return false
	}
	return in.checkKey(ctx, key, from)
}

// checkKey asks the account API about key and says what it answered;
// false when the key was rejected. from says where the key came from.
func (in *initer) checkKey(ctx context.Context, key, from string) bool {
	shown := config.Redact(key)
	if in.account == "" {
		fmt.Fprintf(in.out, "Key %s not checked: %s is not Chutes' own API and no --account-url was given.\n", shown, in.base)
		return true
	}
	a := chutes.CheckAccount(ctx, in.client, in.account, key)
	switch a.KeyState {
	case chutes.KeyRejected:
		var b strings.Builder
		fmt.Fprintf(&b, "Chutes rejected the key %s (%s): %s.", shown, from, strings.TrimSuffix(a.Error, "."))
		if !strings.HasPrefix(key, "cpk_") {
			b.WriteString(" It does not start with cpk_, so it is not a Chutes API key (another provider's key, or a password?).")
		}
		b.WriteString(" Chutes keys start with cpk_; check that it was pasted whole, or create one on the Chutes dashboard (chutes.ai, API keys).")
		fmt.Fprintln(in.out, b.String())
		return false
	case chutes.KeyAccepted:
		if s := a.Summary(0, in.now()); s != "" {
			fmt.Fprintf(in.out, "Key %s accepted: %s.\n", shown, s)
		} else {
			fmt.Fprintf(in.out, "Key %s accepted.\n", shown)
		}
		if a.Error != "" {
			fmt.Fprintf(in.out, "  (%s)\n", a.Error)
		}
	default:
		fmt.Fprintf(in.out, "Key %s not checked: %s.\n", shown, a.Error)
	}
	return true
}

// askChain proposes a chain from the listed models and, unless --yes, lets
// the person change it.
func (in *initer) askChain(ctx context.Context, entries []catalog.Entry) ([]candidate, error) {
	cands := rankModels(entries)
	chain := proposeChain(cands)
	if in.yes {
		fmt.Fprintf(in.out, "\nChutes lists %d models right now. The chain, largest first (the first serves, the others take over in turn):\n", len(entries))
		for _, c := range chain {
			fmt.Fprintf(in.out, "  %s\n", c.line())
		}
		return chain, nil
	}
	fmt.Fprintf(in.out, "\nChutes lists %d models right now, largest first (* = proposed):\n", len(entries))
	for i, c := range cands[:min(len(cands), initListMax)] {
		mark := " "
		if slices.ContainsFunc(chain, func(x candidate) bool { return x.ID == c.ID }) {
			mark = "*"
		}
		fmt.Fprintf(in.out, "%s %3d. %s\n", mark, i+1, c.line())
	}
	if n := len(cands) - initListMax; n > 0 {
		fmt.Fprintf(in.out, "  … and %d more; type an id to use one of them.\n", n)
	}
	var def []string
	for _, c := range chain {
		def = append(def, strconv.Itoa(1+slices.IndexFunc(cands, func(x candidate) bool { return x.ID == c.ID })))
	}
	fmt.Fprintln(in.out, "The first model of the chain serves; when it fails, the next takes over.")
	for {
		ans, err := in.p.ask(ctx, "Chain: numbers or ids, in order", strings.Join(def, " "))
		if err != nil {
			return nil, err
		}
		picked, problem := pickChain(ans, cands)
		if problem == "" {
			return picked, nil
		}
		fmt.Fprintln(in.out, problem)
	}
}

// pickChain reads an answer of numbers (as listed) and ids; problem says
// what is wrong with it.
func pickChain(ans string, cands []candidate) (chain []candidate, problem string) {
	ids := make([]string, len(cands))
	for i, c := range cands {
		ids[i] = c.ID
	}
	for _, w := range words(ans) {
		i := -1
		if n, err := strconv.Atoi(w); err == nil {
			if n < 1 || n > len(cands) {
				return nil, fmt.Sprintf("There is no model %d: pick 1 to %d.", n, len(cands))
			}
			i = n - 1
		} else if i = slices.IndexFunc(ids, func(id string) bool { return strings.EqualFold(id, w) }); i < 0 {
			msg := fmt.Sprintf("Chutes does not list %q right now", w)
			if s := diagnose.Suggest(w, ids, 3); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, ", ") + "?"
			}
			return nil, msg + " (A model Chutes does not list can be added to the file by hand later.)"
		}
		if !slices.ContainsFunc(chain, func(c candidate) bool { return c.ID == cands[i].ID }) {
			chain = append(chain, cands[i])
		}
	}
	if len(chain) == 0 {
		return nil, "Name at least one model."
	}
	return chain, ""
}

// askAliases asks for the names an app may send for the chain's first model.
func (in *initer) askAliases(ctx context.Context, chain []candidate) ([]string, error) {
	if in.yes {
		return []string{"auto"}, nil
	}
	fmt.Fprintf(in.out, "\nApps may ask for %s by its id or by short names (aliases), such as auto.\n", chain[0].ID)
	for {
		ans, err := in.p.ask(ctx, `Aliases ("-" for none)`, "auto")
		if err != nil {
			return nil, err
		}
		if ans == "-" {
			return nil, nil
		}
		aliases, problem := []string(nil), ""
		for _, a := range words(ans) {
			if strings.ContainsAny(a, "/:") {
				problem = fmt.Sprintf("%q: an alias is a short name without '/' or ':', such as auto or r1.", a)
				break
			}
			if !slices.Contains(aliases, a) {
				aliases = append(aliases, a)
			}
		}
		if problem == "" {
			return aliases, nil
		}
		fmt.Fprintln(in.out, problem)
	}
}

// words splits an answer at commas and white space.
func words(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// initProvider is the second provider init writes as [[providers]].
type initProvider struct {
	Name      string
	BaseURL   string
	APIKeyEnv string            // "" = no key
	Headers   map[string]string // sent with every request
	Comment   string            // on the name line
	// FirstByteTimeout overrides [upstream]'s; "" keeps it.
	FirstByteTimeout string
	Model            string // the chain's last fallback, as NAME:MODEL
}

// providerPreset is a second provider init offers by name.
type providerPreset struct {
	name, what string
	p          initProvider
	model      string // proposed when its list does not help
}

// providerPresets are the second providers init offers by name.
var providerPresets = []providerPreset{
	{"openrouter", "OpenRouter (key from $OPENROUTER_API_KEY)", initProvider{
		Name: "openrouter", BaseURL: "https://openrouter.ai/api/v1", APIKeyEnv: "OPENROUTER_API_KEY",
		Headers: map[string]string{"HTTP-Referer": "https://github.com/chutes-proxy/chutes-proxy", "X-Title": "chutes-proxy"},
	}, "deepseek/deepseek-r1:free"},
	{"ollama", "Ollama on this machine (no key)", initProvider{
		Name: "ollama", BaseURL: "http://127.0.0.1:11434/v1", Comment: "a local Ollama: no key",
		FirstByteTimeout: "120s",
	}, "llama3.1:8b"},
}

// askProvider offers a second provider for when Chutes itself is down; nil
// for none. Its key is read from an environment variable, never typed here.
func (in *initer) askProvider(ctx context.Context) (*initProvider, error) {
	if in.yes {
		return nil, nil
	}
	fmt.Fprintln(in.out, "\nA second provider serves when Chutes itself is down or your daily quota is spent:")
	fmt.Fprintln(in.out, "  none")
	for _, pp := range providerPresets {
		fmt.Fprintf(in.out, "  %-10s %s\n", pp.name, pp.what)
	}
	fmt.Fprintln(in.out, "  other      another OpenAI-compatible server (LM Studio, llama.cpp, KoboldCpp, DeepSeek's API…)")
	var p initProvider
	var model string
	for {
		ans, err := in.p.ask(ctx, "Second provider", "none")
		if err != nil {
			return nil, err
		}
		ans = strings.ToLower(ans)
		if ans == "none" || ans == "no" || ans == "n" {
			return nil, nil
		}
		if i := slices.IndexFunc(providerPresets, func(pp providerPreset) bool { return pp.name == ans }); i >= 0 {
			p, model = providerPresets[i].p, providerPresets[i].model
			break
		}
		if ans == "other" {
			if p, err = in.askOtherProvider(ctx); err != nil {
				return nil, err
			}
			break
		}
		fmt.Fprintln(in.out, "Answer none, openrouter, ollama or other.")
	}
	key := ""
	if p.APIKeyEnv != "" {
		if key = in.getenv(p.APIKeyEnv); key == "" {
			fmt.Fprintf(in.out, "Set %s where chutes-proxy runs: until then %s gets no key.\n", p.APIKeyEnv, p.Name)
		}
	}
	list := fetchList(ctx, in.client, p.BaseURL, key)
	var ids []string
	if list.err != nil {
		fmt.Fprintf(in.out, "%s does not answer at %s right now (%s); its models are tried when it does.\n", p.Name, p.BaseURL, list.err)
	} else {
		for _, e := range list.entries {
			ids = append(ids, e.ID)
		}
		if len(ids) > 0 && !slices.Contains(ids, model) {
			model = ids[0]
		}
	}
	var err error
	if p.Model, err = in.askListed(ctx, "Its model for the end of the chain", model, ids, p.Name); err != nil {
		return nil, err
	}
	return &p, nil
}

// askOtherProvider asks for a provider's name, base URL and key variable.
func (in *initer) askOtherProvider(ctx context.Context) (initProvider, error) {
	var p initProvider
	for {
		name, err := in.p.ask(ctx, "Its name ([a-z0-9-], written before ':' in model names)", "backup")
		if err != nil {
			return p, err
		}
		if config.ValidProviderName(name) {
			p.Name = name
			break
		}
		fmt.Fprintln(in.out, `Use lower-case letters, digits and '-'; "chutes" is taken.`)
	}
	for {
		u, err := in.p.ask(ctx, "Its base URL (ending /v1 as a rule)", "")
		if err != nil {
			return p, err
		}
		if msg := config.URLProblem(u); msg != "" {
			fmt.Fprintln(in.out, msg)
			continue
		}
		p.BaseURL = strings.TrimRight(u, "/")
		break
	}
	def := strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")) + "_API_KEY"
	env, err := in.p.ask(ctx, `The environment variable that holds its key ("-" for no key)`, def)
	if err != nil {
		return p, err
	}
	if env != "-" {
		p.APIKeyEnv = env
	}
	return p, nil
}

// askListed asks for a model id; one not in ids (when ids are known) is
// taken only when typed twice.
func (in *initer) askListed(ctx context.Context, q, def string, ids []string, who string) (string, error) {
	var last string
	for {
		ans, err := in.p.ask(ctx, q, def)
		if err != nil {
			return "", err
		}
		switch {
		case ans == "":
			fmt.Fprintln(in.out, "Name a model.")
			continue
		case len(ids) == 0 || slices.Contains(ids, ans) || ans == last:
			return ans, nil
		}
		msg := fmt.Sprintf("%s does not list %q", who, ans)
		if s := diagnose.Suggest(ans, ids, 3); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, ", ") + "?"
		}
		fmt.Fprintln(in.out, msg+" Type it again to keep it.")
		last = ans
	}
}

// askWriteKey decides whether the key goes into the file. A typed key
// does by default, so that the proxy works without more steps (the file is
// then readable by its owner only); one from $CHUTES_API_KEY does not,
// since the environment already holds it and a secret is better kept out
// of files.
func (in *initer) askWriteKey(ctx context.Context, fromEnv bool) (bool, error) {
	if in.yes {
		return !fromEnv, nil
	}
	q := fmt.Sprintf("\nWrite the key into %s (readable by you only)? Otherwise set %s wherever chutes-proxy runs.", in.path, config.EnvAPIKey)
	return in.p.yesNo(ctx, q, !fromEnv)
}

// summary says what was written and what to do next.
func (in *initer) summary(cfg *config.Config, f initFile, key string, fromEnv bool) {
	fmt.Fprintf(in.out, "\nWrote %s.\n", in.path)
	if len(cfg.Models) > 0 {
		m := cfg.Models[0]
		fmt.Fprintf(in.out, "  chain: %s\n", strings.Join(append([]string{m.ID}, m.Fallbacks...), " → "))
		if len(m.Aliases) > 0 {
			fmt.Fprintf(in.out, "  aliases: %s\n", strings.Join(m.Aliases, ", "))
		}
	}
	switch {
	case f.Key != "":
		fmt.Fprintf(in.out, "  key: %s, in the file\n", config.Redact(key))
	case fromEnv:
		fmt.Fprintf(in.out, "  key: none in the file; set %s wherever chutes-proxy runs (it is now %s)\n", config.EnvAPIKey, config.Redact(key))
	case key != "":
		fmt.Fprintf(in.out, "  key: none in the file; set %s to the key you typed (%s) wherever chutes-proxy runs\n", config.EnvAPIKey, config.Redact(key))
	default:
		fmt.Fprintln(in.out, "  key: none; apps send their own Chutes key")
	}
	flagPart := ""
	if filepath.Clean(in.path) != "proxy.toml" || in.getenv(config.EnvConfig) != "" {
		flagPart = " --config " + in.path
	}
	fmt.Fprintf(in.out, "\nCheck it:  chutes-proxy doctor%s\n", flagPart)
	fmt.Fprintf(in.out, "Serve it:  chutes-proxy%s\n", flagPart)
	model := "the model ids above"
	if len(cfg.Models) > 0 {
		model = strconv.Quote(cmp.Or(append(slices.Clone(cfg.Models[0].Aliases), cfg.Models[0].ID)...))
	}
	fmt.Fprintf(in.out, "Point your app at http://%s/v1 (OPENAI_BASE_URL) and ask for %s.\n", cfg.Listen, model)
}

// listResult is a fetched model list.
type listResult struct {
	entries []catalog.Entry
	err     error
}

// fetchList gets {base}/models through the one model-list parser.
func fetchList(ctx context.Context, client *http.Client, base, key string) listResult {
	ctx, cancel := context.WithTimeout(ctx, initListTimeout)
	defer cancel()
	c := catalog.New()
	if err := c.Fetch(ctx, client, strings.TrimRight(base, "/"), key); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is said by the caller
		}
		return listResult{err: err}
	}
	entries, _ := c.Entries()
	return listResult{entries: entries}
}

// embeddedUpstream is the embedded proxy.toml's [upstream] URLs: Chutes'
// own.
func embeddedUpstream() (config.Upstream, error) {
	var d struct {
		Upstream struct {
			BaseURL    string `toml:"base_url"`
			AccountURL string `toml:"account_url"`
		} `toml:"upstream"`
	}
	if err := toml.Unmarshal(chutesproxy.DefaultConfig, &d); err != nil {
		return config.Upstream{}, fmt.Errorf("reading the embedded proxy.toml: %w", err)
	}
	return config.Upstream{BaseURL: strings.TrimRight(d.Upstream.BaseURL, "/"), AccountURL: strings.TrimRight(d.Upstream.AccountURL, "/")}, nil
}

// candidate is a listed model with the size its id tells.
type candidate struct {
	catalog.Entry
	// Size is in billions of parameters; 0 when unknown.
	Size float64
}

// line shows the model with its size and context window.
func (c candidate) line() string {
	return fmt.Sprintf("%-50s %6s  %s", c.ID, formatSize(c.Size), formatContext(c.ContextLength))
}

// about is the model's size and context window for a comment: "671B,
// 160k context".
func (c candidate) about() string {
	if c.Size <= 0 {
		return formatContext(c.ContextLength)
	}
	return formatSize(c.Size) + ", " + formatContext(c.ContextLength)
}

// sizeRe finds a parameter count in an id: "72B", "0.5B", "135M", "8x7B"
// (a mixture of experts: all of them count). An active count such as
// "A22B" in "Qwen3-235B-A22B" does not match: it follows a letter.
var sizeRe = regexp.MustCompile(`(?i)(?:^|[-_/.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?:$|[-_.])`)

// knownSizes are families whose ids do not say their size, as Chutes lists
// them; the first part found in the lower-cased id wins. A model in none
// sorts after the sized ones, by its context window.
var knownSizes = []struct {
	part string
	size float64
}{
	{"kimi-k2", 1000},
	{"deepseek", 671}, // R1, V3 and their updates; distills say their size
	{"glm-4.5-air", 106},
	{"glm-4.5", 355},
	{"glm-4.6", 355},
}

// modelSize is the parameter count (billions) an id tells, 0 if none.
func modelSize(id string) float64 {
	var best float64
	for _, m := range sizeRe.FindAllStringSubmatch(id, -1) {
		n, _ := strconv.ParseFloat(m[2], 64)
		if m[1] != "" {
			k, _ := strconv.ParseFloat(m[1], 64)
			n *= k
		}
		if strings.EqualFold(m[3], "m") {
			n /= 1000
		}
		best = max(best, n)
	}
	if best > 0 {
		return best
	}
	lower := strings.ToLower(id)
	for _, k := range knownSizes {
		if strings.Contains(lower, k.part) {
			return k.size
		}
	}
	return 0
}

// rankModels orders the listed models largest first, then by context
// window, then by id.
func rankModels(entries []catalog.Entry) []candidate {
	cands := make([]candidate, 0, len(entries))
	for _, e := range entries {
		cands = append(cands, candidate{Entry: e, Size: modelSize(e.ID)})
	}
	slices.SortStableFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(b.Size, a.Size), cmp.Compare(b.ContextLength, a.ContextLength), strings.Compare(a.ID, b.ID))
	})
	return cands
}

// proposeChain picks up to initChainLen chat models from ranked: one of
// each size first, so that the chain steps down (671B, 235B, 72B, 24B)
// rather than holding four variants of the largest family, whose chutes
// tend to be busy together; then the next largest. The pick keeps ranked's
// order.
func proposeChain(ranked []candidate) []candidate {
	var usable []candidate
	for _, c := range ranked {
		lower := strings.ToLower(c.ID)
		if strings.Contains(lower, "embed") || strings.Contains(lower, "rerank") || strings.Contains(lower, "guard") ||
			c.ContextLength > 0 && c.ContextLength < initMinContext {
			continue
		}
		usable = append(usable, c)
	}
	if len(usable) == 0 {
		usable = ranked // better something than nothing
	}
	picked := make([]bool, len(usable))
	n := 0
	for i, c := range usable {
		if n < initChainLen && (i == 0 || !slices.ContainsFunc(usable[:i], func(x candidate) bool { return x.Size == c.Size })) {
			picked[i], n = true, n+1
		}
	}
	for i := range usable {
		if n < initChainLen && !picked[i] {
			picked[i], n = true, n+1
		}
	}
	var chain []candidate
	for i, c := range usable {
		if picked[i] {
			chain = append(chain, c)
		}
	}
	return chain
}

// formatSize shows a parameter count: "671B", "0.5B", "1T"; "" if unknown.
func formatSize(b float64) string {
	switch {
	case b <= 0:
		return ""
	case b >= 1000:
		return strconv.FormatFloat(math.Round(b/100)/10, 'f', -1, 64) + "T"
	}
	return strconv.FormatFloat(b, 'f', -1, 64) + "B"
}

// formatContext shows a context window in tokens as model cards do:
// 131072 is "128k context".
func formatContext(n int) string {
	switch {
	case n <= 0:
		return "context unknown"
	case n >= 1<<20:
		return strconv.FormatFloat(math.Round(float64(n)/(1<<20)*10)/10, 'f', -1, 64) + "M context"
	case n >= 1024:
		return strconv.Itoa(int(math.Round(float64(n)/1024))) + "k context"
	}
	return strconv.Itoa(n) + " context"
}

// initFile is what init writes over the embedded proxy.toml.
type initFile struct {
	BaseURL    string
	AccountURL string // "" = the account API off
	// Key is written as upstream.api_key; "" leaves it empty.
	Key string
	// Chain is the first [[models]] table's id and fallbacks; nil keeps the
	// embedded table.
	Chain    []candidate
	Aliases  []string
	Provider *initProvider // nil = none
	Written  time.Time
}

// renderInit is the embedded proxy.toml, comments and all, with init's
// answers in place of its values: the file documents itself as the
// defaults do. Each value is set on its own line, so a proxy.toml that no
// longer has that line is an error here (TestInitRender), not a silently
// missing setting.
func renderInit(f initFile) ([]byte, error) {
	lines := strings.Split(string(chutesproxy.DefaultConfig), "\n")
	// The embedded header describes the defaults; this file is the user's.
	start := slices.IndexFunc(lines, func(l string) bool { return !strings.HasPrefix(l, "#") })
	if start < 0 {
		return nil, errors.New("the embedded proxy.toml is all comments")
	}
	source := "from the models Chutes listed then"
	if f.Chain == nil {
		source = "with the built-in chain (Chutes could not be asked what it lists)"
	}
	header := strings.Split(fmt.Sprintf(`# chutes-proxy configuration, written by "chutes-proxy init" on %s
# %s.
#
# "chutes-proxy check-config" validates it and "chutes-proxy doctor" checks it
# against Chutes as it is now; the running proxy reloads it on save (or on
# SIGHUP). Every key is optional: a key you leave out keeps the value shown
# here. Durations use Go syntax ("500ms", "30s", "10m"). Environment
# overrides the file: CHUTES_API_KEY, CHUTES_PROXY_LISTEN,
# CHUTES_PROXY_UPSTREAM; flags override both.`, f.Written.Format("2006-01-02"), source), "\n")
	lines = append(header, lines[start:]...)

	set := []struct{ table, key, value, comment string }{
		{"[upstream]", "base_url", tomlString(f.BaseURL), ""},
		{"[upstream]", "account_url", tomlString(f.AccountURL), ""},
	}
	if f.Key != "" {
		set = append(set, struct{ table, key, value, comment string }{"[upstream]", "api_key", tomlString(f.Key), ""})
	}
	if f.Chain != nil {
		first := f.Chain[0]
		fallbacks := "[]"
		var items []string
		var notes []string
		for _, c := range f.Chain[1:] {
			items, notes = append(items, tomlString(c.ID)), append(notes, c.about())
		}
		if p := f.Provider; p != nil {
			items, notes = append(items, tomlString(p.Name+":"+p.Model)), append(notes, "the provider "+p.Name)
		}
		if len(items) > 0 {
			width := 0
			for _, it := range items {
				width = max(width, len(it)+1)
			}
			var b strings.Builder
			b.WriteString("[")
			for i, it := range items {
				fmt.Fprintf(&b, "\n    %-*s  # %s", width, it+",", notes[i])
			}
			b.WriteString("\n]")
			fallbacks = b.String()
		}
		aliases := make([]string, len(f.Aliases))
		for i, a := range f.Aliases {
			aliases[i] = tomlString(a)
		}
		set = append(set, []struct{ table, key, value, comment string }{
			{"[[models]]", "id", tomlString(first.ID), first.about()},
			{"[[models]]", "aliases", "[" + strings.Join(aliases, ", ") + "]", ""},
			{"[[models]]", "fallbacks", fallbacks, ""},
		}...)
	}
	for _, s := range set {
		if err := setValue(lines, s.table, s.key, s.value, s.comment); err != nil {
			return nil, err
		}
	}
	if f.Provider != nil {
		var err error
		if lines, err = insertProvider(lines, *f.Provider); err != nil {
			return nil, err
		}
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// setValue sets key's value in the first table headed table, keeping the
// line's comment (or adding comment when it has none) at the file's comment
// column.
func setValue(lines []string, table, key, value, comment string) error {
	in := false
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			if in {
				break // the table ended
			}
			in = t == table || strings.HasPrefix(t, table+" ") || strings.HasPrefix(t, table+"#")
			continue
		}
		k, _, ok := strings.Cut(l, "=")
		if !in || !ok || strings.TrimSpace(k) != key || strings.HasPrefix(t, "#") {
			continue
		}
		if c := commentStart(l); c >= 0 {
			comment = strings.TrimSpace(strings.TrimPrefix(l[c:], "#"))
		}
		lines[i] = key + " = " + value
		if comment != "" {
			last := lines[i][strings.LastIndexByte(lines[i], '\n')+1:]
			lines[i] += strings.Repeat(" ", max(2, initCommentColumn-len(last))) + "# " + comment
		}
		return nil
	}
	return fmt.Errorf("the embedded proxy.toml has no %s %s line to set", table, key)
}

// commentStart is the index of the '#' that starts l's comment, -1 if
// none: the first one outside a basic string.
func commentStart(l string) int {
	quoted := false
	for i := 0; i < len(l); i++ {
		switch {
		case quoted && l[i] == '\\':
			i++
		case l[i] == '"':
			quoted = !quoted
		case !quoted && l[i] == '#':
			return i
		}
	}
	return -1
}

// insertProvider puts p's [[providers]] table before the comment paragraph
// that introduces [[models]].
func insertProvider(lines []string, p initProvider) ([]string, error) {
	at := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "[[models]]") })
	if at < 0 {
		return nil, errors.New("the embedded proxy.toml has no [[models]] table")
	}
	for at > 0 && strings.HasPrefix(lines[at-1], "#") {
		at--
	}
	var b []string
	add := func(kv, comment string) {
		if comment != "" {
			kv += strings.Repeat(" ", max(2, initCommentColumn-len(kv))) + "# " + comment
		}
		b = append(b, kv)
	}
	b = append(b, "[[providers]]")
	add("name = "+tomlString(p.Name), p.Comment)
	add("base_url = "+tomlString(p.BaseURL), "")
	if p.APIKeyEnv != "" {
		add("api_key_env = "+tomlString(p.APIKeyEnv), "its key, read from the environment")
	}
	if len(p.Headers) > 0 {
		var hs []string
		for _, k := range slices.Sorted(maps.Keys(p.Headers)) {
			hs = append(hs, tomlString(k)+" = "+tomlString(p.Headers[k]))
		}
		add("headers = { "+strings.Join(hs, ", ")+" }", "")
	}
	if p.FirstByteTimeout != "" {
		add("first_byte_timeout = "+tomlString(p.FirstByteTimeout), "a local model loads on its first request")
	}
	b = append(b, "")
	return slices.Insert(lines, at, b...), nil
}

// tomlString quotes s as a TOML basic string; JSON's escapes are TOML's.
func tomlString(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// writeInitConfig checks data with config.Load and writes it to path with
// perm: in place of the file there when replace is set, else only if there
// is none (a file that appeared meanwhile is not overwritten either). A
// temporary file in the same directory makes either step atomic, so a
// running proxy that watches path never reads half a file.
func writeInitConfig(path string, data []byte, perm os.FileMode, replace bool, getenv func(string) string) (*config.Config, error) {
	// The user's config folder (config.UserFile) may not exist yet.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cannot make the folder for %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".init-*")
	if err != nil {
		return nil, fmt.Errorf("cannot write next to %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // gone already when renamed
	_, err = tmp.Write(data)
	err = errors.Join(err, tmp.Chmod(perm), tmp.Close())
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	cfg, err := config.Load(config.Options{File: tmp.Name(), Getenv: getenv})
	if err != nil {
		// init made a file the loader refuses: a bug, said in full.
		return nil, fmt.Errorf("the file init made is not valid (please report this): %w", err)
	}
	if replace {
		if err := os.Rename(tmp.Name(), path); err != nil {
			return nil, fmt.Errorf("replacing %s: %w", path, err)
		}
		return cfg, nil
	}
	switch err := os.Link(tmp.Name(), path); {
	case err == nil:
		return cfg, nil
	case errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("%s appeared while init ran; not overwritten", path)
	}
	// A file system without hard links: create it exclusively instead.
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = out.Write(data)
	if err = errors.Join(err, out.Close()); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return cfg, nil
}

// prompter asks questions on out and reads the answers from in. Each read
// runs in its own goroutine so that Ctrl-C (ctx) ends a question at once;
// that goroutine ends with the read, at the latest when the process does.
type prompter struct {
	in     *bufio.Reader
	out    io.Writer
	termFD int // see initEnv.termFD
}

// read waits for one line from in, without its line end.
func (p *prompter) read(ctx context.Context, read func() (string, error)) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := read()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		switch {
		case r.err == nil, errors.Is(r.err, io.EOF) && r.s != "":
			return strings.TrimRight(r.s, "\r\n"), nil // a last line without its line end counts
		case errors.Is(r.err, io.EOF):
			return "", errNoAnswer
		}
		return "", fmt.Errorf("reading the answer: %w", r.err)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// line asks q and returns the answer, trimmed.
func (p *prompter) line(ctx context.Context, q string) (string, error) {
	fmt.Fprint(p.out, q)
	s, err := p.read(ctx, func() (string, error) { return p.in.ReadString('\n') })
	if p.termFD < 0 {
		fmt.Fprintln(p.out) // a terminal echoes the answer's Enter; a pipe does not
	}
	return strings.TrimSpace(s), err
}

// ask asks q, showing def, which an empty answer takes.
func (p *prompter) ask(ctx context.Context, q, def string) (string, error) {
	if def != "" {
		q += " [" + def + "]"
	}
	s, err := p.line(ctx, q+": ")
	return cmp.Or(s, def), err
}

// yesNo asks a yes/no question; an empty answer takes def.
func (p *prompter) yesNo(ctx context.Context, q string, def bool) (bool, error) {
	hint := " [y/N] "
	if def {
		hint = " [Y/n] "
	}
	for {
		s, err := p.line(ctx, q+hint)
		if err != nil {
			return false, err
		}
		switch strings.ToLower(s) {
		case "":
			return def, nil
		case "y", "yes":
			return true, nil
		case "n", "no":
			return false, nil
		}
		fmt.Fprintln(p.out, "Answer y or n.")
	}
}

// secret asks q and reads the answer without echoing it when stdin is a
// terminal; otherwise it reads a plain line (a pipe echoes nothing).
func (p *prompter) secret(ctx context.Context, q string) (string, error) {
	if p.termFD < 0 {
		return p.line(ctx, q)
	}
	fmt.Fprint(p.out, q)
	state, err := term.GetState(p.termFD)
	if err != nil {
		return "", fmt.Errorf("reading the terminal: %w", err)
	}
	s, err := p.read(ctx, func() (string, error) {
		b, err := term.ReadPassword(p.termFD)
		return string(b), err
	})
	if ctx.Err() != nil {
		_ = term.Restore(p.termFD, state) // ReadPassword was cut short: echo back on
	}
	fmt.Fprintln(p.out) // the Enter that ReadPassword did not echo
	return strings.TrimSpace(s), err
}
