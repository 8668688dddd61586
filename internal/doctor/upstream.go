package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// The upstream's HTTP API: its model list, and one real completion.

// checkModels says whether the probe got the upstream's model list.
func (r *runner) checkModels() Result {
	p, base := r.path, r.target.base
	took := millis(p.LatencyMS)
	switch {
	case !r.secured:
		return warn(CheckModels, "not tried until the connection checks above pass")
	case p.OK() && p.Models == 0:
		return warn(CheckModels, "GET %s answered 200 in %s, but the list is empty: Chutes' side, or base_url points at another server", p.URL, took)
	case p.OK():
		return ok(CheckModels, "GET %s answered 200 in %s: %d models", p.URL, took, p.Models)
	case p.FailedStep == chutes.StepResponse:
		return fail(CheckModels, "%s", diagnose.WrongURL(base, p.Error).Message)
	case p.FailedStep == chutes.StepTimeout:
		return warn(CheckModels, "%s although the connection works: Chutes is slow or down (Chutes' side); try again in a minute", p.Error)
	case p.Status == http.StatusTooManyRequests || p.Status >= 500:
		return warn(CheckModels, "%s: that is Chutes' side, not yours; try again in a minute", p.Error)
	case p.Status != 0:
		return fail(CheckModels, "%s, which Chutes does not do for the model list: check base_url", p.Error)
	}
	return fail(CheckModels, "GET %s failed: %s", p.URL, p.Error)
}

// env is what diagnose needs to explain an answer to the configured key.
func (r *runner) env() diagnose.Env {
	key := r.cfg.Upstream.APIKey.Reveal()
	return diagnose.Env{
		BaseURL:       r.target.base,
		KeyPrefix:     config.Redact(key),
		KeyLooksWrong: !strings.HasPrefix(key, "cpk_"),
		Known:         func() []string { return r.known },
		Account:       func() string { return r.account },
	}
}

// checkLive sends one minimal completion to the first configured model,
// with the configured key: what no other check can prove (key, balance and
// model together). It costs one request of the daily quota.
func (r *runner) checkLive(ctx context.Context) Result {
	cfg := r.cfg
	key := cfg.Upstream.APIKey.Reveal()
	switch {
	case len(cfg.Models) == 0:
		return warn(CheckLive, "not sent: no [[models]] configured to send it to; add one to proxy.toml")
	case key == "":
		return warn(CheckLive, "not sent: no key configured (chutes-proxy forwards each app's key, which the doctor does not have)")
	case !r.secured:
		return warn(CheckLive, "not sent until the connection checks above pass")
	}
	model := cfg.Models[0].ID
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	payload, _ := json.Marshal(map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": "Reply with one word: ok"}},
		"max_tokens": 1,
		"stream":     false,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.target.base+"/chat/completions", bytes.NewReader(payload))
	if err != nil {
		return fail(CheckLive, "cannot build the request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		if failover.IsTimeout(err) {
			return warn(CheckLive, "%s did not answer within %s: the model is slow or overloaded (Chutes' side); your fallbacks take over when the proxy runs", model, liveTimeout)
		}
		return fail(CheckLive, "sending a completion to %s failed: %s", model, failover.Describe(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	took := human.Duration(time.Since(start))

	env := r.env()
	ue := &failover.UpstreamError{Status: resp.StatusCode, Body: body, ContentType: resp.Header.Get("Content-Type")}
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		var c struct {
			Choices []json.RawMessage `json:"choices"`
		}
		if json.Unmarshal(body, &c) != nil || len(c.Choices) == 0 {
			seen := "a 200 answer without choices"
			if failover.LooksLikeHTML(body) {
				seen = "an HTML page"
			}
			return fail(CheckLive, "%s", diagnose.WrongURL(r.target.base, seen).Message)
		}
		return ok(CheckLive, "%s answered a 1-token completion in %s: key, balance and model work end to end (it counted as 1 request against your daily quota)", model, took)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fail(CheckLive, "%s", diagnose.InvalidKey(ue.Reason(), env).Message)
	case code == http.StatusNotFound && slices.Contains(r.known, model):
		return warn(CheckLive, "%s is listed but answered 404 (%s): no instance of it is running right now (Chutes' side); the fallbacks take over when the proxy runs", model, ue.Reason())
	case code == http.StatusNotFound:
		return fail(CheckLive, "%s", diagnose.ModelNotFound(model, env).Message)
	case code == http.StatusTooManyRequests || code >= 500:
		return warn(CheckLive, "%s answered %d (%s): busy or down right now, which is Chutes' side, not yours; the fallbacks take over when the proxy runs", model, code, ue.Reason())
	}
	// 400, 402, 413, 422 and the like: the proxy's own diagnosis.
	e := diagnose.Explain(failover.Result{Requested: model}, ue, env)
	return fail(CheckLive, "%s answered %d: %s", model, resp.StatusCode, e.Message)
}
